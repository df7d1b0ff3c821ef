"""Consensus in real node processes on loopback: agreement, leader failure, restarts, sync and clocks.

Each test builds a fresh 4-validator + 1-observer testnet (f = 1) on free ports in a tmp dir, drives a
bounded transfer load through the HTTP API, injects one fault with real signals, and always stops every
process it started (the `net` fixture closes the testnet even when an assertion fails).
"""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.harness import Load, Net

pytestmark = pytest.mark.integration
VALIDATORS = ["banka", "bankb", "smea", "smeb"]
ALL = [*VALIDATORS, "regulator"]


def _set_consensus(net: Net, **params: int) -> None:
    for path in [net.dir / "genesis.json", *(net.home(n) / "genesis.json" for n in ALL)]:
        doc = json.loads(path.read_text())
        doc.setdefault("consensus", {}).update(params)
        path.write_text(json.dumps(doc, indent=2))


def test_all_validators_commit_the_same_block_hash_and_state_root_at_every_height(net: Net) -> None:
    net.start()
    with Load(net, ALL, rate=150, max_seconds=6) as load:
        net.wait_height(ALL, 5, timeout=20)
    assert load.accepted, "the load got nothing accepted"
    height, _root = net.common_root(ALL)
    net.assert_same_chain(ALL, height)
    assert net.committed("regulator", load.accepted) == set(load.accepted)
    for h in range(3, height + 1):  # block h carries the state root after h-2: equal headers prove equal roots
        roots = {(net.client(n).block(h).header or {})["state_root"] for n in ALL}
        assert len(roots) == 1


def test_killing_the_primary_under_load_commits_again_within_five_seconds_and_loses_no_committed_tx(
        net: Net) -> None:
    net.start()
    primary = net.primary()
    survivors = [n for n in ALL if n != primary]
    with Load(net, [n for n in survivors if n != "regulator"], rate=150, max_seconds=25) as load:
        net.wait_height(ALL, 3, timeout=20)
        before_kill = net.committed(survivors[0], load.snapshot())
        net.kill9(primary)
        h_kill = max(net.height(n) for n in survivors)
        recovery = net.wait_height(survivors, h_kill + 2, timeout=5.0)
        time.sleep(2)
    assert recovery <= 5.0
    height, _root = net.common_root(survivors)
    net.assert_same_chain(survivors, height)
    for name in survivors:
        assert before_kill <= net.committed(name, sorted(before_kill)), f"{name} lost committed txs"
    # every tx a surviving node accepted is committed in the end
    assert net.committed(survivors[0], load.accepted) == set(load.accepted)


def test_a_backup_killed_and_restarted_under_load_catches_up_and_its_roots_match(net: Net) -> None:
    net.start()
    backup = next(n for n in VALIDATORS if n != net.primary())
    others = [n for n in ALL if n != backup]
    with Load(net, [n for n in others if n != "regulator"], rate=150, max_seconds=30) as load:
        net.wait_height(ALL, 3, timeout=20)
        net.kill9(backup)
        h = max(net.height(n) for n in others)
        net.wait_height(others, h + 10, timeout=20)
        net.start(backup)
        net.wait_height([backup], max(net.height(n) for n in others), timeout=20)
    height, _root = net.common_root(ALL)
    net.assert_same_chain(ALL, height, start=max(1, height - 30))
    assert net.committed(backup, load.accepted) == set(load.accepted)


def test_stopping_f_plus_one_validators_halts_commits_and_starting_them_again_resumes(net: Net) -> None:
    net.start()
    down = ["smea", "smeb"]
    up = ["banka", "bankb"]
    with Load(net, up, rate=50, max_seconds=40) as load:
        net.wait_height(ALL, 2, timeout=20)
        for n in down:
            net.stop(n)
        time.sleep(1.0)
        stuck = max(net.height(n) for n in up)
        time.sleep(4.0)
        assert max(net.height(n) for n in up) <= stuck + 1, "committed without a quorum"
        net.start(*down)
        net.wait_height(ALL, stuck + 3, timeout=30)
    height, _root = net.common_root(ALL, timeout=30)
    net.assert_same_chain(ALL, height, start=max(1, height - 20))
    assert net.committed("banka", load.accepted) == set(load.accepted)


def test_a_validator_whose_clock_is_ten_seconds_off_still_takes_part(net: Net) -> None:
    net.start("bankb", "smea", "smeb", "regulator")
    net.start("banka", env={"SMELEDGER_CLOCK_SKEW_MS": "10000"})  # banka proposes in view 0
    with Load(net, ALL, rate=100, max_seconds=6):
        net.wait_height(ALL, 5, timeout=20)
    height, _root = net.common_root(ALL)
    proposers = {net.client("bankb").block(h).proposer for h in range(1, height + 1)}
    assert net.nodes["banka"]["public_key"] in proposers
    assert net.status("bankb")["view"] == 0, "the skewed primary was voted out"
