"""P2P wire messages: the envelope every frame carries, the handshake messages and the tx gossip batch.

Wire: every P2P payload is the canonical msgpack map `{"t": <type str>, "b": <body>}`. Before the
handshake completes the payload travels in clear (types `hello`, `auth`); afterwards it is sealed by the
node's channel. `Envelope.decode` is strict (canonical bytes, known type names only); a body is turned
into a typed message only through its class's `from_value`, which checks every field.

Rule: pure data and validation. No I/O, no clock, no randomness: keys, nonces and times come in as
arguments. Consensus and sync bodies are defined by their owners; this module only routes their type
names (`ROUTED_TYPES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol import codec
from protocol.crypto import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, sha256
from protocol.errors import FieldError
from protocol.fields import expect_map, only_keys, req_bytes, req_int, req_list, req_str
from protocol.tx import MAX_CHAIN_LEN, MAX_TX_BYTES

PROTOCOL_VERSION = 2  # 2: block headers carry results_root; res_req/res_resp (history)

T_HELLO = "hello"
T_AUTH = "auth"
T_TXS = "txs"
T_PING = "ping"
T_PONG = "pong"
T_CONS = "cons"
T_SYNC_REQ = "sync_req"
T_SYNC_RESP = "sync_resp"
T_SNAP_REQ = "snap_req"
T_SNAP_RESP = "snap_resp"
T_RES_REQ = "res_req"
T_RES_RESP = "res_resp"

HANDSHAKE_TYPES = frozenset({T_HELLO, T_AUTH})
P2P_TYPES = frozenset({T_TXS, T_PING, T_PONG})
ROUTED_TYPES = frozenset({T_CONS, T_SYNC_REQ, T_SYNC_RESP, T_SNAP_REQ, T_SNAP_RESP, T_RES_REQ, T_RES_RESP})
SESSION_TYPES = P2P_TYPES | ROUTED_TYPES  # types allowed after the handshake
KNOWN_TYPES = HANDSHAKE_TYPES | SESSION_TYPES
MAX_TYPE_LEN = 16

X25519_SIZE = 32
MAX_TXS_PER_BATCH = 10_000
MAX_ALSO = 256  # peers named in a txs batch's "also" list
HANDSHAKE_MAX_FRAME = 1024

# Handshake signatures cover a role label + the transcript hash, so a side's signature can never be
# reflected back as the other side's.
ROLE_INITIATOR = b"initiator"
ROLE_RESPONDER = b"responder"


def envelope_limits(max_payload: int) -> codec.Limits:
    """Decoding limits for a session payload of at most `max_payload` bytes."""
    return codec.Limits(max_bytes=max_payload, max_depth=16, max_str=64 * 1024, max_bin=max_payload,
                        max_array=100_000, max_map=4_096)


HANDSHAKE_LIMITS = codec.Limits(max_bytes=HANDSHAKE_MAX_FRAME, max_depth=4, max_str=128, max_bin=128,
                                max_array=8, max_map=8)


@dataclass(frozen=True, slots=True)
class Envelope:
    """`{"t": type, "b": body}`; the body stays a decoded value until its owner parses it."""

    type: str
    body: Any

    def to_value(self) -> dict[str, Any]:
        return {"t": self.type, "b": self.body}

    def encode(self) -> bytes:
        return codec.encode(self.to_value())

    @classmethod
    def from_value(cls, v: Any, allowed: frozenset[str] = KNOWN_TYPES) -> Envelope:
        m = expect_map(v, "envelope")
        only_keys(m, {"t", "b"}, "envelope")
        t = req_str(m, "t", max_len=MAX_TYPE_LEN, min_len=1)
        if t not in allowed:
            raise FieldError(f"message type '{t}' is not allowed here", code="unknown_type")
        if "b" not in m:
            raise FieldError("missing field 'b'")
        return cls(type=t, body=m["b"])

    @classmethod
    def decode(cls, payload: bytes, limits: codec.Limits, allowed: frozenset[str] = KNOWN_TYPES) -> Envelope:
        """Strictly decode a payload; raises CodecError or FieldError."""
        return cls.from_value(codec.decode(payload, limits), allowed)


def encode_envelope(msg_type: str, body: Any) -> bytes:
    return codec.encode({"t": msg_type, "b": body})


@dataclass(frozen=True, slots=True)
class Hello:
    """First handshake frame from each side: who I am, which chain, my ephemeral X25519 key."""

    version: int
    chain: str
    public_key: bytes  # static Ed25519 node key
    ephemeral: bytes  # X25519 public key, fresh per connection

    def to_value(self) -> dict[str, Any]:
        return {"v": self.version, "chain": self.chain, "pk": self.public_key, "eph": self.ephemeral}

    @classmethod
    def from_value(cls, v: Any) -> Hello:
        m = expect_map(v, "hello")
        only_keys(m, {"v", "chain", "pk", "eph"}, "hello")
        return cls(version=req_int(m, "v", lo=0, hi=2**16),
                   chain=req_str(m, "chain", max_len=MAX_CHAIN_LEN, min_len=1),
                   public_key=req_bytes(m, "pk", size=PUBLIC_KEY_SIZE),
                   ephemeral=req_bytes(m, "eph", size=X25519_SIZE))


@dataclass(frozen=True, slots=True)
class Auth:
    """Second handshake frame: an Ed25519 signature over role label + transcript hash."""

    sig: bytes

    def to_value(self) -> dict[str, Any]:
        return {"sig": self.sig}

    @classmethod
    def from_value(cls, v: Any) -> Auth:
        m = expect_map(v, "auth")
        only_keys(m, {"sig"}, "auth")
        return cls(sig=req_bytes(m, "sig", size=SIGNATURE_SIZE))


def handshake_transcript(chain: str, version: int, initiator: Hello, responder: Hello) -> bytes:
    """SHA-256 of the canonical transcript: chain id, version, both static keys, both ephemeral keys."""
    return sha256(codec.encode({
        "chain": chain, "v": version,
        "i_pk": initiator.public_key, "i_eph": initiator.ephemeral,
        "r_pk": responder.public_key, "r_eph": responder.ephemeral,
    }))


def auth_message(role: bytes, transcript_hash: bytes) -> bytes:
    """The bytes a side signs (under DOMAIN_HANDSHAKE): its role label, then the transcript hash."""
    return role + b":" + transcript_hash


@dataclass(frozen=True, slots=True)
class Txs:
    """A batch of raw signed txs. `also` names peers the sender is sending the same txs to right now,
    so the receiver need not relay them there (gossip de-duplication)."""

    txs: tuple[bytes, ...]
    also: tuple[bytes, ...] = ()

    def to_value(self) -> dict[str, Any]:
        return {"txs": list(self.txs), "also": list(self.also)}

    @classmethod
    def from_value(cls, v: Any) -> Txs:
        m = expect_map(v, "txs")
        only_keys(m, {"txs", "also"}, "txs")
        raw = req_list(m, "txs", max_len=MAX_TXS_PER_BATCH)
        for item in raw:
            if not isinstance(item, bytes) or len(item) > MAX_TX_BYTES:
                raise FieldError(f"field 'txs' items must be bytes of at most {MAX_TX_BYTES}")
        also = req_list(m, "also", max_len=MAX_ALSO)
        for pk in also:
            if not isinstance(pk, bytes) or len(pk) != PUBLIC_KEY_SIZE:
                raise FieldError(f"field 'also' items must be {PUBLIC_KEY_SIZE}-byte keys")
        return cls(txs=tuple(raw), also=tuple(also))


@dataclass(frozen=True, slots=True)
class Ping:
    """Keepalive; `n` is echoed back in the pong so the sender can measure the round trip."""

    n: int

    def to_value(self) -> dict[str, Any]:
        return {"n": self.n}

    @classmethod
    def from_value(cls, v: Any) -> Ping:
        m = expect_map(v, "ping")
        only_keys(m, {"n"}, "ping")
        return cls(n=req_int(m, "n", lo=0, hi=2**63 - 1))


@dataclass(frozen=True, slots=True)
class Pong:
    n: int

    def to_value(self) -> dict[str, Any]:
        return {"n": self.n}

    @classmethod
    def from_value(cls, v: Any) -> Pong:
        m = expect_map(v, "pong")
        only_keys(m, {"n"}, "pong")
        return cls(n=req_int(m, "n", lo=0, hi=2**63 - 1))
