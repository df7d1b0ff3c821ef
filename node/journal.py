"""The accepted-tx journal file: an append-only log of length + CRC framed records in the node's data dir.

Why a file of its own, not LevelDB keys: it is what an operator can reason about and what geth does for
its local txs. One append-only file (`<data_dir>/journal/accepted.log`, inside the LevelDB directory's
lock, so a second node on the same home fails at the database before it could touch the journal); every
record framed as `u32 length | u32 CRC-32 of the record | record`, so a torn write after a crash is found
by its length or CRC, cut off and logged, never replayed and never a traceback; one `fdatasync` per group
of appends (a POST batch, or several that arrived together), done by ONE journal thread that never waits
behind a block commit on the store's writer thread (and a block commit never waits behind it). Wiping the
data dir wipes the journal with it: its promises were made against that chain data. The directory is
0700 and the file 0600 whatever the umask (node/files.py): it holds what clients sent, for this node only.

Records (the first byte names the kind; integers big-endian):
    `A` + tx hash (32) + raw signed tx       accepted by this node's API: re-admit after a restart
    `C` + tx hash (32)                       left the journal: committed (the chain now holds it)
    `D` + tx hash (32) + time ms u64 + reason (ascii, <= 64)   dropped with a reason (leaves the journal too)
The file starts with `MAGIC`. Replay applies the records in order. `rewrite` (compaction) replaces the file
by one holding only what replay would keep, written to a temporary file, synced, renamed over the old one
and the directory synced, so a crash leaves either the old file or the new one.

Rule: this module owns the bytes on disk and nothing else: it never touches the mempool or the event loop.
A record longer than `max_record` is refused when written and treated as corruption when read. A bad frame
ends the replay: it and everything after it is the tail that is cut. A file that does not start with
`MAGIC` is not cut (it may not be ours): opening it fails with `JournalCorrupt` naming the file.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from node import failpoints
from node.errors import NodeError
from node.files import PRIVATE_FILE, fsync_dir, make_private_dir
from protocol.tx import MAX_TX_BYTES

MAGIC = b"smljrn\x00\x01"  # 8 bytes: name and format version
FRAME_HEADER = struct.Struct(">II")  # record length, CRC-32 of the record
HASH = 32
MAX_REASON = 64
ADD, COMMITTED, DROPPED = b"A", b"C", b"D"
MAX_RECORD = 1 + HASH + MAX_TX_BYTES  # the largest record: an `A` record of the largest tx
FILE_NAME = "accepted.log"


class JournalError(NodeError):
    """The journal cannot be written (disk full, I/O error): the node stops (fail-stop)."""

    code = "journal_failed"
    http_status = 503


class JournalCorrupt(JournalError):
    """The journal file is not a journal (wrong header) or holds a record no version wrote."""

    code = "journal_corrupt"


@dataclass(frozen=True, slots=True)
class Dropped:
    reason: str
    at_ms: int  # wall-clock ms when this node dropped the tx


@dataclass
class Replayed:
    """What a journal file holds after replay: accepted txs still open (hash -> raw, in acceptance order),
    dropped txs (hash -> why, oldest first), and the tail that was cut, if any."""

    live: OrderedDict[bytes, bytes]
    dropped: OrderedDict[bytes, Dropped]
    file_bytes: int
    cut_bytes: int = 0
    cut_reason: str = ""  # truncated | bad_crc | too_large | empty_record


# ---- records and frames (pure) ----------------------------------------------------------------------

def add_record(tx_hash: bytes, raw: bytes) -> bytes:
    return ADD + tx_hash + raw


def committed_record(tx_hash: bytes) -> bytes:
    return COMMITTED + tx_hash


def dropped_record(tx_hash: bytes, info: Dropped) -> bytes:
    reason = info.reason.encode("ascii")
    if not 0 < len(reason) <= MAX_REASON:
        raise ValueError(f"a drop reason is 1..{MAX_REASON} ascii characters")
    return DROPPED + tx_hash + info.at_ms.to_bytes(8, "big") + reason


def frame(record: bytes, max_record: int = MAX_RECORD) -> bytes:
    """`record` behind its length and CRC; a record over `max_record` bytes is refused (ValueError)."""
    if not 0 < len(record) <= max_record:
        raise ValueError(f"a journal record is 1..{max_record} bytes, not {len(record)}")
    return FRAME_HEADER.pack(len(record), zlib.crc32(record)) + record


def apply_record(record: bytes, live: OrderedDict[bytes, bytes], dropped: OrderedDict[bytes, Dropped]) -> None:
    """Replay one CRC-checked record; raises JournalCorrupt for a kind or layout no version wrote."""
    kind, h = record[:1], record[1:1 + HASH]
    if kind == ADD and len(record) > 1 + HASH:
        live[h] = record[1 + HASH:]
        live.move_to_end(h)
    elif kind == COMMITTED and len(record) == 1 + HASH:
        live.pop(h, None)
    elif kind == DROPPED and 1 + HASH + 8 < len(record) <= 1 + HASH + 8 + MAX_REASON:
        live.pop(h, None)
        at = int.from_bytes(record[1 + HASH:1 + HASH + 8], "big")
        try:
            reason = record[1 + HASH + 8:].decode("ascii")
        except UnicodeDecodeError:
            raise JournalCorrupt("journal record with a non-ascii drop reason") from None
        dropped.pop(h, None)
        dropped[h] = Dropped(reason, at)
    else:
        raise JournalCorrupt(f"journal record of kind {kind!r} and {len(record)} bytes is not one this "
                             "version writes (a newer node wrote it?)")


def read_frames(f: BinaryIO, max_record: int) -> Iterable[tuple[int, bytes | str]]:
    """(offset, record) for each good frame from the current position; then, if the data ends in a bad
    frame, one last (offset, reason) and nothing more."""
    offset = f.tell()
    while True:
        head = f.read(FRAME_HEADER.size)
        if not head:
            return
        if len(head) < FRAME_HEADER.size:
            yield offset, "truncated"
            return
        length, crc = FRAME_HEADER.unpack(head)
        if length == 0:
            yield offset, "empty_record"
            return
        if length > max_record:
            yield offset, "too_large"
            return
        record = f.read(length)
        if len(record) < length:
            yield offset, "truncated"
            return
        if zlib.crc32(record) != crc:
            yield offset, "bad_crc"
            return
        yield offset, record
        offset += FRAME_HEADER.size + length


# ---- the file (journal thread only) -----------------------------------------------------------------

class JournalFile:
    """The open journal file. Every method runs on the journal thread; OSError becomes JournalError."""

    def __init__(self, directory: Path, max_record: int = MAX_RECORD) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME
        self.max_record = max_record
        self._fd = -1
        self.syncs = 0  # fdatasync calls so far (the group-commit figure)

    def open(self) -> Replayed:
        """Create the file if missing; otherwise replay it, cutting a bad tail (truncate + sync)."""
        try:
            if not self.directory.is_dir():
                make_private_dir(self.directory, parents=True)  # 0700 whatever the umask (node/files.py)
                fsync_dir(self.directory.parent)  # the new directory's entry is durable too
            if not self.path.exists() or self.path.stat().st_size < len(MAGIC):
                self._create()
                return Replayed(OrderedDict(), OrderedDict(), len(MAGIC))
            replayed = self.replay()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            if replayed.cut_bytes:
                os.ftruncate(self._fd, replayed.file_bytes)
                os.fdatasync(self._fd)
            return replayed
        except OSError as exc:
            raise JournalError(f"cannot open the tx journal {self.path}: {exc.strerror or exc}") from exc

    def _create(self) -> None:
        """A new file holding only MAGIC (a torn one from a crash at creation is replaced)."""
        self._write_new([])

    def replay(self) -> Replayed:
        """Read the file without changing it (`open` cuts the tail this reports)."""
        live: OrderedDict[bytes, bytes] = OrderedDict()
        dropped: OrderedDict[bytes, Dropped] = OrderedDict()
        size = self.path.stat().st_size
        with self.path.open("rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise JournalCorrupt(f"{self.path} does not start with the journal header; move it aside "
                                     "if it is not a smeledger tx journal")
            good = len(MAGIC)
            for offset, item in read_frames(f, self.max_record):
                if isinstance(item, str):
                    return Replayed(live, dropped, offset, size - offset, item)
                try:
                    apply_record(item, live, dropped)
                except JournalCorrupt as exc:
                    raise JournalCorrupt(f"{self.path} at byte {offset}: {exc}") from None
                good = offset + FRAME_HEADER.size + len(item)
        return Replayed(live, dropped, good)

    def append(self, records: list[bytes], sync: bool, accepted: bool = False) -> int:
        """Write the records' frames with one write and (when `sync`) ONE fdatasync; returns bytes written.
        `accepted`: the write makes accepted txs durable (the `journal.*_sync` failure points fire then)."""
        data = b"".join(frame(r, self.max_record) for r in records)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            if sync:
                if accepted:
                    failpoints.hit("journal.before_sync")
                os.fdatasync(self._fd)
                self.syncs += 1
                if accepted:
                    failpoints.hit("journal.after_sync")
        except OSError as exc:
            raise JournalError(f"cannot write the tx journal {self.path}: {exc.strerror or exc}") from exc
        return len(data)

    def rewrite(self, records: Iterable[bytes], accepted: bool = False) -> int:
        """Replace the file by one holding exactly `records` (compaction); returns the new size.
        `accepted`: as for `append` (a compaction may be what makes a waiting batch durable)."""
        try:
            if accepted:
                failpoints.hit("journal.before_sync")
            size = self._write_new(records)
            if accepted:
                failpoints.hit("journal.after_sync")
        except OSError as exc:
            raise JournalError(f"cannot compact the tx journal {self.path}: {exc.strerror or exc}") from exc
        return size

    def _write_new(self, records: Iterable[bytes]) -> int:
        tmp = self.path.with_suffix(".tmp")
        data = MAGIC + b"".join(frame(r, self.max_record) for r in records)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        try:
            os.fchmod(fd, PRIVATE_FILE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        fsync_dir(self.directory)
        self.syncs += 1
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        return len(data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
