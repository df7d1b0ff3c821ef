"""Two or three P2P nodes over loopback in one event loop: handshake, refusal, hostile frames, queues."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from node.p2p import P2P, HandshakeError, P2PError, P2PSettings, PeerAddr
from node.p2p.handshake import handshake
from node.p2p.stream import FrameStream
from protocol import framing
from protocol.crypto import PrivateKey
from protocol.messages import Ping, encode_envelope

CHAIN = "test-chain"
KEYS = [PrivateKey(bytes([i + 1]) * 32) for i in range(6)]
FAST = P2PSettings(handshake_timeout=2.0, backoff_initial=0.02, backoff_max=0.2, ping_interval=0.2,
                   idle_timeout=5.0, gossip_flush_interval=0.002)


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `pred` every 5 ms; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def make(i: int, *, dial: list[P2P] | None = None, allowed: list[int] | None = None, chain: str = CHAIN,
         settings: P2PSettings = FAST) -> P2P:
    allowed_keys = [KEYS[j].public_key for j in (allowed if allowed is not None else range(4))]
    targets = [PeerAddr(p.public_key, "127.0.0.1", p.listen_port or 0, name=f"n{p.public_key[0]}")
               for p in (dial or [])]
    return P2P(KEYS[i], chain, validators=allowed_keys, dial=targets, settings=settings)


class Inbox:
    def __init__(self) -> None:
        self.items: list[tuple[bytes, Any]] = []

    def __call__(self, peer: bytes, body: Any) -> None:
        self.items.append((peer, body))


@pytest.fixture
async def nodes() -> AsyncIterator[list[P2P]]:
    started: list[P2P] = []
    yield started
    await asyncio.gather(*(n.stop() for n in started))


async def start(nodes: list[P2P], node: P2P) -> P2P:
    await node.start()
    nodes.append(node)
    return node


async def test_two_nodes_complete_the_handshake_and_exchange_messages(nodes: list[P2P]) -> None:
    a = await start(nodes, make(0))
    b = await start(nodes, make(1, dial=[a]))
    inbox_a, inbox_b = Inbox(), Inbox()
    a.register("cons", inbox_a)
    b.register("cons", inbox_b)
    await until(lambda: a.is_connected(b.public_key) and b.is_connected(a.public_key))
    assert a.send(b.public_key, "cons", {"x": 1})
    assert b.broadcast("cons", {"y": 2}, validators_only=True) == 1
    await until(lambda: len(inbox_a.items) == 1 and len(inbox_b.items) == 1)
    assert inbox_b.items == [(a.public_key, {"x": 1})]
    assert inbox_a.items == [(b.public_key, {"y": 2})]
    info = a.peers()[0]
    assert info.public_key == b.public_key.hex() and info.direction == "in" and info.validator
    assert b.peers()[0].name == f"n{a.public_key[0]}" and b.peers()[0].direction == "out"
    await until(lambda: a.peers()[0].rtt_ms is not None)
    assert not a.send(KEYS[5].public_key, "cons", {})


async def test_an_unknown_key_is_refused(nodes: list[P2P]) -> None:
    a = await start(nodes, make(0))
    outsider = await start(nodes, make(5, dial=[a], allowed=[0, 5]))
    await until(lambda: a.stats.handshake_failures["unknown_key"] >= 1)
    assert a.connected() == [] and outsider.connected() == []


async def test_a_peer_on_another_chain_is_refused(nodes: list[P2P]) -> None:
    a = await start(nodes, make(0))
    other = await start(nodes, make(1, dial=[a], chain="other-chain"))
    await until(lambda: a.stats.handshake_failures["wrong_chain"] >= 1
                and other.stats.handshake_failures["wrong_chain"] >= 1)
    assert a.connected() == [] and other.connected() == []


async def test_a_node_dialing_itself_refuses_the_connection(nodes: list[P2P]) -> None:
    a = await start(nodes, make(0))
    reader, writer = await asyncio.open_connection("127.0.0.1", a.listen_port)
    try:
        with pytest.raises(HandshakeError) as err:
            await handshake(FrameStream(reader, 1 << 20), writer, KEYS[0], CHAIN, initiator=True,
                            is_allowed=lambda _: True, timeout=2.0)
        assert err.value.reason in ("self_connection", "eof")
        await until(lambda: a.stats.handshake_failures["self_connection"] >= 1)
    finally:
        writer.close()


async def raw_peer(a: P2P, key: PrivateKey) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Any]:
    """A hand-driven authenticated client, so the test can send frames no honest node would."""
    reader, writer = await asyncio.open_connection("127.0.0.1", a.listen_port)
    res = await handshake(FrameStream(reader, 1 << 20), writer, key, CHAIN, initiator=True,
                          is_allowed=lambda _: True, timeout=2.0)
    return reader, writer, res.channel


def ping_frame(channel: Any, n: int) -> bytes:
    return framing.frame(channel.seal(encode_envelope("ping", Ping(n).to_value())))


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    async with asyncio.timeout(3.0):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionError:
                return True
            if not chunk:
                return True


@pytest.mark.parametrize("attack, reason", [
    ("garbage", "decrypt_failed"),
    ("oversized", "frame_too_large"),
    ("replay", "replayed_counter"),
    ("reorder", "counter_gap"),
    ("undecodable", "undecodable:malformed"),
])
async def test_a_hostile_frame_closes_that_link_and_the_node_keeps_serving_others(
        nodes: list[P2P], attack: str, reason: str) -> None:
    a = await start(nodes, make(0))
    b = await start(nodes, make(1, dial=[a]))
    inbox = Inbox()
    b.register("cons", inbox)
    await until(lambda: a.is_connected(b.public_key))
    reader, writer, ch = await raw_peer(a, KEYS[2])
    await until(lambda: a.is_connected(KEYS[2].public_key))
    if attack == "garbage":
        writer.write(framing.frame(bytes(8) + b"\x00garbage-not-a-secretbox-ciphertext"))
    elif attack == "oversized":
        writer.write((FAST.max_frame + 1).to_bytes(4, "big") + b"\x00" * 64)
    elif attack == "replay":
        f = ping_frame(ch, 1)
        writer.write(f + f)
    elif attack == "reorder":
        first, second = ping_frame(ch, 1), ping_frame(ch, 2)
        writer.write(second + first)
    else:
        writer.write(framing.frame(ch.seal(b"\xc1 not msgpack")))
    await writer.drain()
    assert await closed_by_peer(reader)
    writer.close()
    await until(lambda: not a.is_connected(KEYS[2].public_key))
    assert a.stats.rejected_frames[reason] == 1
    assert a.send(b.public_key, "cons", {"still": "serving"})
    await until(lambda: inbox.items == [(a.public_key, {"still": "serving"})])


async def test_a_full_send_queue_drops_the_newest_message_and_counts_it(nodes: list[P2P]) -> None:
    small = P2PSettings(handshake_timeout=2.0, backoff_initial=0.02, send_queue_frames=4)
    a = await start(nodes, make(0, settings=small))
    b = await start(nodes, make(1, dial=[a]))
    inbox = Inbox()
    b.register("cons", inbox)
    await until(lambda: a.is_connected(b.public_key))
    sent = [a.send(b.public_key, "cons", {"i": i}) for i in range(10)]  # no await: the writer cannot run
    assert sent == [True] * 4 + [False] * 6
    assert a.stats.dropped_sends["cons"] == 6 and a.peers()[0].dropped_frames == 6
    assert not a.has_room(b.public_key)
    await until(lambda: len(inbox.items) == 4)
    assert [body["i"] for _, body in inbox.items] == [0, 1, 2, 3]
    assert a.has_room(b.public_key)


async def test_a_peer_that_stops_reading_is_disconnected_after_the_slow_peer_timeout(nodes: list[P2P]) -> None:
    tight = P2PSettings(handshake_timeout=2.0, backoff_initial=5.0, send_queue_frames=2,
                        slow_peer_timeout=0.2, idle_timeout=30.0)
    a = await start(nodes, make(0, settings=tight))
    _reader, writer, _ = await raw_peer(a, KEYS[1])  # authenticates, then never reads
    await until(lambda: a.is_connected(KEYS[1].public_key))
    blob = {"blob": b"\x00" * (512 * 1024)}
    for _ in range(400):  # fills the socket buffers, then the queue; bounded
        a.send(KEYS[1].public_key, "cons", blob)
        await asyncio.sleep(0.005)
        if not a.is_connected(KEYS[1].public_key):
            break
    assert a.stats.disconnects["slow_peer"] == 1
    assert a.stats.dropped_sends["cons"] >= 1
    writer.close()


async def test_simultaneous_dials_settle_on_one_connection_both_sides_agree_on(nodes: list[P2P]) -> None:
    a = make(0)
    b = make(1)
    await start(nodes, a)
    await start(nodes, b)
    for me, other in ((a, b), (b, a)):
        me.dial_targets = [PeerAddr(other.public_key, "127.0.0.1", other.listen_port or 0)]
        me._spawn(me._dial_loop(me.dial_targets[0]), "dial")
    await until(lambda: a.is_connected(b.public_key) and b.is_connected(a.public_key))
    await asyncio.sleep(0.3)
    assert len(a.peers()) == 1 and len(b.peers()) == 1
    assert {a.peers()[0].direction, b.peers()[0].direction} == {"in", "out"}
    opened = (a.stats.connections, b.stats.connections)
    await asyncio.sleep(0.3)
    assert (a.stats.connections, b.stats.connections) == opened  # no flapping


async def test_a_dropped_link_is_redialed_with_backoff(nodes: list[P2P]) -> None:
    a = await start(nodes, make(0))
    b = await start(nodes, make(1, dial=[a]))
    await until(lambda: b.is_connected(a.public_key))
    conn = a._peers[b.public_key].conn
    assert conn is not None
    conn.close("test")
    await until(lambda: not b.is_connected(a.public_key) or b.stats.connections >= 2)
    await until(lambda: b.is_connected(a.public_key) and b.stats.connections >= 2)


async def test_stop_closes_every_connection_within_two_seconds(nodes: list[P2P]) -> None:
    a = await start(nodes, make(0))
    b = await start(nodes, make(1, dial=[a]))
    c = await start(nodes, make(2, dial=[a, b]))
    await until(lambda: len(a.connected()) == 2 and len(c.connected()) == 2)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await a.stop()
    assert loop.time() - t0 < 2.0
    assert a.connected() == []
    await until(lambda: not b.is_connected(a.public_key) and not c.is_connected(a.public_key))
    assert b.is_connected(c.public_key)


async def test_a_peer_that_goes_silent_is_closed_after_the_idle_timeout(nodes: list[P2P]) -> None:
    quick = P2PSettings(handshake_timeout=2.0, ping_interval=0.05, idle_timeout=0.3, backoff_initial=5.0)
    a = await start(nodes, make(0, settings=quick))
    reader, writer, _ = await raw_peer(a, KEYS[1])  # never answers pings
    assert await closed_by_peer(reader)
    writer.close()
    assert a.stats.disconnects["idle_timeout"] == 1


async def test_handler_outcomes_decide_the_links_fate(nodes: list[P2P]) -> None:
    from protocol.errors import FieldError

    a = await start(nodes, make(0))
    b = await start(nodes, make(1, dial=[a]))
    inbox = Inbox()

    def strict(peer: bytes, body: Any) -> None:
        if body == "invalid":
            raise FieldError("not a consensus message")
        if body == "bug":
            raise RuntimeError("handler bug")
        inbox(peer, body)

    async def sync_req(peer: bytes, body: Any) -> None:
        await asyncio.sleep(0)
        inbox(peer, ("sync", body))

    a.register("cons", strict)
    a.register("sync_req", sync_req)
    await until(lambda: b.is_connected(a.public_key))
    b.send(a.public_key, "snap_req", {})  # known type, no handler: dropped and counted
    b.send(a.public_key, "cons", "bug")  # a bug in the handler is logged, the link stays
    b.send(a.public_key, "sync_req", 7)  # async handlers are awaited
    b.send(a.public_key, "cons", "ok")
    await until(lambda: len(inbox.items) == 2)
    assert inbox.items == [(b.public_key, ("sync", 7)), (b.public_key, "ok")]
    assert a.stats.unhandled["snap_req"] == 1
    b.send(a.public_key, "cons", "invalid")  # the peer sent an invalid body: the link closes
    await until(lambda: a.stats.rejected_frames["bad_body:cons"] == 1)
    await until(lambda: a.stats.disconnects["bad_body"] == 1)
    with pytest.raises(P2PError) as err:
        a.register("hello", strict)
    assert err.value.reason == "bad_type"
    with pytest.raises(P2PError) as err:
        a.broadcast("cons", {"blob": b"\x00" * (FAST.max_frame + 1)})
    assert err.value.reason == "message_too_large"
