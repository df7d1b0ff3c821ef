"""`make bench`: committed tx/s of a fresh local 4-validator testnet, as a ratio to this machine's own
Ed25519 verification limit measured in the same run.

Steps: (1) verifies/s of `protocol.crypto.verify` (what the mempool calls) on 1 and on 2 threads;
(2) a fresh testnet (4 validators, no observer) in a temp dir on free ports; (3) `smeledger load` at
doubling offered rates for bounded durations, while /proc is sampled for each node's CPU and RSS;
committed tx/s at steady state comes from the block headers (time, tx_count), latency from the load
generator; (4) teardown of every process; (5) a table and `bench-results.json`.

The ceiling: every validator verifies every tx signature once, and all four run on this one machine,
so the most the machine can commit is `verify_2_threads / 4` tx/s (docs/bench.md). Each figure is
reported with its ratio to that ceiling.

Rule: bounded in time (`BENCH_SECONDS`, default 150), and every process it starts is stopped in a
`finally`, including on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from client.client import Client
from client.errors import ClientError
from devtools import devnet
from devtools.progress import Reporter
from protocol.api import to_builtins
from protocol.crypto import DOMAIN_TX, PrivateKey, verify

VALIDATORS = 4
ACCOUNTS = 40  # demo senders: more senders, more txs in flight under the per-sender mempool bound
RESERVED = [(7700, 7799), (8700, 8799), (37700, 38705)]
CLK_TCK = os.sysconf("SC_CLK_TCK")
WARM_S = 2.0


# ---- (1) the verification limit -------------------------------------------------------------------

def _sample_sigs(n: int = 2000) -> list[tuple[bytes, bytes, bytes]]:
    key = PrivateKey(bytes(range(32)))
    out = []
    for i in range(n):
        msg = b"\x87" + i.to_bytes(4, "big") * 30  # ~120-byte body, like a transfer
        out.append((key.public_key, msg, key.sign(DOMAIN_TX, msg)))
    return out


def _verify_for(items: list[tuple[bytes, bytes, bytes]], seconds: float) -> int:
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for pk, m, s in items[:200]:
            if not verify(pk, DOMAIN_TX, m, s):
                raise RuntimeError("benchmark signature did not verify")
        done += 200
    return done


def verify_limit(seconds: float = 2.0) -> dict[str, Any]:
    items = _sample_sigs(200)
    t0 = time.perf_counter()
    one = _verify_for(items, seconds) / (time.perf_counter() - t0)
    with ThreadPoolExecutor(2) as ex:
        t0, c0 = time.perf_counter(), time.process_time()
        futs = [ex.submit(_verify_for, items, seconds) for _ in range(2)]
        done = sum(f.result() for f in futs)
        wall = time.perf_counter() - t0
        cores = (time.process_time() - c0) / wall
    # cores < 2 means other processes held the CPUs during the measurement: the machine was shared
    return {"verify_1_thread": round(one), "verify_2_threads": round(done / wall),
            "verify_2_threads_cpu_cores": round(cores, 2), "loadavg_at_start": _loadavg()}


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def execute_limit(block_txs: int = 2000, blocks: int = 3) -> dict[str, float]:
    """Transfers/s through what a node does per committed block, on one thread, with no consensus or
    networking: `apply_block` on an overlay, the Merkle `stage`, and the synced LevelDB commit."""
    from protocol.block import GENESIS_PARENT, BlockHeader
    from protocol.ledger.engine import apply_block
    from protocol.ledger.harness import CHAIN, T0, Harness
    from protocol.ledger.keys import INDEX_PREFIXES
    from protocol.state import Overlay
    from storage.db import Database
    from storage.state import StateStore

    h = Harness.standard()
    names = ["banka", "bankb", "smea", "smeb", "supplier", "inv"]
    nonce = dict.fromkeys(names, 0)
    t_apply = t_stage = t_commit = 0.0
    keys = 0
    with tempfile.TemporaryDirectory(prefix="smeledger-exec-") as tmp:
        db = Database.open(Path(tmp) / "db")
        try:
            st = StateStore(db, index_prefixes=INDEX_PREFIXES)  # as the node stores them
            st.commit(st.stage(dict(h.state.items())))
            for height in range(1, blocks + 1):
                txs = []
                for i in range(block_txs):
                    a, b = names[i % 6], names[(i + height) % 6]
                    b = b if b != a else names[(i + 1) % 6]
                    txs.append(h.tx(a, "transfer", nonce=nonce[a], to=h.id(b), asset="CNY.BANKA", amount=1))
                    nonce[a] += 1
                hdr = BlockHeader(chain=CHAIN, height=height, parent=GENESIS_PARENT, proposer=b"\0" * 32, view=0,
                                  time=T0 + height * 1000, tx_root=b"\0" * 32, state_root=b"\0" * 32)
                t0 = time.perf_counter()
                reader = st.reader(snapshot=False)
                overlay = Overlay(reader)
                result = apply_block(overlay, hdr, txs)
                changes = overlay.changes()
                t1 = time.perf_counter()
                staged = st.stage(changes)
                t2 = time.perf_counter()
                st.commit(staged)
                t3 = time.perf_counter()
                reader.close()
                if any(r.status != "ok" for r in result.receipts):
                    raise ClientError("execution benchmark: a transfer failed", code="bench_bug")
                t_apply, t_stage, t_commit = t_apply + t1 - t0, t_stage + t2 - t1, t_commit + t3 - t2
                keys += len(changes)
        finally:
            db.close()
    n = block_txs * blocks
    total = t_apply + t_stage + t_commit
    return {"execute_1_thread": round(n / total), "apply_us_per_tx": round(1e6 * t_apply / n, 1),
            "stage_us_per_tx": round(1e6 * t_stage / n, 1), "commit_us_per_tx": round(1e6 * t_commit / n, 1),
            "state_keys_per_tx": round(keys / n, 2)}


# ---- (2) ports and processes ------------------------------------------------------------------------

def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(start: int = 24000, nodes: int = VALIDATORS + 1) -> int:
    """A base port P with P+1..P+n and P+1001..P+1000+n free, outside the reserved ranges and below the
    kernel's ephemeral range (32768+), where outgoing connections could take them."""
    for base in range(start, 31500, 37):
        ports = [base + i for i in range(1, nodes + 1)] + [base + 1000 + i for i in range(1, nodes + 1)]
        if any(lo <= p <= hi for p in ports for lo, hi in RESERVED):
            continue
        if all(_bindable(p) for p in ports):
            return base
    raise ClientError("no free port range for the benchmark testnet", code="no_ports")


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


