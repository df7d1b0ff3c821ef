"""SIGTERM stops a node within its budget (node/service.py, SHUTDOWN_BUDGET_S), on real processes: every
node of a testnet with a validator sending garbage, under load and with long-poll followers waiting, stops
cleanly (exit 0, no `node_stop_timeout`); a node whose write never ends (a `hang` failpoint: a disk that
stopped answering) still ends within the budget, says what it abandoned, and rejoins after a restart.

Each test builds a fresh 4-validator + 1-observer testnet on free ports (the `net` fixture stops every
process it started, also on failure).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from client.errors import ClientError
from node.service import STOP_ABANDONED_EXIT
from protocol.api import MAX_BLOCK_WAIT_MS
from tests.integration.harness import Load, Net
from tests.integration.test_durable_acceptance import _batch

pytestmark = pytest.mark.integration
VALIDATORS = ["banka", "bankb", "smea", "smeb"]
ALL = [*VALIDATORS, "regulator"]
GARBAGE = ("--byzantine", "garbage")
FOLLOWERS = 8  # long polls of GET /blocks/{height}?wait_ms= waiting on the node being stopped


def _events(net: Net, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (net.home(name) / "node.log").read_text().splitlines()
            if line.startswith("{")]


@contextmanager
def _followers(net: Net, name: str) -> Iterator[None]:
    """Followers long-polling a block far ahead on `name` (each answer waits up to the 5 s maximum)."""
    stop = threading.Event()
    url = f"{net.nodes[name]['admin_url']}/blocks/{max(net.height(name), 0) + 10_000}?wait_ms={MAX_BLOCK_WAIT_MS}"

    def follow() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(url, timeout=MAX_BLOCK_WAIT_MS / 1000 + 3):
                    pass
            except OSError:  # 404 after the wait (no such block yet), or the node is stopping
                time.sleep(0.05)

    threads = [threading.Thread(target=follow, daemon=True) for _ in range(FOLLOWERS)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)  # they are waiting inside the node's handlers
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)


def test_sigterm_stops_every_node_of_a_testnet_with_a_garbage_validator_cleanly_within_its_budget(net: Net) -> None:
    net.start()
    byzantine = next(n for n in VALIDATORS if n != net.primary())
    net.stop(byzantine)
    net.start(byzantine, args=GARBAGE)
    with Load(net, ["regulator", "banka"], rate=40, max_seconds=120) as load:
        net.wait_height(ALL, net.height("regulator") + 3, timeout=30)
        for name in [byzantine, *(n for n in ALL if n != byzantine)]:
            seen = len(_events(net, name))
            with _followers(net, name):
                status = net.stop(name)
            assert status == 0, f"{name} exited with {status} after SIGTERM"
            stopping = [e["event"] for e in _events(net, name)[seen:]]
            assert "node_stopped" in stopping and "node_stop_timeout" not in stopping, stopping
            net.start(name, args=GARBAGE if name == byzantine else ())
        load.stop()
    height, _root = net.common_root(ALL, timeout=40)
    net.assert_same_chain(ALL, height, start=max(1, height - 20))


def _post_in_background(net: Net, name: str) -> threading.Thread:
    """A client POSTs a batch the journal will never make durable (its answer never comes)."""
    def post() -> None:
        with pytest.raises(ClientError):
            net.client(name, 15.0).submit(_batch(net))
    t = threading.Thread(target=post, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("point", ["journal.before_sync", "commit.before_batch"])
def test_a_node_whose_write_never_ends_exits_within_its_stop_budget_saying_what_it_abandoned_and_rejoins(
        net: Net, point: str) -> None:
    net.start()
    victim = next(n for n in VALIDATORS if n != net.primary())
    net.stop(victim)
    net.start(victim, env={"SMELEDGER_FAILPOINTS": f"{point}=hang"})
    stuck = _post_in_background(net, victim) if point == "journal.before_sync" else None
    with Load(net, ["regulator"], rate=40, max_seconds=60) as load:
        others = [n for n in ALL if n != victim]
        net.wait_height(others, net.height("regulator") + 3, timeout=30)  # the victim executed a block: stuck
        seen = len(_events(net, victim))
        status = net.stop(victim)  # waits up to 8 s
        assert status == STOP_ABANDONED_EXIT, f"{victim} exited with {status} (None: still running)"
        events = {e["event"]: e for e in _events(net, victim)[seen:]}
        abandoned = events["node_stop_abandoned"]["threads"]
        assert any(t.startswith("journal" if point.startswith("journal") else "store-exec") for t in abandoned), \
            abandoned
        if stuck is not None:
            assert events["node_stop_timeout"]["running"] == ["journal"]
            assert "journal_write_abandoned" in events
            stuck.join(timeout=20)
        net.start(victim)
        load.stop()
    assert net.committed("regulator", load.accepted, wait=30) == set(load.accepted)
    height, _root = net.common_root(ALL, timeout=40)
    net.assert_same_chain(ALL, height, start=max(1, height - 20))
