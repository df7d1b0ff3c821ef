"""The signed transaction envelope of DESIGN section 5.

Wire: `{"sig": <64 bytes>, "tx": <canonical bytes of the body>}`; the signature is Ed25519 over
`b"smeledger:tx:v1" + body_bytes`; the tx hash is SHA-256 of the body bytes. The body is a map with
`chain`, `kind`, `from` (32-byte key), `nonce` and the kind's own fields, which the ledger validates.

Rule: `SignedTx.from_wire` checks structure only and never verifies the signature; callers verify once
(in batches, off the event loop) and cache the result by hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocol import codec
from protocol.crypto import DOMAIN_TX, PUBLIC_KEY_SIZE, SIGNATURE_SIZE, PrivateKey, sha256, verify
from protocol.errors import FieldError
from protocol.fields import expect_map, only_keys, req_bytes, req_int, req_str
from protocol.limits import TX_MAX_BYTES

MAX_TX_BYTES = TX_MAX_BYTES

TX_LIMITS = codec.Limits(max_bytes=MAX_TX_BYTES, max_depth=8, max_str=16 * 1024, max_bin=MAX_TX_BYTES,
                         max_array=1024, max_map=64)
MAX_NONCE = 2**63 - 1
MAX_KIND_LEN = 32
MAX_CHAIN_LEN = 64


_ENV_HEAD = b"\x82\xa3sig\xc4\x40"  # {"sig": bin 64, ...}: the only canonical start of an envelope
_TX_KEY = b"\xa2tx"
_SIG_END = len(_ENV_HEAD) + SIGNATURE_SIZE
_BODY_AT = _SIG_END + len(_TX_KEY)


def _split_envelope(raw: bytes) -> tuple[bytes, bytes] | None:
    """(sig, body bytes) of an envelope in its one canonical form, read without a generic decode; None
    for anything else (the strict decoder then rejects it with the precise error, or accepts it)."""
    if len(raw) > MAX_TX_BYTES or not raw.startswith(_ENV_HEAD) or raw[_SIG_END:_BODY_AT] != _TX_KEY:
        return None
    i = _BODY_AT
    tag = raw[i:i + 1]
    if tag == b"\xc4":  # the shortest bin header for each length is the canonical one
        n, start, shortest = raw[i + 1] if len(raw) > i + 1 else -1, i + 2, True
    elif tag == b"\xc5":
        n, start = int.from_bytes(raw[i + 1:i + 3], "big"), i + 3
        shortest = n > 0xFF
    elif tag == b"\xc6":
        n, start = int.from_bytes(raw[i + 1:i + 5], "big"), i + 5
        shortest = n > 0xFFFF
    else:
        return None
    if not shortest or n < 0 or start + n != len(raw):
        return None
    return raw[len(_ENV_HEAD):_SIG_END], raw[start:]


@dataclass(frozen=True, slots=True)
class SignedTx:
    raw: bytes
    body_bytes: bytes
    sig: bytes
    hash: bytes
    chain: str
    kind: str
    sender: bytes
    nonce: int
    body: dict[str, Any] = field(compare=False, repr=False)

    @property
    def hash_hex(self) -> str:
        return self.hash.hex()

    @classmethod
    def from_wire(cls, raw: bytes) -> SignedTx:
        """Strictly decode an envelope and its body; raises CodecError or FieldError."""
        parts = _split_envelope(raw)
        if parts is not None:
            return cls._from_parts(raw, parts[1], parts[0])
        env = expect_map(codec.decode(raw, TX_LIMITS), "signed tx")
        only_keys(env, {"sig", "tx"}, "signed tx")
        sig = req_bytes(env, "sig", size=SIGNATURE_SIZE)
        body_bytes = req_bytes(env, "tx", max_size=MAX_TX_BYTES)
        return cls._from_parts(raw, body_bytes, sig)

    @classmethod
    def _from_parts(cls, raw: bytes, body_bytes: bytes, sig: bytes) -> SignedTx:
        body = expect_map(codec.decode(body_bytes, TX_LIMITS), "tx body")
        chain = req_str(body, "chain", max_len=MAX_CHAIN_LEN, min_len=1)
        kind = req_str(body, "kind", max_len=MAX_KIND_LEN, min_len=1)
        sender = req_bytes(body, "from", size=PUBLIC_KEY_SIZE)
        nonce = req_int(body, "nonce", lo=0, hi=MAX_NONCE)
        return cls(raw=raw, body_bytes=body_bytes, sig=sig, hash=sha256(body_bytes), chain=chain,
                   kind=kind, sender=sender, nonce=nonce, body=body)

    def verify_signature(self) -> bool:
        return verify(self.sender, DOMAIN_TX, self.body_bytes, self.sig)

    @classmethod
    def create(cls, key: PrivateKey, body: dict[str, Any]) -> SignedTx:
        """Sign a body (its `from` is set to the key's public key when absent)."""
        body = dict(body)
        body.setdefault("from", key.public_key)
        if body["from"] != key.public_key:
            raise FieldError("field 'from' does not match the signing key")
        body_bytes = codec.encode(body)
        sig = key.sign(DOMAIN_TX, body_bytes)
        raw = codec.encode({"sig": sig, "tx": body_bytes})
        return cls._from_parts(raw, body_bytes, sig)
