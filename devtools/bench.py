"""`make bench`: committed tx/s of a fresh local 4-validator testnet, as a ratio to this machine's own
Ed25519 verification limit measured in the same run; latency at a fixed rate; RSS under a flood.

Steps: (1) the machine's limits (`bench_limits`: verifies/s on 1 and 2 threads, transfers/s executed on
one thread) and block-sync catch-up (`catchup_bench`: `catchup_tx_per_s`); (2) a fresh testnet (4
validators, no observer) in a temp dir on free ports; (3) the level
search: `smeledger load` at doubling offered rates, then bisecting, while /proc is sampled for each
node's CPU and RSS (`bench_level.run_level`); (4) latency at a fixed 1,000 tx/s; (5) a big-memo level
(1,000-byte memos); (6) a flood at 5x the best committed rate for 60 s (the mempool sheds with 503,
honest txs keep committing) with RSS; (7) with `BENCH_LONG=1` only, a long run until `BENCH_LONG_TXS`
(default 1,000,000) txs are committed, RSS sampled throughout, then the first level's rate again to
compare with the fresh chain; (8) teardown of every process; (9) a table and the results file.

The ceiling: every validator verifies every tx signature once, and all four run on this one machine,
so the most the machine can commit is `verify_2_threads / 4` tx/s (docs/bench.md). Each figure is
reported with its ratio to that ceiling. A progress line is printed when each level starts and ends.

`python -m devtools.bench --level RATE [--seconds S] [--poll P] [--repeat N]` runs one level alone on a
fresh testnet instead (RATE tx/s for S seconds, default 20, the generator polling every P s, default
0.01 as in the latency level; N times in a row on the same testnet) and prints each with the latency
broken into its stages (`stages`): what the before/after figures of a latency change are taken with.

Rule: bounded in time (`BENCH_SECONDS`, default 420; the long run has its own `BENCH_LONG_S` cap), and
every process it starts is stopped in a `finally`, including on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from client.errors import ClientError
from devtools import devnet
from devtools.bench_level import Load, attribute, drain, run_level, steady_rate
from devtools.bench_limits import execute_limit, verify_limit
from devtools.catchup_bench import catchup_rate
from devtools.catchup_bench import describe as describe_catchup

__all__ = ["attribute", "bench", "next_rate", "steady_rate"]

VALIDATORS = 4
ACCOUNTS = 40  # demo senders: more senders, more txs in flight under the per-sender mempool bound
RESERVED = [(7700, 7799), (8700, 8799), (37700, 38705)]
LATENCY_RATE = 1000  # the fixed offered rate of `latency_1000`
MEMO_BYTES = 1000  # the big-memo level (issue 9)
FLOOD_FACTOR, FLOOD_S = 5, 60.0
LONG_TXS = 1_000_000


# ---- ports ------------------------------------------------------------------------------------------

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


# ---- the run -----------------------------------------------------------------------------------------

def next_rate(good: int, bad: int) -> int:
    """Double the best unsaturated rate until a level saturates, then bisect between the best
    unsaturated and the lowest saturated rate down to a 10% step; 0 when done."""
    if not bad:
        return good * 2
    if bad - good <= max(100, bad // 10):
        return 0
    return max(50, (good + bad) // 2 // 50 * 50)


class Run:
    """One bench run over one testnet: levels in order, each drained first and printed when done."""

    def __init__(self, tn: Path, nodes: list[dict[str, Any]], ceiling: float, t_start: float,
                 budget: float) -> None:
        self.tn, self.nodes, self.ceiling = tn, nodes, ceiling
        self.pids = {n["name"]: int((tn / n["name"] / devnet.PID_FILE).read_text()) for n in nodes}
        self.urls = [n["admin_url"] for n in nodes]
        self.t_start, self.budget = t_start, budget
        self.count = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.t_start

    def level(self, phase: str, load: Load) -> dict[str, Any]:
        self.count += 1
        memo = f", {load.memo_bytes}-byte memos" if load.memo_bytes else ""
        print(f"  [{self.elapsed():5.0f} s] level {self.count} ({phase}): offering {load.rate} tx/s for "
              f"{load.duration:g} s{memo}", flush=True)
        drain(self.urls, timeout=20.0)
        r = run_level(self.tn, self.nodes, self.pids, load)
        r["phase"] = phase
        r["ratio_to_ceiling"] = round(r["committed_tps"] / self.ceiling, 3) \
            if r["committed_tps"] and self.ceiling else None  # no ceiling measured for a level alone
        r["saturated"] = not r["committed_tps"] or r["committed_tps"] < 0.9 * load.rate
        print(f"  [{self.elapsed():5.0f} s] level {self.count} ({phase}): committed {r['committed_tps']} tx/s "
              f"(ratio {r['ratio_to_ceiling']}), p50 {r['latency_p50_ms']} ms, p95 {r['latency_p95_ms']} ms, "
              f"p99 {r['latency_p99_ms']} ms, node CPU {r['node_cpu_total_cores']} cores, max RSS "
              f"{max(r['node_rss_mib'].values())} MiB, rejected {r['rejected_by_code'] or 0}, execute "
              f"{r['execute_ms_per_block']} ms/block of round {r['round_ms_avg']} ms", flush=True)
        return r

    def search(self, reserve: float) -> list[dict[str, Any]]:
        """Offered rates from 500 up, doubling then bisecting, while `reserve` s of budget remain."""
        levels: list[dict[str, Any]] = []
        good, bad, rate = 0, 0, 500
        while rate and self.elapsed() + 10 + 6 + 15 + reserve < self.budget:
            r = self.level("search", Load(rate))
            levels.append(r)
            if r["saturated"]:
                bad = min(bad, rate) if bad else rate
            else:
                good = max(good, rate)
            rate = next_rate(good, bad)
        return levels

    def long_run(self, best: float, first_rate: int, first_tps: float | None) -> dict[str, Any]:
        """Sustained load at 80% of the best rate in 60 s levels until LONG_TXS are committed (or the
        BENCH_LONG_S cap), then the first level's rate again: cost must not grow with the chain."""
        target = int(os.environ.get("BENCH_LONG_TXS", str(LONG_TXS)))
        cap = float(os.environ.get("BENCH_LONG_S", "3600"))
        rate = max(500, int(0.8 * best) // 50 * 50)
        t0, done, chunks = time.monotonic(), 0, []
        while done < target and time.monotonic() - t0 < cap:
            r = self.level(f"long {done:,}/{target:,} txs", Load(rate, duration=60.0))
            done += int(r["block_txs"])
            chunks.append({"committed_total": done, "committed_tps": r["committed_tps"],
                           "rss_mib": max(r["node_rss_mib"].values())})
        again = self.level("long: first rate again", Load(first_rate))
        return {"offered_tps": rate, "committed_total": done, "seconds": round(time.monotonic() - t0),
                "chunks": chunks, "rss_mib_max": max((c["rss_mib"] for c in chunks), default=None),
                "first_rate": first_rate, "first_rate_fresh_tps": first_tps,
                "first_rate_after_tps": again["committed_tps"],
                "after_vs_fresh": round(again["committed_tps"] / first_tps, 3)
                if again["committed_tps"] and first_tps else None, "after_level": again}


def stages(lv: dict[str, Any]) -> str:
    """A level's latency in stages: the generator's view (accepted answer, the proposer's block time, seen
    in a block) and the nodes' mean step times (docs/bench.md, "Latency in stages")."""
    st = lv.get("step_ms") or {}
    return (f"accepted after {lv.get('accept_p50_ms')} ms (journal sync {lv.get('journal_sync_ms')} ms), "
            f"in a proposed block after {lv.get('proposed_p50_ms')} ms (waited in the proposer's pool "
            f"{lv.get('proposed_tx_wait_ms')} ms, propose wait {st.get('propose_wait')} ms), agreement "
            f"{st.get('agreement')} ms (WAL append {st.get('wal_append')} ms), decided write "
            f"{st.get('decided_write')} ms, execute wait {st.get('execute_wait')} ms, execute "
            f"{lv.get('execute_ms_per_block')} ms; seen in a block after {lv.get('latency_p50_ms')} ms (p50)")


def one_level(rate: int, seconds: float, poll: float, repeat: int, out_path: Path) -> list[dict[str, Any]]:
    """A fresh testnet, then `repeat` levels at `rate` tx/s, each printed with its stages."""
    t_start = time.monotonic()
    levels: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="smeledger-bench-") as tmp:
        tn = Path(tmp) / "tn"
        try:
            nodes = devnet.up(tn, free_base_port(), validators=VALIDATORS, observers=0, accounts=ACCOUNTS,
                              quiet=True)
            devnet.wait_first_commit(tn, nodes, timeout=60.0)
            run = Run(tn, nodes, 0.0, t_start, float("inf"))
            for _ in range(repeat):
                lv = run.level("level", Load(rate, duration=seconds, poll=poll))
                print("    " + stages(lv), flush=True)
                levels.append(lv)
        finally:
            devnet.down(tn)
    out_path.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                                    "loadavg": os.getloadavg(), "levels": levels}, indent=2) + "\n")
    return levels


