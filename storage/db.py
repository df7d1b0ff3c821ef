"""The one LevelDB handle: open/close, reads, atomic write batches, snapshots and prefixed views.

Rule: this is the only module that imports plyvel. Every plyvel exception is translated here into a
`StorageError` subclass with a stable code (`db_locked`, `db_corrupt`, `db_unavailable`, `db_not_found`,
`db_write_failed`, `db_closed`); callers never see a plyvel traceback. A batch is all-or-nothing: an
exception inside `with db.batch():` discards it, and a failed write leaves nothing of it visible.

Integrity: the database is opened with `paranoid_checks` (a damaged log record or table refuses the open
instead of being skipped) and every read, live or from a snapshot, verifies the block checksums, so a
flipped byte in a table file is `db_corrupt` naming the key read, never a different value.

Modes: the directory is created 0700 (with any missing parent) and LevelDB's info log is set to 0644
like its other files, whatever the umask; the seal file is 0600.

One gap is LevelDB's by design: a log record cut short at the very end of the log reads as a write that
never finished (a torn write in a power cut), so a damaged length field there silently drops the newest
writes. A clean close therefore seals the database: its last write is a random `META_SEAL`, also written
to the file `SEAL_FILE` beside the tables. Opening a sealed database checks that the seal survived
(`db_corrupt` if not) and removes the file, so a database that was not closed cleanly is not judged by it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import plyvel

from storage.errors import (
    DatabaseClosed,
    DatabaseCorrupt,
    DatabaseLocked,
    DatabaseNotFound,
    DatabaseUnavailable,
    DatabaseWriteFailed,
    StorageError,
)
from storage.schema import META_SEAL, prefix_end

SEAL_FILE = "SMELEDGER-SEAL"  # not a LevelDB file name: LevelDB leaves it alone

Op = tuple[bytes, bytes | None]
"""A write: (full key, value) or (full key, None) for a delete."""


def _text(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def _read_error(exc: BaseException, what: str, key: bytes | None, path: str) -> StorageError:
    if isinstance(exc, RuntimeError):
        return DatabaseClosed(f"{what}: the database is closed")
    return DatabaseCorrupt(f"{what}: {_text(exc)}", key=key, path=path)


def _make_private_dirs(path: str) -> None:
    """Create `path` and each missing parent with mode 0700, whatever the umask: only the node's user
    goes in (LevelDB creates its files 0644 inside)."""
    missing = []
    d = os.path.abspath(path)
    while not os.path.isdir(d):
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):
        os.mkdir(d, 0o700)
        os.chmod(d, 0o700)


def _fix_info_log_modes(path: str) -> None:
    """LevelDB creates its info log (`LOG`, `LOG.old`) with the umask's mode, its other files 0644."""
    for name in ("LOG", "LOG.old"):
        try:
            os.chmod(os.path.join(path, name), 0o644)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise DatabaseUnavailable(f"cannot set the mode of {os.path.join(path, name)}: {exc.strerror}") from exc


def _sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(exc: BaseException, what: str, path: str) -> StorageError:
    if isinstance(exc, RuntimeError):
        return DatabaseClosed(f"{what} failed: the database is closed")
    if isinstance(exc, plyvel.CorruptionError):  # a compaction met damage: LevelDB refuses every write
        return DatabaseCorrupt(f"{what} refused: LevelDB found damaged table data ({_text(exc)})", path=path)
    return DatabaseWriteFailed(f"{what} failed: {_text(exc)}")


def _guarded(it: Any, path: str) -> Iterator[tuple[bytes, bytes]]:
    """Translate errors raised while iterating; the error names the last key read before the damage."""
    last: bytes | None = None
    try:
        for item in it:
            last = item[0]
            yield item
    except (plyvel.Error, RuntimeError) as exc:
        raise _read_error(exc, "iteration failed after the key named here" if last is not None
                          else "iteration failed", last, path) from exc


