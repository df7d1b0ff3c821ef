"""The node behind the API: ordered start, bounded stop, and clear start errors."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from pathlib import Path

import pytest

from node.errors import ConfigError
from node.service import SHUTDOWN_BUDGET_S, Node
from storage.errors import GenesisMismatch
from tests.conftest import ephemeral, load_home


async def _run_until_ready(node: Node) -> asyncio.Task[None]:
    task = asyncio.create_task(node.run())
    ready = asyncio.create_task(node.ready.wait())
    await asyncio.wait({task, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
    return task


async def test_an_orderly_stop_closes_intake_stops_every_component_and_then_the_database(
        single_home: Path) -> None:
    node = Node(ephemeral(load_home(single_home / "banka")), log_stream=io.StringIO())
    task = await _run_until_ready(node)
    parts = node.parts
    assert parts is not None and parts.health.accepting and parts.health.consensus_running
    node.request_stop()
    await asyncio.wait_for(task, SHUTDOWN_BUDGET_S)
    assert parts.store.db.closed
    assert parts.health.accepting is False and parts.health.consensus_running is False
    events = [json.loads(line)["event"] for line in node._log_stream.getvalue().splitlines()]  # type: ignore[attr-defined]
    assert events.index("node_stopping") < events.index("node_stopped") and "node_failed" not in events


async def test_a_failing_component_stops_the_node_with_one_line_naming_it_and_closes_the_database(
        single_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = Node(ephemeral(load_home(single_home / "banka")), log_stream=io.StringIO())
    task = await _run_until_ready(node)
    assert node.parts is not None

    def broken() -> None:
        raise RuntimeError("gossip died")

    monkeypatch.setattr(node.parts.gossip, "flush", broken)
    node.parts.gossip._wake.set()
    with pytest.raises(RuntimeError, match="gossip died"):
        await asyncio.wait_for(task, SHUTDOWN_BUDGET_S)
    assert node.parts.store.db.closed
    lines = [json.loads(line) for line in node._log_stream.getvalue().splitlines()]  # type: ignore[attr-defined]
    failed = [x for x in lines if x["event"] == "node_failed"]
    assert len(failed) == 1 and failed[0]["component"] == "gossip" and "gossip died" in failed[0]["error"]


async def test_a_restart_on_the_same_home_keeps_the_chain(single_home: Path) -> None:
    cfg = ephemeral(load_home(single_home / "banka"))
    first = Node(cfg, log_stream=io.StringIO())
    task = await _run_until_ready(first)
    assert first.parts is not None
    before = first.parts.status.document()
    first.request_stop()
    await asyncio.wait_for(task, 10)
    second = Node(cfg, log_stream=io.StringIO())
    task = await _run_until_ready(second)
    assert second.parts is not None
    after = second.parts.status.document()
    second.request_stop()
    await asyncio.wait_for(task, 10)
    assert (after["genesis_hash"], after["height"]) == (before["genesis_hash"], before["height"])
    assert after["state_root"] == before["state_root"] or after["height"] > 0


async def test_a_config_for_another_chain_is_refused_before_anything_opens(single_home: Path) -> None:
    cfg = ephemeral(load_home(single_home / "banka"))
    cfg = dataclasses.replace(cfg, node=dataclasses.replace(cfg.node, chain_id="other"))
    with pytest.raises(ConfigError, match=r"node\.chain_id"):
        await _run_until_ready(Node(cfg, log_stream=io.StringIO()))
    assert not (single_home / "banka" / "data").exists()


async def test_a_home_bound_to_another_genesis_is_refused(single_home: Path) -> None:
    cfg = ephemeral(load_home(single_home / "banka"))
    node = Node(cfg, log_stream=io.StringIO())
    task = await _run_until_ready(node)
    node.request_stop()
    await asyncio.wait_for(task, 10)
    gpath = single_home / "banka" / "genesis.json"
    doc = json.loads(gpath.read_text())
    doc["genesis_time"] += 1
    gpath.write_text(json.dumps(doc))
    with pytest.raises(GenesisMismatch):
        await _run_until_ready(Node(cfg, log_stream=io.StringIO()))