# ---- (3) one load level ---------------------------------------------------------------------------

METRICS = ("smeledger_block_execute_seconds_sum", "smeledger_block_execute_seconds_count",
           "smeledger_consensus_round_seconds_sum", "smeledger_consensus_round_seconds_count",
           "smeledger_committed_txs_total", "smeledger_consensus_view_changes_total")


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


def attribute(before: list[dict[str, float]], after: list[dict[str, float]]) -> dict[str, Any]:
    """Mean over validators of execution time per block and per tx, and of the consensus round time."""
    ex = rounds = blocks = txs = vc = 0.0
    for b, a in zip(before, after, strict=True):
        ex += a[METRICS[0]] - b[METRICS[0]]
        blocks += a[METRICS[1]] - b[METRICS[1]]
        rounds += a[METRICS[2]] - b[METRICS[2]]
        txs += a[METRICS[4]] - b[METRICS[4]]
        vc += a[METRICS[5]] - b[METRICS[5]]
    rcount = sum(a[METRICS[3]] - b[METRICS[3]] for b, a in zip(before, after, strict=True))
    return {"execute_ms_per_block": round(1000 * ex / blocks, 1) if blocks else None,
            "execute_us_per_tx": round(1e6 * ex / txs, 1) if txs else None,
            "round_ms_avg": round(1000 * rounds / rcount, 1) if rcount else None,
            "execute_share_of_round": round(ex / rounds, 3) if rounds else None,
            "view_changes": int(vc)}

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


