"""The simulator's proof obligations, run by `make test`: safety, liveness and the memory bound over many
seeds, n = 4 and 7 (and a few at 10), every scenario; byte-identical replays; a checker that bites."""

from __future__ import annotations

import multiprocessing

from protocol.block import Block
from tests.sim.scenarios import SCENARIOS, Result, check, run_seed
from tests.sim.soak import plan

SEEDS = 33 * len(SCENARIOS)  # 33 runs per scenario, n = 4 and 7 alternating


def _run(job: tuple[int, str, int]) -> Result:
    return run_seed(*job)


def _run_all(jobs: list[tuple[int, str, int]]) -> list[Result]:
    with multiprocessing.Pool(2) as pool:
        return pool.map(_run, jobs, chunksize=4)


def test_hundreds_of_seeds_across_all_scenarios_keep_safety_liveness_and_the_memory_bound() -> None:
    jobs = [plan(s) for s in range(SEEDS)]
    assert {n for _, _, n in jobs} == {4, 7} and {sc for _, sc, _ in jobs} == set(SCENARIOS)
    results = _run_all(jobs)
    failures = [r for r in results if not r.ok]
    assert not failures, "\n".join(r.describe() for r in failures)
    # the scenarios really did what they claim
    by: dict[str, dict[str, int]] = {}
    for r in results:
        agg = by.setdefault(r.scenario, {})
        for k, v in r.stats.items():
            agg[k] = agg.get(k, 0) + v
        agg["committed_heights"] = agg.get("committed_heights", 0) + max(r.heights)
    assert by["equivocate"]["evidence"] > 0 and by["twins"]["evidence"] > 0
    assert by["badsig"]["invalid_signature"] > 0
    assert by["flood"]["dropped_window"] > 0 and by["flood"]["dropped_buffer_full"] > 0
    assert by["silent"]["view_changes"] > 0 and by["partition"]["view_changes"] > 0
    assert by["slowlink"]["suspects"] > 0, "the slow validator's view timer did run out"
    assert all(agg["stable_checkpoint"] > 0 for agg in by.values())
    assert all(agg["committed_heights"] > 0 for agg in by.values())


def test_ten_validators_commit_under_loss_equivocation_and_crashes() -> None:
    results = _run_all([(s, sc, 10) for s in range(3) for sc in ("lossy", "equivocate", "crash", "mixed")])
    failures = [r for r in results if not r.ok]
    assert not failures, "\n".join(r.describe() for r in failures)


def test_the_same_seed_replays_byte_for_byte_and_another_seed_does_not() -> None:
    a = run_seed(5, "mixed", 4)
    b = run_seed(5, "mixed", 4)
    c = run_seed(6, "mixed", 4)
    assert a.trace == b.trace and a.heights == b.heights
    assert a.trace != c.trace
    crash_a, crash_b = run_seed(3, "crash", 7), run_seed(3, "crash", 7)
    assert crash_a.trace == crash_b.trace


def test_the_safety_checker_reports_two_blocks_at_one_height_and_a_broken_certificate() -> None:
    from tests.sim.net import Faults, Sim

    sim = Sim(1, 4, Faults())
    sim.start()
    sim.submit(5, "tx")
    sim.run_until(2_000)
    res = Result(1, "normal", 4)
    check(sim, res)
    assert res.ok and min(res.heights) >= 1
    node = sim.nodes[2]
    block, cert = node.blocks[1]
    other = Block.build(chain=block.header.chain, height=1, parent=block.header.parent,
                        proposer=block.header.proposer, view=0, time=block.header.time + 1,
                        state_root=block.header.state_root, results_root=block.header.results_root,
                        txs=(b"forged",))
    node.blocks[1] = (other, cert)
    res = Result(1, "normal", 4)
    check(sim, res)
    assert any("different blocks" in s for s in res.safety)
    assert any("invalid commit certificate" in s for s in res.safety)
    assert "--seed 1 --scenario normal" in res.describe()


def test_agreement_overlaps_execution_and_primary_crashes_mid_pipeline_keep_safety_and_liveness() -> None:
    k = len(SCENARIOS)
    jobs = [plan(seed) for seed in range(SCENARIOS.index("pipeline"), 16 * k, k)]  # the soak's "pipeline" seeds, n = 4 and 7
    assert {scenario for _, scenario, _ in jobs} == {"pipeline"}
    results = _run_all(jobs)
    for res in results:
        assert res.ok, res.describe()
    assert sum(r.stats.get("overlapped", 0) for r in results) > 0, "no vote while the block before it executed"
    assert sum(r.stats.get("view_changes", 0) for r in results) > 0, "no view change with heights in flight"
