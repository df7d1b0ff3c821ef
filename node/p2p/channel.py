"""The sealed channel after the handshake: SecretBox per direction with an explicit counter nonce.

Wire of a sealed payload: 8-byte big-endian counter, then the SecretBox ciphertext (MAC + data) under
the 24-byte nonce `counter || 16 zero bytes`. Each direction has its own key, derived from the X25519
shared secret and the transcript hash with a distinct label, and its own counter starting at 0.

Rule: the receiver accepts exactly the next counter; a replayed, skipped or reordered counter, or a
payload that does not authenticate, raises `ChannelError` and the connection must be closed. Sans-I/O.
"""

from __future__ import annotations

import hashlib

from nacl.bindings import crypto_secretbox, crypto_secretbox_open
from nacl.exceptions import CryptoError

from node.p2p.errors import ChannelError

COUNTER_SIZE = 8
MAC_SIZE = 16
OVERHEAD = COUNTER_SIZE + MAC_SIZE
_NONCE_PAD = b"\x00" * 16
KEY_LABEL_I2R = b"sml-p2p-i2r"  # initiator -> responder
KEY_LABEL_R2I = b"sml-p2p-r2i"


def derive_key(shared: bytes, transcript_hash: bytes, label: bytes) -> bytes:
    """32-byte SecretBox key: keyed BLAKE2b(transcript hash) with the shared secret as key, per label."""
    return hashlib.blake2b(transcript_hash, digest_size=32, key=shared, person=label).digest()


class SecureChannel:
    __slots__ = ("_rx_key", "_rx_next", "_tx_key", "_tx_next")

    def __init__(self, tx_key: bytes, rx_key: bytes) -> None:
        self._tx_key = tx_key
        self._rx_key = rx_key
        self._tx_next = 0
        self._rx_next = 0

    @classmethod
    def from_secret(cls, shared: bytes, transcript_hash: bytes, initiator: bool) -> SecureChannel:
        i2r = derive_key(shared, transcript_hash, KEY_LABEL_I2R)
        r2i = derive_key(shared, transcript_hash, KEY_LABEL_R2I)
        return cls(i2r, r2i) if initiator else cls(r2i, i2r)

    @property
    def sent(self) -> int:
        return self._tx_next

    @property
    def received(self) -> int:
        return self._rx_next

    def seal(self, plaintext: bytes) -> bytes:
        """The sealed payload (without the 4-byte length header) for the next outgoing counter."""
        ctr = self._tx_next.to_bytes(COUNTER_SIZE, "big")
        self._tx_next += 1
        return ctr + crypto_secretbox(plaintext, ctr + _NONCE_PAD, self._tx_key)

    def open(self, payload: bytes) -> bytes:
        if len(payload) < OVERHEAD:
            raise ChannelError("sealed frame shorter than its overhead", reason="short_frame")
        ctr = payload[:COUNTER_SIZE]
        n = int.from_bytes(ctr, "big")
        if n != self._rx_next:
            reason = "replayed_counter" if n < self._rx_next else "counter_gap"
            raise ChannelError(f"frame counter {n}, expected {self._rx_next}", reason=reason)
        try:
            plain = crypto_secretbox_open(payload[COUNTER_SIZE:], ctr + _NONCE_PAD, self._rx_key)
        except CryptoError as exc:
            raise ChannelError("frame does not authenticate", reason="decrypt_failed") from exc
        self._rx_next = n + 1
        return bytes(plain)
