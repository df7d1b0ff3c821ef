"""Inbound handshakes in progress are capped per client address, so idle strangers cannot crowd out a
validator: they hold at most the per-address cap, and the longest-silent stranger makes room for a newcomer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import pytest

from node.p2p import P2P
from tests.unit.test_p2p_link import FAST, make, nodes, start, until

__all__ = ["nodes"]  # the fixture, imported for pytest
STRANGER = "127.0.0.2"  # another loopback address: the strangers' own


class Strangers:
    """`count` idle connections from `host` that never speak, re-opened as soon as the node closes one."""

    def __init__(self, port: int, host: str, count: int) -> None:
        self.port, self.host, self.count = port, host, count
        self.opened = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def _one(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(self.host, 0))
            except OSError:
                await asyncio.sleep(0.05)
                continue
            self.opened += 1
            with contextlib.suppress(ConnectionError):
                await reader.read(-1)  # idle until the node closes it
            writer.transport.abort()
            await asyncio.sleep(0.01)

    def __enter__(self) -> Strangers:
        self._tasks = [asyncio.ensure_future(self._one()) for _ in range(self.count)]
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()


@pytest.fixture
async def target(nodes: list[P2P]) -> AsyncIterator[P2P]:
    yield await start(nodes, make(0, settings=dataclasses.replace(FAST, handshake_timeout=5.0)))


async def test_600_idle_strangers_hold_at_most_the_per_address_cap_and_a_validator_still_connects(
        nodes: list[P2P], target: P2P) -> None:
    assert target.listen_port is not None
    with Strangers(target.listen_port, STRANGER, 600) as strangers:
        await until(lambda: strangers.opened >= 600 and target.pending_handshakes() == 8, timeout=10)
        validator = await start(nodes, make(1, dial=[target]))
        await until(lambda: target.is_connected(validator.public_key), timeout=5)  # "not crowded out"
        assert target.pending_handshakes() <= 8
    failures = target.stats.handshake_failures  # each stranger past the cap was refused or pushed out another
    await until(lambda: failures["evicted"] + failures["too_many_pending"] >= 600 - 8, timeout=30)  # loaded CI


async def test_the_longest_silent_stranger_makes_room_for_a_peer_from_its_own_address(
        nodes: list[P2P], target: P2P) -> None:
    assert target.listen_port is not None
    idle = []
    for _ in range(8):  # the per-address cap, from the validator's own address, then silence
        idle.append(await asyncio.open_connection("127.0.0.1", target.listen_port))
    try:
        await until(lambda: target.pending_handshakes() == 8)  # the cap; the 5 s handshake timeout is far off
        validator = await start(nodes, make(1, dial=[target]))
        await until(lambda: target.is_connected(validator.public_key), timeout=3)
        assert target.stats.handshake_failures["evicted"] >= 1
    finally:
        for _, w in idle:
            w.transport.abort()
