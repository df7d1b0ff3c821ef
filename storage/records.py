"""What a stored chain record must be before it is served: the checks behind the block store's reads,
and the bounded cache of blocks that passed them.

Rule: these functions see bytes already read and the facts to compare them with; they never read the
database. Each returns the decoded record or raises `DatabaseCorrupt` naming the key and the way out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from protocol import codec
from protocol.block import Block
from protocol.consensus.certs import CommitCertificate
from protocol.crypto import sha256
from protocol.errors import ProtocolError
from protocol.tx import SignedTx
from storage import schema
from storage.errors import DatabaseCorrupt

RECEIPT_STATUSES = ("ok", "failed")


def tx_hash_of(raw: bytes) -> bytes:
    """The tx hash (sha256 of the body bytes); an undecodable envelope is indexed by sha256(raw)."""
    try:
        return SignedTx.from_wire(raw).hash
    except ProtocolError:
        return sha256(raw)


def decode_block(height: int, raw: bytes, path: str) -> Block:
    """The block stored at `height`: it decodes, names that height, and its txs match its tx root."""
    key = schema.block_key(height)
    try:
        block = Block.decode(raw)
    except ProtocolError as exc:
        raise DatabaseCorrupt(f"stored block {height} does not decode ({exc.message})", key=key,
                              path=path) from exc
    if block.height != height:
        raise DatabaseCorrupt(f"the block stored at height {height} says height {block.height}", key=key,
                              path=path)
    return block


def check_certificate(height: int, raw: bytes, block_hash: bytes, path: str) -> None:
    """A stored commit certificate certifies block `block_hash` at `height`."""
    key = schema.certificate_key(height)
    try:
        cert = CommitCertificate.from_value(codec.decode(raw))
    except ProtocolError as exc:
        raise DatabaseCorrupt(f"the certificate of block {height} does not decode ({exc.message})", key=key,
                              path=path) from exc
    if cert.height != height or cert.block_hash != block_hash:
        raise DatabaseCorrupt(f"the certificate stored for block {height} certifies another block", key=key,
                              path=path)


def check_receipt(key: bytes, raw: bytes, tx_hash: bytes, path: str) -> None:
    """A stored receipt is a canonical receipt map of the tx `tx_hash` with a known status."""
    try:
        value = codec.decode(raw)
    except ProtocolError as exc:
        raise DatabaseCorrupt(f"a stored receipt does not decode ({exc.message})", key=key, path=path) from exc
    if not isinstance(value, dict) or value.get("tx_hash") != tx_hash or value.get("status") not in RECEIPT_STATUSES:
        raise DatabaseCorrupt("a stored receipt is not the receipt of the tx at its place", key=key, path=path)


class VerifiedBlocks:
    """Blocks that passed their checks, by height: (raw bytes, decoded block), least recently used first
    out once `max_bytes` (counted as twice the raw size) is exceeded. Thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[int, tuple[bytes, Block]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, height: int) -> tuple[bytes, Block] | None:
        with self._lock:
            hit = self._items.get(height)
            if hit is not None:
                self._items.move_to_end(height)
            return hit

    def put(self, height: int, raw: bytes, block: Block) -> None:
        size = 2 * len(raw)
        if size > self.max_bytes:
            return
        with self._lock:
            if height in self._items:
                return
            while self._items and self._bytes + size > self.max_bytes:
                self._bytes -= 2 * len(self._items.popitem(last=False)[1][0])
            self._items[height] = (raw, block)
            self._bytes += size
