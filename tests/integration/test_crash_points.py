"""Crash points on real processes: a node that dies at any named failpoint (the exit action: status 137, no
cleanup, no flush, as under kill -9) in the consensus driver, the WAL, the commit path (the decided block
stored, then executed: pipelining) or a snapshot install comes back on a plain restart to the same chain
and state root as its peers, and nothing any node accepted is lost. The accepted-tx journal's crash points
are killed in tests/integration/test_durable_acceptance.py.

Each test builds a fresh 4-validator + 1-observer testnet on free ports (the `net` fixture stops every
process even when an assertion fails).
"""

from __future__ import annotations

import os
import time

import pytest

from devtools import devnet
from tests.integration.harness import Load, Net
from tests.integration.test_consensus_network import _set_consensus

pytestmark = pytest.mark.integration
VALIDATORS = ["banka", "bankb", "smea", "smeb"]
ALL = [*VALIDATORS, "regulator"]
# (failpoint, pass on which it fires): late enough that the node has done some work under load
RUNNING_POINTS = [("consensus.event", 300), ("wal.before_append", 12), ("wal.after_append", 12),
                  ("commit.before_decided", 6), ("commit.after_decided", 6),
                  ("commit.before_batch", 6), ("commit.after_batch", 6)]
INSTALL_POINTS = ["snapshot.before_install", "snapshot.after_install"]
DEATH_TIMEOUT_S = 60.0


def _die_at(net: Net, name: str, spec: str) -> int:
    """Start `name` with `spec` armed and wait until it dies there; returns its exit status."""
    saved = dict(os.environ)
    try:
        os.environ["SMELEDGER_FAILPOINTS"] = spec
        pid = devnet.start_node(net.home(name))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    status = net.wait_exit(pid, DEATH_TIMEOUT_S)
    if status is not None:
        return status
    net.kill9(name)
    raise AssertionError(f"{name} did not reach failpoint {spec} within {DEATH_TIMEOUT_S:.0f} s:\n"
                         f"{devnet.tail(net.home(name) / 'node.log')}")


def _settled(net: Net, accepted: list[str], ref: str) -> tuple[int, str]:
    """After the load: every accepted tx committed on `ref` (so the chain stops growing), then the height
    and state root all nodes share."""
    assert net.committed(ref, accepted, wait=30) == set(accepted), f"{ref} did not commit every accepted tx"
    return net.common_root(ALL, timeout=40)


def _rejoin(net: Net, name: str) -> None:
    """Plain restart; the node catches up with the others."""
    net.start(name)
    others = [n for n in ALL if n != name]
    net.wait_height([name], max(net.height(n) for n in others), timeout=40)


def test_a_validator_killed_at_each_crash_point_of_its_running_work_recovers_to_its_peers_state(
        net: Net) -> None:
    net.start()
    # the load goes to the observer, which is never killed: that a killed node's own acceptances survive
    # is the accepted-tx journal's promise (its own tests), not this test's
    with Load(net, ["regulator"], rate=60, max_seconds=240) as load:
        net.wait_height(ALL, 3, timeout=30)
        for i, (point, nth) in enumerate(RUNNING_POINTS):
            victim = net.primary() if i % 2 == 0 else VALIDATORS[i % len(VALIDATORS)]
            net.kill9(victim)
            status = _die_at(net, victim, f"{point}=exit@{nth}")
            assert status == 137, f"{victim} exited with {status}, not at {point}"
            log = (net.home(victim) / "node.log").read_text()
            assert '"failpoints_armed"' in log
            _rejoin(net, victim)
        load.stop()
    height, root = _settled(net, load.accepted, "regulator")
    net.assert_same_chain(ALL, height)
    for name in ALL:
        assert net.status(name)["state_root"] == root
        assert net.committed(name, load.accepted, wait=5) == set(load.accepted), f"{name} lost committed txs"


@pytest.mark.parametrize("point", INSTALL_POINTS)
def test_a_wiped_node_killed_while_installing_a_snapshot_recovers_to_its_peers_state(net: Net, point: str) -> None:
    _set_consensus(net, checkpoint_interval=10)
    net.start()
    victim = "smeb" if net.primary() != "smeb" else "smea"
    others = [n for n in ALL if n != victim]
    with Load(net, [n for n in others if n != "regulator"], rate=100, max_seconds=120) as load:
        net.wait_height(ALL, 5, timeout=30)
        net.stop(victim)
        net.wipe(victim)
        h = max(net.height(n) for n in others)
        net.wait_height(others, h + 25, timeout=40)  # stable checkpoints (and snapshots) beyond the victim
        status = _die_at(net, victim, f"{point}=exit")
        assert status == 137, f"{victim} exited with {status}, not at {point}"
        _rejoin(net, victim)
        time.sleep(2)  # it takes part in new blocks too
        load.stop()
    height, root = _settled(net, load.accepted, others[0])
    net.assert_same_chain(ALL, height, start=height)
    assert net.status(victim)["state_root"] == root
    ref = net.client(others[0])
    for h in range(max(1, height - 5), height + 1):
        assert net.client(victim).block(h).hash == ref.block(h).hash
