"""The consensus write-ahead log: records the replica must see again after a crash (its own votes).

Rule: `append` / `append_many` return only after the records are on disk (one synced LevelDB write),
so the driver may act on them (send the vote) afterwards. Records are opaque bytes, replayed in append
order by `records()`. Each record is stored behind its CRC-32, so damage is seen when the log is opened: a
damaged or truncated TAIL (the last records, as a crash in the middle of a write or a torn sector leaves
them) is cut in one synced batch and reported in `cut` for the node to log; a vote is sent only after its
record was synced, so a record that never became whole was never acted on. A damaged record with intact
records after it is not a torn tail but a damaged database: `DatabaseCorrupt`, naming the way out. The
log is bounded: at most `max_records` records, `max_bytes` bytes in total and
`max_record_bytes` per record; the node passes the sizes `protocol.limits` derives for its chain (so any
block a proposer may build fits a record), the defaults fit the protocol's largest block with 64
validators. Appending past a bound raises `WalFull`/`RecordTooLarge` and writes nothing; the owner drops
what it no longer needs after each commit (`drop`), which keeps the log a few records long. A single
writer (the consensus driver, on the store's writer thread) owns it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

from protocol.limits import BLOCK_MAX_TX_BYTES, BLOCK_MAX_TXS, SizeLimits
from storage import schema
from storage.db import Database
from storage.errors import DatabaseCorrupt, RecordTooLarge, WalFull

DEFAULT_MAX_RECORDS = 100_000
_DEFAULT = SizeLimits.derive(BLOCK_MAX_TXS, BLOCK_MAX_TX_BYTES, 64)
DEFAULT_MAX_BYTES = _DEFAULT.wal_bytes
DEFAULT_MAX_RECORD_BYTES = _DEFAULT.wal_record_bytes
CRC_BYTES = 4
RESYNC_HINT = ("stop the node, move its data directory aside and start it again: it state-syncs from its "
               "peers (its own votes are re-learned from them)")


def frame(record: bytes) -> bytes:
    """The stored form of a record: its CRC-32 (big-endian) and the record."""
    return zlib.crc32(record).to_bytes(CRC_BYTES, "big") + record


def unframe(value: bytes) -> bytes | None:
    """The record inside a stored value, or None when the value is truncated or damaged."""
    if len(value) < CRC_BYTES:
        return None
    record = value[CRC_BYTES:]
    return record if zlib.crc32(record).to_bytes(CRC_BYTES, "big") == value[:CRC_BYTES] else None


class ConsensusWal:
    """Sequence-numbered, synced, bounded consensus records under the `W` prefix."""

    def __init__(self, db: Database, *, max_records: int = DEFAULT_MAX_RECORDS,
                 max_bytes: int = DEFAULT_MAX_BYTES, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        self.db = db
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_record_bytes = max_record_bytes
        self._sizes: dict[int, int] = {}
        self._bytes = 0
        self.cut: list[int] = []  # sequence numbers of a damaged tail cut at open (the node logs them)
        damaged: list[int] = []
        for k, v in db.iterate(prefix=schema.WAL):
            if len(k) != 1 + schema.U64:
                raise DatabaseCorrupt(f"malformed consensus WAL key {k.hex()} in {db.path}; {RESYNC_HINT}")
            seq = schema.read_u64(k[1:])
            record = unframe(v)
            if record is None:
                damaged.append(seq)
                continue
            if damaged:
                raise DatabaseCorrupt(f"consensus WAL record {damaged[0]} in {db.path} is damaged and records "
                                      f"after it are intact: the database is corrupt; {RESYNC_HINT}")
            self._sizes[seq] = len(record)
            self._bytes += len(record)
        if damaged:
            with db.batch(sync=True) as b:
                for seq in damaged:
                    b.delete(schema.wal_key(seq))
            self.cut = damaged
        self._next = max([*self._sizes, *damaged], default=-1) + 1

    def __len__(self) -> int:
        return len(self._sizes)

    @property
    def total_bytes(self) -> int:
        return self._bytes

    @property
    def next_seq(self) -> int:
        return self._next

    def append(self, record: bytes) -> int:
        """Durably append one record; returns its sequence number."""
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[bytes], drop: Sequence[int] = ()) -> list[int]:
        """Durably append records together (one synced batch); returns their sequence numbers. The records
        `drop` names (the owner's compaction) leave in the same batch, so they cost no write of their own;
        the bounds count the log after the drop."""
        gone = [s for s in dict.fromkeys(drop) if s in self._sizes]
        size = 0
        for r in records:
            if len(r) > self.max_record_bytes:
                raise RecordTooLarge(f"WAL record of {len(r)} bytes exceeds {self.max_record_bytes}")
            size += len(r)
        kept_records = len(self._sizes) - len(gone)
        kept_bytes = self._bytes - sum(self._sizes[s] for s in gone)
        if kept_records + len(records) > self.max_records or kept_bytes + size > self.max_bytes:
            raise WalFull(f"consensus WAL is full ({len(self._sizes)} records, {self._bytes} bytes); "
                          "prune it at a stable checkpoint")
        seqs = list(range(self._next, self._next + len(records)))
        with self.db.batch(sync=True) as b:
            for s in gone:
                b.delete(schema.wal_key(s))
            for seq, r in zip(seqs, records, strict=True):
                b.put(schema.wal_key(seq), frame(r))
        for s in gone:
            del self._sizes[s]
        for seq, r in zip(seqs, records, strict=True):
            self._sizes[seq] = len(r)
        self._bytes = kept_bytes + size
        self._next += len(records)
        return seqs

    def records(self) -> list[bytes]:
        """Every record in append order (for restoring the replica)."""
        return [r for _seq, r in self.entries()]

    def entries(self) -> list[tuple[int, bytes]]:
        """(sequence number, record) pairs in append order."""
        out = []
        for k, v in self.db.iterate(prefix=schema.WAL):
            record = unframe(v)
            if record is None:  # checked whole at open; damage since then is damage at rest
                raise DatabaseCorrupt(f"consensus WAL record {schema.read_u64(k[1:])} in {self.db.path} was "
                                      f"damaged while the node ran; {RESYNC_HINT}")
            out.append((schema.read_u64(k[1:]), record))
        return out

    def prune(self, keep_from_seq: int) -> int:
        """Drop every record with sequence < keep_from_seq (one synced batch); returns how many."""
        doomed = [s for s in self._sizes if s < keep_from_seq]
        return self._drop(doomed)

    def prune_where(self, drop: Callable[[bytes], bool]) -> int:
        """Drop every record for which `drop(record)` is true (one synced batch); returns how many."""
        doomed = [seq for seq, r in self.entries() if drop(r)]
        return self._drop(doomed)

    def drop(self, seqs: Sequence[int], sync: bool = True) -> int:
        """Drop the records with these sequence numbers (one batch; `sync=False` when losing the drop in a
        crash is harmless, e.g. records the owner would compact away again); returns how many."""
        return self._drop([s for s in seqs if s in self._sizes], sync)

    def _drop(self, seqs: list[int], sync: bool = True) -> int:
        if not seqs:
            return 0
        with self.db.batch(sync=sync) as b:
            for s in seqs:
                b.delete(schema.wal_key(s))
        for s in seqs:
            self._bytes -= self._sizes.pop(s)
        return len(seqs)
