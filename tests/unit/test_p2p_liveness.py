"""Peer liveness through a fault-injecting proxy: a black-holed link is given up and redialled, so the
peer table tells the truth during a partition; slow bytes and a stalled loop are not mistaken for death."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from devtools.chaos.proxy import Proxy
from node.p2p import P2P, P2PSettings, PeerAddr
from protocol.crypto import PrivateKey
from tests.unit.test_p2p_link import until

CHAIN = "test-chain"
KEYS = [PrivateKey(bytes([i + 1]) * 32) for i in range(2)]
LIVE = P2PSettings(handshake_timeout=1.0, connect_timeout=1.0, backoff_initial=0.05, backoff_max=0.3,
                   ping_interval=0.1, idle_timeout=0.6)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[P2P, P2P, Proxy]]:
    """b dials a through the proxy link 'b->a'; a never dials (one route, fully under the proxy)."""
    validators = [k.public_key for k in KEYS]
    a = P2P(KEYS[0], CHAIN, validators=validators, settings=LIVE)
    await a.start()
    proxy = Proxy(seed=1)
    await proxy.add_link("b->a", ("127.0.0.1", 0), ("127.0.0.1", a.listen_port or 0))
    b = P2P(KEYS[1], CHAIN, validators=validators, settings=LIVE,
            dial=[PeerAddr(a.public_key, "127.0.0.1", proxy.port("b->a"), "a")])
    await b.start()
    try:
        yield a, b, proxy
    finally:
        await b.stop()
        await a.stop()
        await proxy.close()


def linked(a: P2P, b: P2P) -> bool:
    return a.is_connected(b.public_key) and b.is_connected(a.public_key)


async def test_a_black_holed_link_leaves_both_peer_tables_and_comes_back_after_the_heal(
        pair: tuple[P2P, P2P, Proxy]) -> None:
    a, b, proxy = pair
    await until(lambda: linked(a, b))
    proxy.set("b->a", "both", {"cut": True})  # no FIN, no RST: only silence
    await until(lambda: not a.is_connected(b.public_key) and not b.is_connected(a.public_key))
    assert a.peers() == [] and b.peers() == []
    assert a.stats.disconnects["idle_timeout"] >= 1 and b.stats.disconnects["idle_timeout"] >= 1
    await asyncio.sleep(3 * LIVE.idle_timeout)
    assert not b.is_connected(a.public_key), "a redial through the cut must not count as a peer"
    proxy.set("b->a", "both", {"cut": False})
    await until(lambda: linked(a, b))


async def test_a_one_way_cut_is_detected_by_the_side_that_hears_nothing(pair: tuple[P2P, P2P, Proxy]) -> None:
    a, b, proxy = pair
    await until(lambda: linked(a, b))
    proxy.set("b->a", "fwd", {"cut": True})  # b's bytes no longer reach a; a's still reach b
    await until(lambda: not a.is_connected(b.public_key))
    assert a.stats.disconnects["idle_timeout"] >= 1
    proxy.set("b->a", "fwd", {"cut": False})
    await until(lambda: linked(a, b))


async def test_a_slow_link_carrying_a_big_frame_is_not_mistaken_for_a_dead_one(
        pair: tuple[P2P, P2P, Proxy]) -> None:
    a, b, proxy = pair
    got: list[int] = []
    a.register("cons", lambda peer, body: got.append(len(body["blob"])))
    await until(lambda: linked(a, b))
    # 3 MiB at 2 MB/s: the frame takes longer than idle_timeout to arrive, but bytes keep coming
    proxy.set("b->a", "fwd", {"kbps": 2000})
    opened = a.stats.connections
    assert b.send(a.public_key, "cons", {"blob": b"\x01" * (3 * 1024 * 1024)})
    await until(lambda: got == [3 * 1024 * 1024], timeout=30)
    assert a.stats.disconnects["idle_timeout"] == 0 and a.stats.connections == opened


async def test_a_node_whose_own_loop_stalled_does_not_drop_a_live_peer(pair: tuple[P2P, P2P, Proxy]) -> None:
    a, b, _proxy = pair
    await until(lambda: linked(a, b))
    time.sleep(3 * LIVE.idle_timeout)  # blocks this loop (both nodes): bytes wait unread in the sockets
    await asyncio.sleep(2 * LIVE.ping_interval)
    assert linked(a, b)
    assert a.stats.disconnects["idle_timeout"] == 0 and b.stats.disconnects["idle_timeout"] == 0