def run_level(tn: Path, nodes: list[dict[str, Any]], pids: dict[str, int], rate: int, duration: float,
              settle: float, progress: Reporter | None = None, t_start: float = 0.0) -> dict[str, Any]:
    urls = [n["admin_url"] for n in nodes if n["role"] == "validator"]
    client = Client(urls[0])
    h0 = client.status().height
    cmd = [sys.executable, "-m", "cli.main", "load", "--nodes", ",".join(urls), "--wallets", str(tn / "wallets"),
           "--rate", str(rate), "--duration", str(duration), "--settle", str(settle), "--no-confirm", "--progress", "none", "--json"]
    m0 = [node_metrics(u) for u in urls]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, dict[str, float]]] = []  # (time, CPU seconds per node)
    rss_max = dict.fromkeys(pids, 0)
    try:
        while proc.poll() is None and time.monotonic() - t0 < duration + settle + 60:
            now = {n: proc_sample(p) for n, p in pids.items()}
            samples.append((time.monotonic(), {n: v[0] for n, v in now.items()}))
            for n, v in now.items():
                rss_max[n] = max(rss_max[n], v[1])
            if progress is not None:
                with contextlib.suppress(ClientError):
                    progress.update(time.monotonic() - t_start, offered_tps=rate, level_s=round(time.monotonic() - t0),
                                    blocks=Client(urls[0], timeout=2).status().height - h0)
            time.sleep(0.5)
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    t_end = time.monotonic()
    try:
        load = json.loads(out.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise ClientError(f"load generator failed at {rate} tx/s: {err.strip()[-400:]}", code="load_failed") from None
    # node CPU over the load's run window only (not the load generator's wallet decryption before it)
    start = t_end - float(load.get("run_s") or (t_end - t0))
    t_a, cpu_a = next(((t, c) for t, c in samples if t >= start), samples[0] if samples else (t0, {}))
    cpu_b = {n: proc_sample(p)[0] for n, p in pids.items()}
    span = max(1e-6, t_end - t_a)
    cpu = {n: round((cpu_b[n] - cpu_a.get(n, cpu_b[n])) / span, 2) for n in pids}
    h1 = client.status().height
    res = {"offered_tps": rate, "duration_s": duration, **steady_rate(fetch_blocks(client, h0, h1)),
           **attribute(m0, [node_metrics(u) for u in urls]),
           "submitted": load["submitted"], "committed": load["committed"], "rejected": load["rejected"],
           "submit_tps": load["submit_rate"], "latency_p50_ms": load["latency_p50_ms"],
           "latency_p95_ms": load["latency_p95_ms"], "node_cpu_cores": cpu,
           "node_cpu_total_cores": round(sum(cpu.values()), 2), "loadgen_cpu_cores": load.get("cpu_cores_during_run"),
           "node_rss_mib": {n: round(v / 1024, 1) for n, v in rss_max.items()}, "wall_s": round(t_end - t0, 1)}
    return res


# ---- (4) the whole run ---------------------------------------------------------------------------

def next_rate(good: int, bad: int) -> int:
    """Double the best unsaturated rate until a level saturates, then bisect between the best
    unsaturated and the lowest saturated rate down to a 10% step; 0 when done."""
    if not bad:
        return good * 2
    if bad - good <= max(100, bad // 10):
        return 0
    return max(50, (good + bad) // 2 // 50 * 50)


def drain(urls: list[str], timeout: float) -> None:
    """Wait (bounded) until every node's mempool is empty, so a level starts from committed nonces."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(Client(u, timeout=5).status().mempool_size == 0 for u in urls):
            return
        time.sleep(0.5)

def bench(budget: float, out_path: Path) -> dict[str, Any]:
    t_start = time.monotonic()
    limits: dict[str, Any] = verify_limit()
    ceiling = limits["verify_2_threads"] / VALIDATORS
    print(f"verify limit: {limits['verify_1_thread']:,} /s on 1 thread, {limits['verify_2_threads']:,} /s on "
          f"2 threads (which got {limits['verify_2_threads_cpu_cores']} cores; load average "
          f"{limits['loadavg_at_start']}) -> ceiling for {VALIDATORS} validators on this machine: {ceiling:,.0f} tx/s", flush=True)
    limits.update(execute_limit())
    cores = os.cpu_count() or 1
    per_tx_s = 1 / limits["verify_1_thread"] + 1 / limits["execute_1_thread"]
    limits["cpu_model_ceiling_tps"] = round(cores / (VALIDATORS * per_tx_s))
    print(f"execute limit: {limits['execute_1_thread']:,} transfers/s on 1 thread (apply "
          f"{limits['apply_us_per_tx']} us + Merkle stage {limits['stage_us_per_tx']} us + commit "
          f"{limits['commit_us_per_tx']} us per tx) -> verify+execute ceiling for {VALIDATORS} validators on "
          f"{cores} cores: {limits['cpu_model_ceiling_tps']:,} tx/s", flush=True)
    levels: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="smeledger-bench-") as tmp, \
            Reporter("bench", round(budget), every=5.0) as progress:
        tn = Path(tmp) / "tn"
        base = free_base_port()
        try:
            nodes = devnet.up(tn, base, validators=VALIDATORS, observers=0, accounts=ACCOUNTS, quiet=True)
            pids = {n["name"]: int((tn / n["name"] / devnet.PID_FILE).read_text()) for n in nodes}
            duration, settle = 10.0, 6.0
            good, bad, rate = 0, 0, 500
            while rate and time.monotonic() - t_start + duration + settle + 15 < budget:
                drain([n["admin_url"] for n in nodes], timeout=20.0)
                r = run_level(tn, nodes, pids, rate, duration, settle, progress, t_start)
                r["ratio_to_ceiling"] = round(r["committed_tps"] / ceiling, 3) if r["committed_tps"] else None
                r["ratio_to_cpu_model_ceiling"] = (round(r["committed_tps"] / limits["cpu_model_ceiling_tps"], 3)
                                                   if r["committed_tps"] else None)
                r["saturated"] = not r["committed_tps"] or r["committed_tps"] < 0.9 * rate
                levels.append(r)
                print(f"  offered {rate:>6} tx/s: committed {r['committed_tps']} tx/s "
                      f"(ratio {r['ratio_to_ceiling']}), p50 {r['latency_p50_ms']} ms, p95 {r['latency_p95_ms']} ms,"
                      f" node CPU {r['node_cpu_total_cores']} cores, loadgen {r['loadgen_cpu_cores']}, execute "
                      f"{r['execute_ms_per_block']} ms/block of round {r['round_ms_avg']} ms", flush=True)
                if r["saturated"]:
                    bad = min(bad, rate) if bad else rate
                else:
                    good = max(good, rate)
                rate = next_rate(good, bad)
        finally:
            devnet.down(tn)
    best = max((lv["committed_tps"] or 0 for lv in levels), default=0)
    result = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, **limits,
              "validators": VALIDATORS, "ceiling_tps": round(ceiling), "ceiling_rule":
              "verify_2_threads / validators: every validator verifies every tx once, all on this machine",
              "max_committed_tps": best, "max_ratio_to_ceiling": round(best / ceiling, 3),
              "max_ratio_to_cpu_model_ceiling": round(best / limits["cpu_model_ceiling_tps"], 3),
              "levels": levels, "seconds": round(time.monotonic() - t_start, 1)}
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(res: dict[str, Any]) -> str:
    head = (f"{'offered':>8} {'committed':>10} {'ratio':>6} {'p50 ms':>8} {'p95 ms':>8} {'blk txs':>8} "
            f"{'node cpu':>9} {'load cpu':>9} {'max rss MiB':>11}")
    lines = [head]
    for lv in res["levels"]:
        lines.append(f"{lv['offered_tps']:>8} {lv['committed_tps'] or 0:>10} {lv['ratio_to_ceiling'] or 0:>6} "
                     f"{lv['latency_p50_ms'] or 0:>8} {lv['latency_p95_ms'] or 0:>8} {lv['avg_block_txs'] or 0:>8} "
                     f"{lv['node_cpu_total_cores']:>9} {lv['loadgen_cpu_cores']:>9} "
                     f"{max(lv['node_rss_mib'].values()):>11}")
    lines.append(f"max committed {res['max_committed_tps']} tx/s = {res['max_ratio_to_ceiling']} of the ceiling "
                 f"{res['ceiling_tps']} tx/s (verify {res['verify_2_threads']}/s on 2 threads / {res['validators']})")
    return "\n".join(lines)


def main() -> int:
    try:
        budget = float(os.environ.get("BENCH_SECONDS", "150"))
        out = Path(os.environ.get("BENCH_OUT", "bench-results.json"))
        res = bench(budget, out)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except ValueError as exc:
        print(f"error: BENCH_SECONDS must be a number ({exc})", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(table(res))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
