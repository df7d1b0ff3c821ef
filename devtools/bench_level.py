"""One load level of `make bench` against a running testnet, and what it measured.

`run_level` runs `smeledger load` as a separate process at a fixed offered rate (optionally with memos)
while /proc is sampled every half second for each node's CPU and RSS; committed tx/s at steady state
comes from the block headers (time, tx_count), latency percentiles from the load generator, time
attribution from the nodes' own Prometheus metrics.

Rule: bounded: the load process gets duration + settle + a fixed grace and is killed after it; every
sample list grows by two entries a second of a bounded run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.client import Client
from client.errors import ClientError
from node.consensus_metrics import STEPS
from protocol.api import to_builtins

CLK_TCK = os.sysconf("SC_CLK_TCK")
WARM_S = 2.0
SAMPLE_S = 0.5
LOAD_GRACE_S = 120.0  # beyond duration + settle: wallet decryption, the last polls, an overloaded machine


@dataclass(frozen=True, slots=True)
class Load:
    """What one level offers: `rate` tx/s for `duration` s (then up to `settle` s for commits), transfers
    with `memo_bytes`-byte memos, the generator polling for new blocks every `poll` s and keeping at most
    `max_inflight` txs per sender admitted but not committed (above the mempool's per-sender bound, the
    pool's own limits answer: how a flood reaches the 503s)."""

    rate: int
    duration: float = 10.0
    settle: float = 6.0
    memo_bytes: int = 0
    poll: float = 0.05
    max_inflight: int = 400


def proc_sample(pid: int) -> tuple[float, int]:
    """(CPU seconds used so far, RSS in KiB) of a process, from /proc; (0, 0) when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(stat[11]) + int(stat[12])) / CLK_TCK
        rss = next((int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("VmRSS:")), 0)
    except (OSError, IndexError, ValueError):
        return 0.0, 0
    return cpu, rss


_STEP = 'smeledger_consensus_step_seconds_{}{{step="%s"}}'
_TX_WAIT = "smeledger_proposed_tx_wait_seconds_{}"
_JOURNAL = "smeledger_journal_sync_seconds_{}"
METRICS = ("smeledger_block_execute_seconds_sum", "smeledger_block_execute_seconds_count",
           "smeledger_consensus_round_seconds_sum", "smeledger_consensus_round_seconds_count",
           "smeledger_committed_txs_total", "smeledger_consensus_view_changes_total",
           *(f.format(part) for f in (_TX_WAIT, _JOURNAL, *(_STEP % s for s in STEPS)) for part in ("sum", "count")))


_NUMBER = re.compile(r"[-+]?[0-9]*\.?[0-9]+(e[-+]?[0-9]+)?", re.IGNORECASE)


def node_metrics(url: str) -> dict[str, float]:
    """The few Prometheus samples the bench attributes time with (missing ones read as 0)."""
    try:
        text = Client(url, timeout=5).metrics()
    except ClientError:
        return dict.fromkeys(METRICS, 0.0)
    out = dict.fromkeys(METRICS, 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in out and _NUMBER.fullmatch(value.strip()):
            out[name] = float(value)
    return out


def _delta(before: list[dict[str, float]], after: list[dict[str, float]], name: str) -> float:
    """The growth of one sample, summed over the nodes."""
    return sum(a.get(name, 0.0) - b.get(name, 0.0) for b, a in zip(before, after, strict=True))


def _mean_ms(before: list[dict[str, float]], after: list[dict[str, float]], histogram: str) -> float | None:
    """Mean of a histogram's observations during the level, over all nodes (`histogram` has `{}` for
    the sum/count suffix)."""
    n = _delta(before, after, histogram.format("count"))
    return round(1000 * _delta(before, after, histogram.format("sum")) / n, 1) if n else None


def attribute(before: list[dict[str, float]], after: list[dict[str, float]]) -> dict[str, Any]:
    """Mean over validators of execution time per block and per tx, and of the consensus round time; the
    mean of each consensus step (`step_ms`), of the time a tx waited in the proposer's pool and of the
    accepted-tx journal's group commit."""
    ex, blocks, rounds, rcount, txs, vc = (_delta(before, after, m) for m in METRICS[:6])
    return {"execute_ms_per_block": round(1000 * ex / blocks, 1) if blocks else None,
            "execute_us_per_tx": round(1e6 * ex / txs, 1) if txs else None,
            "round_ms_avg": round(1000 * rounds / rcount, 1) if rcount else None,
            "execute_share_of_round": round(ex / rounds, 3) if rounds else None,
            "view_changes": int(vc),
            "step_ms": {s: _mean_ms(before, after, _STEP % s) for s in STEPS},
            "proposed_tx_wait_ms": _mean_ms(before, after, _TX_WAIT),
            "journal_sync_ms": _mean_ms(before, after, _JOURNAL)}

