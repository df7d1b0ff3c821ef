"""`make soak`: run many seeds across n in {4, 7} and every scenario on all cores; print the totals.

Seed k runs scenario SCENARIOS[k % len] with n = 4 for even k // len and 7 for odd. A failing seed prints
its description and replay command. Exit status is non-zero when any seed failed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time

from tests.sim.scenarios import SCENARIOS, Result, run_seed


def plan(seed: int) -> tuple[int, str, int]:
    scenario = SCENARIOS[seed % len(SCENARIOS)]
    n = 4 if (seed // len(SCENARIOS)) % 2 == 0 else 7
    return seed, scenario, n


def _run(job: tuple[int, str, int]) -> Result:
    return run_seed(*job)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=2000)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=multiprocessing.cpu_count())
    args = ap.parse_args(argv)
    jobs = [plan(s) for s in range(args.first, args.first + args.seeds)]
    started = time.monotonic()
    safety = liveness = memory = 0
    failed: list[Result] = []
    slowest = 0
    with multiprocessing.Pool(max(1, args.jobs)) as pool:
        for res in pool.imap_unordered(_run, jobs, chunksize=4):
            safety += bool(res.safety)
            liveness += res.liveness is not None
            memory += bool(res.memory)
            slowest = max(slowest, res.recovery_ms)
            if not res.ok:
                failed.append(res)
                print(res.describe(), flush=True)
    wall = time.monotonic() - started
    print(f"seeds: {len(jobs)}  safety violations: {safety}  liveness failures: {liveness}  "
          f"memory bound violations: {memory}  slowest recovery: {slowest} ms (virtual)  wall: {wall:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
