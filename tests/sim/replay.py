"""Replay one simulator run: `python -m tests.sim.replay --seed S --scenario NAME [--n N]`.

Prints the result, its trace hash and, with --verbose, the scenario's faults and every node's final state.
Exit status is non-zero when the run fails.
"""

from __future__ import annotations

import argparse
import sys

from tests.sim.scenarios import SCENARIOS, build, run_seed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--scenario", choices=SCENARIOS, required=True)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.verbose:
        sim, fault_ms = build(args.seed, args.scenario, args.n)
        print(f"fault phase: {fault_ms} ms; faults: {sim.faults}")
        print("nodes:", [(nd.id, nd.index, nd.behaviour) for nd in sim.nodes])
    res = run_seed(args.seed, args.scenario, args.n)
    print(res.describe())
    print(f"ok={res.ok} heights={res.heights} recovery_ms={res.recovery_ms} stats={res.stats}")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
