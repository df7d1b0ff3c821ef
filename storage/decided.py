"""Decided blocks that are not executed yet: the durable half of a pipelined commit.

Consensus decides block h and moves on to h+1 while h executes (docs/consensus.md, "Pipelining"). Before
it moves on, the block and its commit certificate are written here in one synced write, so a node that
crashes with h decided but not executed still knows h is decided: at the next start the driver executes
every entry above the stored height, in order, before consensus resumes. An entry is dropped once its
height is executed (the executed block is in the block store then).

Rule: entries are contiguous above the block store's height; a `put` is synced, a `drop` need not be
(an entry at or below the stored height is dropped again at the next start).
"""

from __future__ import annotations

from collections.abc import Iterator

from protocol import codec
from protocol.errors import ProtocolError
from storage import schema
from storage.db import Database
from storage.errors import DatabaseCorrupt

_LIMITS = codec.Limits(max_bytes=2**31, max_bin=2**31, max_depth=2, max_map=2)


class DecidedBlocks:
    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, height: int, block_bytes: bytes, certificate: bytes) -> None:
        self.db.put(schema.decided_key(height), codec.encode({"block": block_bytes, "cert": certificate}),
                    sync=True)

    def drop(self, height: int) -> None:
        self.db.delete(schema.decided_key(height), sync=False)

    def entries(self) -> Iterator[tuple[int, bytes, bytes]]:
        """(height, block bytes, certificate bytes) of every entry, ascending."""
        for k, v in self.db.iterate(prefix=schema.DECIDED):
            try:
                m = codec.decode(v, _LIMITS)
                block, cert = m["block"], m["cert"]
            except (ProtocolError, KeyError, TypeError) as exc:
                raise DatabaseCorrupt("a decided block record does not decode", key=k) from exc
            if not isinstance(block, bytes) or not isinstance(cert, bytes):
                raise DatabaseCorrupt("a decided block record is malformed", key=k)
            yield schema.read_u64(k[1:]), block, cert