def _iterate(source: Any, what: str, path: str, start: bytes | None, stop: bytes | None, prefix: bytes | None,
             reverse: bool) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of a plyvel DB or snapshot with start <= key < stop, or under `prefix`."""
    if prefix is not None:
        start, stop = prefix, prefix_end(prefix)
    try:
        it = source.iterator(start=start, stop=stop, reverse=reverse, verify_checksums=True)
    except (plyvel.Error, RuntimeError) as exc:
        raise _read_error(exc, what, start, path) from exc
    return _guarded(it, path)


class WriteBatch:
    """Puts and deletes collected for one atomic write."""

    __slots__ = ("_wb", "count")

    def __init__(self, wb: Any) -> None:
        self._wb = wb
        self.count = 0

    def put(self, key: bytes, value: bytes) -> None:
        self._wb.put(key, value)
        self.count += 1

    def delete(self, key: bytes) -> None:
        self._wb.delete(key)
        self.count += 1

    def apply(self, ops: Iterable[Op]) -> None:
        put = self._wb.put
        delete = self._wb.delete
        n = 0
        for key, value in ops:
            if value is None:
                delete(key)
            else:
                put(key, value)
            n += 1
        self.count += n


class Snapshot:
    """A consistent read-only view of the whole database at one instant. Close it when done."""

    __slots__ = ("_snap", "path")

    def __init__(self, snap: Any, path: str) -> None:
        self._snap = snap
        self.path = path

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._snap.get(key, verify_checksums=True)
        except (plyvel.Error, RuntimeError) as exc:
            raise _read_error(exc, "snapshot read failed", key, self.path) from exc
        return value

    def iterate(self, start: bytes | None = None, stop: bytes | None = None, *,
                prefix: bytes | None = None, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Ascending (or descending) (key, value) pairs with start <= key < stop, or under `prefix`."""
        return _iterate(self._snap, "snapshot iteration failed", self.path, start, stop, prefix, reverse)

    def close(self) -> None:
        self._snap.close()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class PrefixedView:
    """Reads and single writes under one schema prefix, with keys relative to it."""

    __slots__ = ("_db", "prefix")

    def __init__(self, db: Database, prefix: bytes) -> None:
        self._db = db
        self.prefix = prefix

    def key(self, key: bytes) -> bytes:
        return self.prefix + key

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(self.prefix + key)

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self._db.put(self.prefix + key, value, sync=sync)

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        self._db.delete(self.prefix + key, sync=sync)

    def iterate(self, start: bytes = b"", stop: bytes | None = None, *,
                reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """(relative key, value) pairs with start <= key < stop (stop None: to the prefix's end)."""
        p = self.prefix
        n = len(p)
        full_stop = prefix_end(p) if stop is None else p + stop
        for k, v in self._db.iterate(p + start, full_stop, reverse=reverse):
            yield k[n:], v


class Database:
    """A LevelDB database opened through plyvel. Thread-safe for reads and writes (LevelDB is)."""

    __slots__ = ("_db", "path")

    def __init__(self, raw: Any, path: str) -> None:
        self._db = raw
        self.path = path

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True, cache_mb: int = 64,
             write_buffer_mb: int = 32, max_open_files: int = 512) -> Database:
        """Open (and with `create`, create) the database at `path`; raises a StorageError on failure."""
        p = os.fspath(path)
        try:
            if create and not os.path.exists(p):
                _make_private_dirs(p)
        except OSError as exc:
            raise DatabaseUnavailable(f"cannot create database directory {p}: {exc.strerror}") from exc
        try:
            # paranoid_checks: a damaged log record or table refuses the open. LevelDB's log reader still
            # treats a record cut short at the very end of the log as never written (a torn write after
            # a power cut), which is only possible for a write that was never acknowledged as synced.
            # Bloom filters keep reads of absent keys (tx index, key owners) one probe as history grows.
            raw = plyvel.DB(p, create_if_missing=create, paranoid_checks=True, bloom_filter_bits=10,
                            lru_cache_size=cache_mb * 1024 * 1024,
                            write_buffer_size=write_buffer_mb * 1024 * 1024,
                            max_open_files=max_open_files)
        except plyvel.CorruptionError as exc:
            raise DatabaseCorrupt(f"database at {p} is corrupt: {_text(exc)}", path=p) from exc
        except plyvel.IOError as exc:
            text = _text(exc)
            if "lock" in text.lower() and ("held" in text or "unavailable" in text.lower()):
                raise DatabaseLocked(f"database at {p} is in use by another process "
                                     f"(is a node already running on this home?): {text}") from exc
            if "permission denied" in text.lower() or "not a directory" in text.lower():
                raise DatabaseUnavailable(f"cannot open database at {p}: {text}; check node.data_dir and that "
                                          "the node's user may use it") from exc
            raise DatabaseCorrupt(f"cannot read database at {p}: {text}", path=p) from exc
        except plyvel.Error as exc:
            text = _text(exc)
            if "does not exist" in text:
                raise DatabaseNotFound(f"no database at {p}") from exc
            raise DatabaseCorrupt(f"cannot open database at {p}: {text}", path=p) from exc
        db = cls(raw, p)
        try:
            _fix_info_log_modes(p)
            db._unseal()
        except BaseException:
            raw.close()
            raise
        return db

    def _unseal(self) -> None:
        seal = os.path.join(self.path, SEAL_FILE)
        try:
            with open(seal, "rb") as f:
                expected = f.read()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise DatabaseUnavailable(f"cannot read {seal}: {exc.strerror}") from exc
        if self.get(META_SEAL) != expected:
            raise DatabaseCorrupt("writes made before the last clean stop are missing (the seal written at "
                                  "that stop is not in the database: LevelDB dropped the end of its log or "
                                  "manifest)", key=META_SEAL, path=self.path)
        os.unlink(seal)
        _sync_dir(self.path)

    def _seal(self) -> None:
        value = os.urandom(16)
        self._db.put(META_SEAL, value, sync=True)
        tmp = os.path.join(self.path, SEAL_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, value)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(self.path, SEAL_FILE))
        _sync_dir(self.path)

    @property
    def closed(self) -> bool:
        return bool(self._db.closed)

    def close(self) -> None:
        """Seal (see the module rule) and close; idempotent. A failed seal still closes, then raises."""
        if self._db.closed:
            return
        try:
            self._seal()
        except OSError as exc:
            self._db.close()
            raise DatabaseWriteFailed(f"sealing the database at close failed: {exc.strerror or exc}") from exc
        except plyvel.Error as exc:
            self._db.close()
            raise _write_error(exc, "sealing the database at close", self.path) from exc
        self._db.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- reads ---------------------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key, verify_checksums=True)
        except (plyvel.Error, RuntimeError) as exc:
            raise _read_error(exc, "read failed", key, self.path) from exc
        return value

    def iterate(self, start: bytes | None = None, stop: bytes | None = None, *,
                prefix: bytes | None = None, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs with start <= key < stop, or every key under `prefix`, in key order."""
        return _iterate(self._db, "iteration failed", self.path, start, stop, prefix, reverse)

    def snapshot(self) -> Snapshot:
        try:
            return Snapshot(self._db.snapshot(), self.path)
        except (plyvel.Error, RuntimeError) as exc:
            raise _read_error(exc, "snapshot failed", None, self.path) from exc

    def prefixed(self, prefix: bytes) -> PrefixedView:
        return PrefixedView(self, prefix)

    # -- writes --------------------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        try:
            self._db.put(key, value, sync=sync)
        except (plyvel.Error, RuntimeError) as exc:
            raise _write_error(exc, "write", self.path) from exc

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        try:
            self._db.delete(key, sync=sync)
        except (plyvel.Error, RuntimeError) as exc:
            raise _write_error(exc, "write", self.path) from exc

    @contextmanager
    def batch(self, *, sync: bool = True) -> Iterator[WriteBatch]:
        """Collect writes and apply them atomically on exit; an exception inside discards them all."""
        try:
            wb = self._db.write_batch(sync=sync)
        except RuntimeError as exc:
            raise DatabaseClosed("batch failed: the database is closed") from exc
        batch = WriteBatch(wb)
        try:
            yield batch
        except BaseException:
            wb.clear()
            raise
        try:
            wb.write()
        except (plyvel.Error, RuntimeError) as exc:
            raise _write_error(exc, f"batch of {batch.count} writes (none applied)", self.path) from exc

    def write(self, ops: Iterable[Op], *, sync: bool = True) -> None:
        """Apply `ops` as one atomic batch."""
        with self.batch(sync=sync) as b:
            b.apply(ops)

    def delete_prefix(self, prefix: bytes, batch: WriteBatch) -> int:
        """Add a delete of every key under `prefix` to `batch`; returns how many."""
        n = 0
        for key, _value in self.iterate(prefix=prefix):
            batch.delete(key)
            n += 1
        return n
