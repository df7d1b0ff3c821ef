"""The authenticated handshake of DESIGN section 5.

Both sides send `hello` (version, chain id, static Ed25519 key, fresh ephemeral X25519 key) in clear,
check the other's hello, then each signs `role || transcript hash` under DOMAIN_HANDSHAKE and sends it
as `auth`. The transcript binds chain id, version, both static and both ephemeral keys. Session keys
for each direction are derived from the X25519 shared secret and the transcript hash.

Rule: every failure raises `HandshakeError` with a reason (unknown_key, bad_signature, wrong_chain,
wrong_version, self_connection, bad_hello, timeout, eof); the whole exchange is bounded by one timeout
and by a 1 KiB frame limit. Ephemeral randomness comes from nacl here, never from protocol/.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from nacl.public import PrivateKey as X25519PrivateKey

from node.p2p.channel import SecureChannel
from node.p2p.errors import HandshakeError
from node.p2p.stream import FrameStream
from protocol import framing
from protocol.crypto import DOMAIN_HANDSHAKE, PrivateKey, verify, x25519_public, x25519_shared
from protocol.errors import FrameTooLarge, ProtocolError
from protocol.messages import (
    HANDSHAKE_LIMITS,
    HANDSHAKE_MAX_FRAME,
    PROTOCOL_VERSION,
    ROLE_INITIATOR,
    ROLE_RESPONDER,
    T_AUTH,
    T_HELLO,
    Auth,
    Envelope,
    Hello,
    auth_message,
    encode_envelope,
    handshake_transcript,
)

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    peer_key: bytes
    channel: SecureChannel
    transcript_hash: bytes


async def _exchange(stream: FrameStream, writer: asyncio.StreamWriter, msg_type: str, mine: dict[str, Any],
                    parse: Callable[[Any], M]) -> M:
    """Send our `msg_type` frame, then read the peer's and parse its body."""
    writer.write(framing.frame(encode_envelope(msg_type, mine)))
    await writer.drain()
    payload = await stream.next_frame()
    if payload is None:
        raise HandshakeError(f"connection closed while waiting for {msg_type}", reason="eof")
    try:
        env = Envelope.decode(payload, HANDSHAKE_LIMITS, frozenset({msg_type}))
    except ProtocolError as exc:
        raise HandshakeError(f"bad {msg_type} frame: {exc.message}", reason="bad_hello") from exc
    try:
        return parse(env.body)
    except ProtocolError as exc:
        raise HandshakeError(f"bad {msg_type}: {exc.message}", reason="bad_hello") from exc


async def handshake(stream: FrameStream, writer: asyncio.StreamWriter, key: PrivateKey, chain_id: str, *,
                    initiator: bool, is_allowed: Callable[[bytes], bool], timeout: float,
                    expected_peer: bytes | None = None, version: int = PROTOCOL_VERSION,
                    on_hello: Callable[[bytes], None] | None = None) -> HandshakeResult:
    """Run the handshake on a fresh connection; on success the stream's frame limit is left to the caller.
    `on_hello(key)` is called once the peer's hello names an allowed key (before its signature is seen)."""
    try:
        async with asyncio.timeout(timeout):
            return await _handshake(stream, writer, key, chain_id, initiator=initiator,
                                    is_allowed=is_allowed, expected_peer=expected_peer, version=version,
                                    on_hello=on_hello)
    except TimeoutError as exc:
        raise HandshakeError("handshake timed out", reason="timeout") from exc
    except FrameTooLarge as exc:
        raise HandshakeError("handshake frame too large", reason="bad_hello") from exc
    except (ConnectionError, OSError) as exc:
        raise HandshakeError(f"connection failed during handshake: {exc}", reason="eof") from exc


async def _handshake(stream: FrameStream, writer: asyncio.StreamWriter, key: PrivateKey, chain_id: str, *,
                     initiator: bool, is_allowed: Callable[[bytes], bool], expected_peer: bytes | None,
                     version: int, on_hello: Callable[[bytes], None] | None) -> HandshakeResult:
    stream.max_frame = HANDSHAKE_MAX_FRAME
    eph_secret = bytes(X25519PrivateKey.generate())
    mine = Hello(version=version, chain=chain_id, public_key=key.public_key, ephemeral=x25519_public(eph_secret))
    theirs = await _exchange(stream, writer, T_HELLO, mine.to_value(), Hello.from_value)
    if theirs.version != version:
        raise HandshakeError(f"peer speaks protocol version {theirs.version}", reason="wrong_version")
    if theirs.chain != chain_id:
        raise HandshakeError(f"peer is on chain '{theirs.chain}'", reason="wrong_chain")
    if theirs.public_key == key.public_key or theirs.ephemeral == mine.ephemeral:
        raise HandshakeError("connected to ourselves", reason="self_connection")
    if not is_allowed(theirs.public_key):
        raise HandshakeError("peer key is not a validator or configured observer", reason="unknown_key")
    if expected_peer is not None and theirs.public_key != expected_peer:
        raise HandshakeError("peer key differs from the dialed entry", reason="unexpected_key")
    if on_hello is not None:
        on_hello(theirs.public_key)

    i_hello, r_hello = (mine, theirs) if initiator else (theirs, mine)
    th = handshake_transcript(chain_id, version, i_hello, r_hello)
    my_role, their_role = (ROLE_INITIATOR, ROLE_RESPONDER) if initiator else (ROLE_RESPONDER, ROLE_INITIATOR)
    sig = key.sign(DOMAIN_HANDSHAKE, auth_message(my_role, th))
    auth = await _exchange(stream, writer, T_AUTH, Auth(sig).to_value(), Auth.from_value)
    if not verify(theirs.public_key, DOMAIN_HANDSHAKE, auth_message(their_role, th), auth.sig):
        raise HandshakeError("handshake signature does not verify", reason="bad_signature")
    try:
        shared = x25519_shared(eph_secret, theirs.ephemeral)
    except Exception as exc:  # libsodium rejects low-order points with an unspecific error type
        raise HandshakeError("degenerate ephemeral key", reason="bad_hello") from exc
    return HandshakeResult(peer_key=theirs.public_key,
                           channel=SecureChannel.from_secret(shared, th, initiator), transcript_hash=th)
