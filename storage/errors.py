"""The storage layer's error tree.

Rule: nothing above storage ever sees a raw plyvel exception. Every failure is a `StorageError` subclass
with a stable, machine-readable `code` (the node logs it and the API may return it); codes never change
meaning once released.
"""

from __future__ import annotations

from storage.schema import describe

RESYNC = "resync from peers: stop the node, move the data dir{where} aside, start it to state sync"


class StorageError(Exception):
    """Root of every error raised by the storage layer."""

    code = "storage_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class DatabaseLocked(StorageError):
    """Another process (or another handle in this process) holds the database lock."""

    code = "db_locked"


class DatabaseCorrupt(StorageError):
    """The database files are corrupt or inconsistent with themselves: a checksum, a decode or a
    cross-check (block hash, receipt, tx index) failed. The message names the damaged key when one is
    known (`key`) and always ends with the way out (`RESYNC`); nothing read from it is ever served."""

    code = "db_corrupt"

    def __init__(self, message: str, *, key: bytes | None = None, path: str | None = None) -> None:
        self.key = key
        damaged = f"; damaged: {describe(key)}" if key is not None else ""
        way_out = RESYNC.format(where=f" {path}" if path else "")
        super().__init__(f"{message}{damaged}; {way_out}")

    @property
    def key_name(self) -> str | None:
        return describe(self.key) if self.key is not None else None


class DatabaseUnavailable(StorageError):
    """The operating system refused access to the database files (permissions, missing directory):
    nothing is known to be damaged, so the fix is the file system, not a resync."""

    code = "db_unavailable"


class DatabaseNotFound(StorageError):
    """`create=False` and there is no database at the path."""

    code = "db_not_found"


class DatabaseWriteFailed(StorageError):
    """A write did not reach the disk (disk full, I/O error): nothing of that batch is visible."""

    code = "db_write_failed"


class DatabaseClosed(StorageError):
    code = "db_closed"


class StaleStage(StorageError):
    """A staged state change was computed against a state root that is no longer current."""

    code = "stale_stage"


class HeightMismatch(StorageError):
    """A block commit that does not extend the stored chain by exactly one height."""

    code = "height_mismatch"


class GenesisMismatch(StorageError):
    """The node home belongs to a different chain id or genesis."""

    code = "genesis_mismatch"


class SnapshotError(StorageError):
    """A state snapshot chunk is malformed, out of order, or the rebuilt root is wrong."""

    code = "snapshot_invalid"


class SnapshotRootMismatch(SnapshotError):
    code = "snapshot_root_mismatch"


class WalFull(StorageError):
    """The consensus WAL reached its bound; the owner must prune (at a stable checkpoint) first."""

    code = "wal_full"


class RecordTooLarge(StorageError):
    code = "record_too_large"
