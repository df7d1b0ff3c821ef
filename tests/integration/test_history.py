"""Every node keeps the whole history (issue 10), in real node processes: a validator back from a 30 s
outage catches up by block sync, a wiped one by state sync and then backfill, and either serves every
block, tx, receipt, event and trace exactly as the others do.

Each test builds a fresh 4-validator + 1-observer testnet on free ports in a tmp dir with checkpoints every
10 blocks, so the old rule (state sync when more than two checkpoint intervals behind) would have
state-synced the restarted validator; every process is stopped by the `net` fixture.
"""

from __future__ import annotations

import re
import threading
import time

import pytest

from client.client import Client
from client.errors import ClientError
from protocol import api
from tests.integration.harness import Load, Net
from tests.integration.test_consensus_network import ALL, VALIDATORS, _set_consensus

pytestmark = pytest.mark.integration


def metric(client: Client, name: str) -> float:
    """One sample of the node's /metrics (0 when absent)."""
    m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", client.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def all_events(client: Client) -> list[api.Event]:
    """Every event the node serves on /events, in order (paged by height)."""
    out: list[api.Event] = []
    h = 0
    while True:
        page = client.events(from_height=h, limit=1000)
        evs = page.events
        if not page.more:
            return out + evs
        last = evs[-1].height
        if evs[0].height == last:
            raise AssertionError(f"more than 1000 events at height {last}: cannot page by height")
        out += [e for e in evs if e.height < last]
        h = last


def assert_serves_the_same_history(net: Net, name: str, ref: str, height: int, txs: list[str]) -> None:
    """`name` serves every block 1..height from every node's view (same hashes everywhere), and exactly
    the reference's answer for every tx, its trace, and every event."""
    net.assert_same_chain(ALL, height)
    node, other = net.client(name, 10.0), net.client(ref, 10.0)
    for t in txs:
        mine, theirs = node.tx(t), other.tx(t)
        assert mine.status == "committed" and mine == theirs, (t, mine, theirs)
        assert node.query("trace", t) == other.query("trace", t)
    assert all_events(node) == all_events(other)


class StatusWatch:
    """Polls a node's /status in the background and keeps what history_from and backfill said."""

    def __init__(self, net: Net, name: str) -> None:
        self.net, self.name = net, name
        self.seen: list[tuple[int, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatusWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            st = self.net.status(self.name)
            if st is not None:
                self.seen.append((int(st["history_from"]), bool(st["backfill"]["running"])))
            time.sleep(0.02)


def test_a_validator_killed_for_30_s_under_load_catches_up_by_block_sync_and_serves_every_block_and_tx(
        net: Net) -> None:
    _set_consensus(net, checkpoint_interval=10)
    net.start()
    victim = next(n for n in reversed(VALIDATORS) if n != net.primary())
    others = [n for n in ALL if n != victim]
    with Load(net, [n for n in others if n != "regulator"], rate=60, max_seconds=45) as load:
        net.wait_height(ALL, 3, timeout=20)
        net.kill9(victim)
        h_kill = max(net.height(n) for n in others)
        time.sleep(30)
        behind = max(net.height(n) for n in others) - h_kill
        assert behind > 2 * 10, "it fell further behind than two checkpoint intervals"
        net.start(victim)
        net.wait_height([victim], max(net.height(n) for n in others), timeout=60)
    height, _root = net.common_root(ALL, timeout=30)
    v = net.client(victim)
    assert metric(v, "smeledger_sync_snapshots_installed_total") == 0, "it did not state sync"
    assert metric(v, "smeledger_sync_blocks_applied_total") >= behind, "it replayed the blocks it missed"
    assert net.status(victim)["history_from"] == 0  # type: ignore[index]
    assert load.accepted
    assert_serves_the_same_history(net, victim, others[0], height, load.accepted)


def test_a_wiped_node_rejoins_by_state_sync_then_backfills_until_it_serves_every_block_and_tx(net: Net) -> None:
    _set_consensus(net, checkpoint_interval=10)
    net.start()
    victim = "smeb" if net.primary() != "smeb" else "smea"
    others = [n for n in ALL if n != victim]
    with Load(net, [n for n in others if n != "regulator"], rate=60, max_seconds=45) as load:
        net.wait_height(ALL, 60, timeout=60)
        net.stop(victim)
        net.wipe(victim)
        h = max(net.height(n) for n in others)
        net.wait_height(others, h + 15, timeout=30)
        with StatusWatch(net, victim) as watch:
            net.start(victim)
            net.wait_height([victim], max(net.height(n) for n in others), timeout=60)
            deadline = time.monotonic() + 60
            while not (watch.seen and watch.seen[-1] == (0, False)):
                assert time.monotonic() < deadline, f"backfill did not finish: {watch.seen[-3:]}"
                time.sleep(0.1)
    height, _root = net.common_root(ALL, timeout=30)
    v = net.client(victim)
    assert metric(v, "smeledger_sync_snapshots_installed_total") == 1, "it joined by state sync"
    backfilled = metric(v, "smeledger_history_blocks_backfilled_total")
    assert backfilled >= 60, "it fetched the history below its snapshot"
    assert any(hf > 1 and running for hf, running in watch.seen), f"/status showed the backfill: {watch.seen[:5]}"
    with pytest.raises(ClientError) as info:
        v.block(height + 1000)
    assert info.value.http_status == 404
    assert_serves_the_same_history(net, victim, others[0], height, load.accepted)
