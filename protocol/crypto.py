"""Ed25519 signatures with domain separation, SHA-256 hashing, and X25519 helpers.

Rule: every signature covers `domain || message`, where the domain is one of the ASCII tags below, so a
signature made for one purpose can never be replayed for another. This module holds no secrets beyond
the key objects handed to it and performs no I/O; callers supply any randomness (seeds) themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from nacl.bindings import (
    crypto_scalarmult,
    crypto_scalarmult_base,
    crypto_sign_ed25519_pk_to_curve25519,
)
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

DOMAIN_TX = b"smeledger:tx:v1"
DOMAIN_CONSENSUS = b"smeledger:consensus:v1"
DOMAIN_HANDSHAKE = b"smeledger:handshake:v1"
DOMAIN_CHECKPOINT = b"smeledger:checkpoint:v1"

PUBLIC_KEY_SIZE = 32
SEED_SIZE = 32
SIGNATURE_SIZE = 64
HASH_SIZE = 32


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class PrivateKey:
    """An Ed25519 signing key built from a 32-byte seed supplied by the caller."""

    __slots__ = ("_sk", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._sk = SigningKey(seed)
        self.public_key: bytes = bytes(self._sk.verify_key)

    @property
    def seed(self) -> bytes:
        return bytes(self._sk)

    def sign(self, domain: bytes, message: bytes) -> bytes:
        return bytes(self._sk.sign(domain + message).signature)

    def x25519_private(self) -> bytes:
        """The Curve25519 secret matching this key, for sealed memos to this account."""
        return bytes(self._sk.to_curve25519_private_key())

    def __repr__(self) -> str:
        return f"PrivateKey(public_key={self.public_key.hex()[:16]}...)"


def verify(public_key: bytes, domain: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature by `public_key` over `domain || message`."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        VerifyKey(public_key).verify(domain + message, signature)
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        return False
    return True


def x25519_public_from_ed25519(public_key: bytes) -> bytes:
    return bytes(crypto_sign_ed25519_pk_to_curve25519(public_key))


def x25519_public(secret: bytes) -> bytes:
    return bytes(crypto_scalarmult_base(secret))


def x25519_shared(secret: bytes, peer_public: bytes) -> bytes:
    return bytes(crypto_scalarmult(secret, peer_public))


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Binary Merkle root of already-hashed leaves (RFC 6962 style domain bytes); empty -> sha256(b'')."""
    if not leaves:
        return sha256(b"")
    level = [sha256(b"\x00" + leaf) for leaf in leaves]
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            if i + 1 < len(level):
                nxt.append(sha256(b"\x01" + level[i] + level[i + 1]))
            else:
                nxt.append(level[i])
        level = nxt
    return level[0]