def steady_rate(blocks: list[dict[str, Any]], warm_s: float = WARM_S) -> dict[str, Any]:
    """Committed tx/s from block headers: blocks with txs, the first `warm_s` seconds dropped; the rate
    counts the txs of the blocks after the first kept one over the time between them."""
    rows = sorted((b for b in blocks if b.get("tx_count", 0) > 0), key=lambda b: b["height"])
    if len(rows) < 2:
        return {"committed_tps": None, "blocks": len(rows), "avg_block_txs": None}
    t_first = rows[0]["time"]
    kept = [b for b in rows if b["time"] >= t_first + warm_s * 1000] or rows
    if len(kept) < 2:
        kept = rows
    span = (kept[-1]["time"] - kept[0]["time"]) / 1000
    txs = sum(b["tx_count"] for b in kept[1:])
    return {"committed_tps": round(txs / span, 1) if span > 0 else None, "blocks": len(rows),
            "avg_block_txs": round(sum(b["tx_count"] for b in rows) / len(rows), 1),
            "window_s": round(span, 2)}


def fetch_blocks(client: Client, lo: int, hi: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    before = hi + 1
    while before - 1 > lo:
        doc = client.blocks(limit=100, before=before)
        rows = [to_builtins(b) for b in doc.blocks if b.height > lo]
        if not rows:
            break
        out += rows
        before = min(b["height"] for b in rows)
    return out


def run_level(tn: Path, nodes: list[dict[str, Any]], pids: dict[str, int], load: Load) -> dict[str, Any]:
    urls = [n["admin_url"] for n in nodes if n["role"] == "validator"]
    client = Client(urls[0])
    h0 = client.status().height
    cmd = [sys.executable, "-m", "cli.main", "load", "--nodes", ",".join(urls), "--wallets", str(tn / "wallets"),
           "--rate", str(load.rate), "--duration", str(load.duration), "--settle", str(load.settle),
           "--memo-bytes", str(load.memo_bytes), "--poll", str(load.poll), "--max-inflight", str(load.max_inflight),
           "--no-confirm", "--progress", "none", "--json"]
    m0 = [node_metrics(u) for u in urls]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, dict[str, float]]] = []  # (time, CPU seconds per node)
    rss_max = dict.fromkeys(pids, 0)
    rss_series: list[tuple[float, int]] = []  # (seconds into the level, largest node RSS in KiB)
    try:
        while proc.poll() is None and time.monotonic() - t0 < load.duration + load.settle + LOAD_GRACE_S:
            now = {n: proc_sample(p) for n, p in pids.items()}
            samples.append((time.monotonic(), {n: v[0] for n, v in now.items()}))
            for n, v in now.items():
                rss_max[n] = max(rss_max[n], v[1])
            rss_series.append((round(time.monotonic() - t0, 1), max(v[1] for v in now.values())))
            time.sleep(SAMPLE_S)
        if proc.poll() is None:  # past its bound (an overloaded machine): the block headers still count
            proc.kill()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    t_end = time.monotonic()
    try:
        res = json.loads(out.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        if proc.returncode != -9:
            raise ClientError(f"load generator failed at {load.rate} tx/s: {err.strip()[-400:]}",
                              code="load_failed") from None
        res = {"submitted": None, "committed": 0, "rejected": None, "submit_rate": None,
               "latency_p50_ms": None, "latency_p95_ms": None, "timed_out": True}
    # node CPU over the load's run window only (not the load generator's wallet decryption before it)
    start = t_end - float(res.get("run_s") or (t_end - t0))
    t_a, cpu_a = next(((t, c) for t, c in samples if t >= start), samples[0] if samples else (t0, {}))
    cpu_b = {n: proc_sample(p)[0] for n, p in pids.items()}
    span = max(1e-6, t_end - t_a)
    cpu = {n: round((cpu_b[n] - cpu_a.get(n, cpu_b[n])) / span, 2) for n in pids}
    h1 = client.status().height
    blocks = fetch_blocks(client, h0, h1)
    return {"offered_tps": load.rate, "duration_s": load.duration, "memo_bytes": load.memo_bytes,
            **steady_rate(blocks), "block_txs": sum(b.get("tx_count", 0) for b in blocks), **attribute(m0, [node_metrics(u) for u in urls]),
            "submitted": res["submitted"], "committed": res["committed"], "rejected": res["rejected"],
            "rejected_by_code": res.get("rejected_by_code", {}), "retried": res.get("retried"),
            "submit_tps": res["submit_rate"], "latency_p50_ms": res["latency_p50_ms"],
            "latency_p95_ms": res["latency_p95_ms"], "latency_p99_ms": res.get("latency_p99_ms"),
            "accept_p50_ms": res.get("accept_p50_ms"), "proposed_p50_ms": res.get("proposed_p50_ms"),
            "node_cpu_cores": cpu, "node_cpu_total_cores": round(sum(cpu.values()), 2),
            "loadgen_cpu_cores": res.get("cpu_cores_during_run"),
            "node_rss_mib": {n: round(v / 1024, 1) for n, v in rss_max.items()},
            "rss_mib_series": [(t, round(kib / 1024, 1)) for t, kib in rss_series[:: max(1, len(rss_series) // 60)]],
            "wall_s": round(t_end - t0, 1), "load_timed_out": bool(res.get("timed_out"))}


def drain(urls: list[str], timeout: float) -> None:
    """Wait (bounded) until every node's mempool is empty, so a level starts from committed nonces."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(Client(u, timeout=5).status().mempool_size == 0 for u in urls):
            return
        time.sleep(0.5)
