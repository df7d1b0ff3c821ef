"""Shared fixtures: a generated testnet home in a tmp dir, free ports, and an in-process node.

Rule: tests bind 127.0.0.1 only, with ephemeral ports (0) or ports probed free just before use; every
node or process a fixture starts is stopped in its teardown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from devtools import testnet as testnet_mod
from devtools.testnet import free_port_block
from node import config as config_mod
from node.config import Config
from node.service import Node


@pytest.fixture
def single_home(tmp_path: Path) -> Path:
    """A one-validator testnet (fast KDF) and the path of its node home."""
    d = tmp_path / "net"
    testnet_mod.create(d, validators=1, observers=0, accounts=2, base_port=free_port_block(1), kdf="min")
    return d


def ephemeral(cfg: Config, **api: Any) -> Config:
    """The same config with port 0 for API and P2P, no peers to dial, and API overrides."""
    return dataclasses.replace(cfg, api=dataclasses.replace(cfg.api, port=0, **api),
                               p2p=dataclasses.replace(cfg.p2p, port=0, peers=()))


async def run_node(cfg: Config) -> tuple[Node, asyncio.Task[None]]:
    """Start an in-process Node and wait until it is ready; raises its start error. The caller stops it."""
    node = Node(cfg, log_stream=io.StringIO())
    task = asyncio.create_task(node.run())
    ready = asyncio.create_task(node.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises the start error
    assert ready in done, "node did not start within 20 s"
    return node, task


@pytest.fixture
async def start_node() -> AsyncIterator[Callable[..., Any]]:
    """`await start_node(config)` -> a running in-process Node (stopped at teardown)."""
    running: list[tuple[Node, asyncio.Task[None]]] = []

    async def start(cfg: Config) -> Node:
        node, task = await run_node(cfg)
        running.append((node, task))
        return node

    yield start
    for node, task in running:
        node.request_stop()
        await asyncio.wait_for(task, 10)


def load_home(home: Path) -> Config:
    return config_mod.load(home)
