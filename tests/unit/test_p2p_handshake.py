"""Handshake refusals driven by hand: silence, garbage, a bad signature, a mismatched dial target."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nacl.public import PrivateKey as X25519PrivateKey

from node.p2p import P2P, P2PSettings
from node.p2p.errors import HandshakeError
from node.p2p.handshake import handshake
from node.p2p.stream import FrameStream
from protocol import framing
from protocol.crypto import DOMAIN_HANDSHAKE, x25519_public
from protocol.messages import HANDSHAKE_LIMITS, PROTOCOL_VERSION, Auth, Envelope, Hello, encode_envelope
from tests.unit.test_p2p_link import CHAIN, KEYS, closed_by_peer, until

SHORT = P2PSettings(handshake_timeout=0.3)


@pytest.fixture
async def node() -> AsyncIterator[P2P]:
    p = P2P(KEYS[0], CHAIN, validators=[k.public_key for k in KEYS[:4]], settings=SHORT)
    await p.start()
    yield p
    await p.stop()


async def test_a_silent_connection_is_closed_after_the_handshake_timeout(node: P2P) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.listen_port)
    assert await closed_by_peer(reader)
    writer.close()
    assert node.stats.handshake_failures["timeout"] == 1


async def test_garbage_instead_of_a_hello_closes_the_connection(node: P2P) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.listen_port)
    writer.write(b"\x00\x00\x00\x05hello")
    assert await closed_by_peer(reader)
    writer.close()
    await until(lambda: node.stats.handshake_failures["bad_hello"] == 1)


async def test_an_oversized_handshake_frame_closes_the_connection(node: P2P) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.listen_port)
    writer.write((1 << 20).to_bytes(4, "big"))
    assert await closed_by_peer(reader)
    writer.close()
    await until(lambda: node.stats.handshake_failures["bad_hello"] == 1)


async def test_an_auth_signed_by_another_key_is_refused(node: P2P) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.listen_port)
    stream = FrameStream(reader, 1024)
    eph = bytes(X25519PrivateKey.generate())
    claimed = KEYS[1]  # claims to be validator 1 ...
    writer.write(framing.frame(encode_envelope("hello", Hello(PROTOCOL_VERSION, CHAIN, claimed.public_key,
                                                               x25519_public(eph)).to_value())))
    theirs = Envelope.decode(await stream.next_frame() or b"", HANDSHAKE_LIMITS)
    assert Hello.from_value(theirs.body).public_key == node.public_key
    forged = KEYS[2].sign(DOMAIN_HANDSHAKE, b"initiator:" + bytes(32))  # ... but cannot sign as it
    writer.write(framing.frame(encode_envelope("auth", Auth(forged).to_value())))
    assert await closed_by_peer(reader)
    writer.close()
    await until(lambda: node.stats.handshake_failures["bad_signature"] == 1)
    assert node.connected() == []


async def test_a_dialed_peer_answering_with_another_allowed_key_is_refused(node: P2P) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.listen_port)
    with pytest.raises(HandshakeError) as err:
        await handshake(FrameStream(reader, 1024), writer, KEYS[1], CHAIN, initiator=True,
                        is_allowed=lambda _: True, timeout=2.0, expected_peer=KEYS[3].public_key)
    assert err.value.reason == "unexpected_key"
    writer.close()


async def test_a_peer_speaking_another_protocol_version_is_refused(node: P2P) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.listen_port)
    with pytest.raises(HandshakeError) as err:
        await handshake(FrameStream(reader, 1024), writer, KEYS[1], CHAIN, initiator=True,
                        is_allowed=lambda _: True, timeout=2.0, version=PROTOCOL_VERSION + 1)
    assert err.value.reason == "wrong_version"
    writer.close()
    await until(lambda: node.stats.handshake_failures["wrong_version"] == 1)