def _rss(levels: list[dict[str, Any]]) -> float | None:
    return max((max(lv["node_rss_mib"].values()) for lv in levels), default=None)


def bench(budget: float, out_path: Path, long: bool = False) -> dict[str, Any]:
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
    catchup = catchup_rate()  # block-sync catch-up of a node replaying certified blocks (devtools/catchup_bench.py)
    print(describe_catchup(catchup), flush=True)
    with tempfile.TemporaryDirectory(prefix="smeledger-bench-") as tmp:
        tn = Path(tmp) / "tn"
        base = free_base_port()
        try:
            nodes = devnet.up(tn, base, validators=VALIDATORS, observers=0, accounts=ACCOUNTS, quiet=True)
            run = Run(tn, nodes, ceiling, t_start, budget)
            reserve = (20 + 6) + (10 + 6) + (FLOOD_S + 10) + 4 * 25  # the fixed levels and their drains
            levels = run.search(reserve)
            best = max((lv["committed_tps"] or 0 for lv in levels), default=0)
            latency = run.level("latency", Load(LATENCY_RATE, duration=20.0, poll=0.01))
            memo = run.level("big memo", Load(max(250, int(0.5 * best) // 50 * 50), memo_bytes=MEMO_BYTES))
            flood = run.level("flood", Load(max(1000, int(FLOOD_FACTOR * best) // 50 * 50), duration=FLOOD_S,
                                            settle=10.0, max_inflight=5000))
            long_res = run.long_run(best, levels[0]["offered_tps"], levels[0]["committed_tps"]) \
                if long and levels else None
        finally:
            devnet.down(tn)
    normal = [*levels, latency, memo] + ([long_res["after_level"]] if long_res else [])
    rss_max = max(_rss(normal) or 0, (long_res or {}).get("rss_mib_max") or 0) or None
    result = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, **limits,
        "validators": VALIDATORS, "ceiling_tps": round(ceiling),
        "ceiling_rule": "verify_2_threads / validators: every validator verifies every tx once, all on this machine",
        "max_committed_tps": best, "max_ratio_to_ceiling": round(best / ceiling, 3),
        "max_ratio_to_cpu_model_ceiling": round(best / limits["cpu_model_ceiling_tps"], 3),
        "latency_1000": {"p50_ms": latency["latency_p50_ms"], "p95_ms": latency["latency_p95_ms"],
                         "p99_ms": latency["latency_p99_ms"], "committed_tps": latency["committed_tps"]},
        "rss_mib_max": rss_max,
        "rss_mib_flood_max": _rss([flood]),
        "flood": {"offered_tps": flood["offered_tps"], "committed_tps": flood["committed_tps"],
                  "committed": flood["committed"], "rejected_by_code": flood["rejected_by_code"],
                  "retried": flood["retried"], "rss_mib_series": flood["rss_mib_series"]},
        "big_memo": {"memo_bytes": MEMO_BYTES, "offered_tps": memo["offered_tps"],
                     "committed_tps": memo["committed_tps"], "ratio_to_ceiling": memo["ratio_to_ceiling"]},
        **catchup,
        "long_run": long_res,
        "levels": [*levels, latency, memo, flood], "seconds": round(time.monotonic() - t_start, 1)}
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(res: dict[str, Any]) -> str:
    head = (f"{'phase':>10} {'offered':>8} {'committed':>10} {'ratio':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
            f"{'blk txs':>8} {'node cpu':>9} {'max rss MiB':>11}")
    lines = [head]
    for lv in res["levels"]:
        lines.append(f"{lv['phase'][:10]:>10} {lv['offered_tps']:>8} {lv['committed_tps'] or 0:>10} "
                     f"{lv['ratio_to_ceiling'] or 0:>6} {lv['latency_p50_ms'] or 0:>8} {lv['latency_p95_ms'] or 0:>8} "
                     f"{lv['latency_p99_ms'] or 0:>8} {lv['avg_block_txs'] or 0:>8} {lv['node_cpu_total_cores']:>9} "
                     f"{max(lv['node_rss_mib'].values()):>11}")
    lat = res["latency_1000"]
    lines.append(f"max committed {res['max_committed_tps']} tx/s = {res['max_ratio_to_ceiling']} of the ceiling "
                 f"{res['ceiling_tps']} tx/s (verify {res['verify_2_threads']}/s on 2 threads / {res['validators']}); "
                 f"at {LATENCY_RATE} tx/s p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, p99 {lat['p99_ms']} ms; "
                 f"RSS max {res['rss_mib_max']} MiB, under the flood {res['rss_mib_flood_max']} MiB")
    if res.get("long_run"):
        lr = res["long_run"]
        lines.append(f"long run: {lr['committed_total']:,} txs in {lr['seconds']} s, RSS max {lr['rss_mib_max']} MiB; "
                     f"{lr['first_rate']} tx/s offered commits {lr['first_rate_after_tps']} tx/s after it against "
                     f"{lr['first_rate_fresh_tps']} on the fresh chain ({lr['after_vs_fresh']})")
    return "\n".join(lines)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m devtools.bench", description="make bench, or one level alone")
    p.add_argument("--level", type=int, metavar="RATE", help="run one level at RATE tx/s on a fresh testnet")
    p.add_argument("--seconds", type=float, default=20.0, help="duration of that level (default 20)")
    p.add_argument("--poll", type=float, default=0.01, help="the generator's pause after a block request "
                   "that did not wait, s (default 0.01)")
    p.add_argument("--repeat", type=int, default=1, help="run the level this many times in a row (default 1)")
    a = p.parse_args(argv)
    if a.level is not None and (a.level < 1 or not 0 < a.seconds <= 600 or not 1 <= a.repeat <= 20):
        p.error("--level must be >= 1, --seconds in (0, 600], --repeat in 1..20")
    return a


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    try:
        if a.level is not None:
            one_level(a.level, a.seconds, a.poll, a.repeat, Path(os.environ.get("BENCH_OUT", "bench-level.json")))
            return 0
        budget = float(os.environ.get("BENCH_SECONDS", "420"))
        out = Path(os.environ.get("BENCH_OUT", "bench-results.json"))
        res = bench(budget, out, long=os.environ.get("BENCH_LONG", "") == "1")
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
