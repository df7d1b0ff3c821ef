"""The node behind the API: ordered start, bounded stop, and clear start errors."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import time
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


async def test_a_node_stops_within_the_budget_even_with_a_leftover_component_task(single_home: Path) -> None:
    node = Node(ephemeral(load_home(single_home / "banka")), log_stream=io.StringIO())
    task = await _run_until_ready(node)
    assert node.ctx is not None and node.ctx.task_group is not None
    leftover = node.ctx.task_group.create_task(asyncio.sleep(3600))
    t0 = time.monotonic()
    node.request_stop()
    await asyncio.wait_for(task, SHUTDOWN_BUDGET_S)
    assert time.monotonic() - t0 < SHUTDOWN_BUDGET_S
    assert leftover.cancelled()
    assert node.ctx.db is not None and node.ctx.db.closed
    assert node.ctx.accepting is False


async def test_a_failing_component_task_stops_the_node_and_surfaces_its_error(single_home: Path) -> None:
    node = Node(ephemeral(load_home(single_home / "banka")), log_stream=io.StringIO())
    task = await _run_until_ready(node)

    async def broken() -> None:
        raise RuntimeError("component died")

    assert node.ctx is not None and node.ctx.task_group is not None
    node.ctx.task_group.create_task(broken())
    with pytest.raises(RuntimeError, match="component died"):
        await asyncio.wait_for(task, SHUTDOWN_BUDGET_S)
    assert node.ctx.db is not None and node.ctx.db.closed


async def test_a_restart_on_the_same_home_keeps_the_chain(single_home: Path) -> None:
    cfg = ephemeral(load_home(single_home / "banka"))
    first = Node(cfg, log_stream=io.StringIO())
    task = await _run_until_ready(first)
    assert first.ctx is not None
    before = first.ctx.status()
    first.request_stop()
    await asyncio.wait_for(task, 10)
    second = Node(cfg, log_stream=io.StringIO())
    task = await _run_until_ready(second)
    assert second.ctx is not None
    after = second.ctx.status()
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
