"""The plyvel wrapper: atomic batches, reopen, snapshots, and clear errors instead of plyvel tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from storage import schema
from storage.db import SEAL_FILE, Database
from storage.errors import (
    DatabaseClosed,
    DatabaseCorrupt,
    DatabaseLocked,
    DatabaseNotFound,
    DatabaseWriteFailed,
    StorageError,
)

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_reopening_after_close_keeps_every_write(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db")
    with db.batch() as b:
        for i in range(100):
            b.put(b"s%03d" % i, b"v%d" % i)
    db.put(b"x-single", b"1", sync=True)
    db.close()
    assert db.closed
    db = Database.open(tmp_path / "db", create=False)
    assert db.get(b"s042") == b"v42"
    assert db.get(b"x-single") == b"1"
    assert [k for k, _ in db.iterate(prefix=b"s")] == [b"s%03d" % i for i in range(100)]
    db.close()


def test_an_exception_inside_a_batch_makes_none_of_it_visible(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db")
    db.put(b"a", b"old")
    with pytest.raises(RuntimeError, match="mid-batch"), db.batch() as b:
        b.put(b"a", b"new")
        b.put(b"b", b"new")
        b.delete(b"a")
        raise RuntimeError("mid-batch failure")
    assert db.get(b"a") == b"old"
    assert db.get(b"b") is None
    db.close()
    db = Database.open(tmp_path / "db")
    assert db.get(b"a") == b"old" and db.get(b"b") is None
    db.close()


def test_write_applies_puts_and_deletes_together(tmp_path: Path) -> None:
    with Database.open(tmp_path / "db") as db:
        db.write([(b"a", b"1"), (b"b", b"2")])
        db.write([(b"a", None), (b"c", b"3")])
        assert list(db.iterate()) == [(b"b", b"2"), (b"c", b"3")]


def test_a_second_open_in_the_same_process_reports_db_locked(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db")
    with pytest.raises(DatabaseLocked) as info:
        Database.open(tmp_path / "db")
    assert info.value.code == "db_locked"
    assert "in use" in info.value.message
    db.close()
    Database.open(tmp_path / "db").close()  # free again once closed


def test_another_process_opening_a_locked_database_gets_db_locked(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db")
    try:
        result = run_python(f"""
            from storage.db import Database
            from storage.errors import StorageError
            try:
                Database.open({str(tmp_path / "db")!r})
            except StorageError as exc:
                print(exc.code)
            """)
    finally:
        db.close()
    assert result.stdout.strip() == "db_locked", result.stderr
    assert "Traceback" not in result.stderr


def test_a_corrupt_database_gives_db_corrupt(tmp_path: Path) -> None:
    Database.open(tmp_path / "db").close()
    (tmp_path / "db" / "CURRENT").write_text("MANIFEST-999999\n")
    with pytest.raises(DatabaseCorrupt) as info:
        Database.open(tmp_path / "db")
    assert info.value.code == "db_corrupt"


def test_a_scrambled_manifest_gives_db_corrupt(tmp_path: Path) -> None:
    with Database.open(tmp_path / "db") as db:
        db.put(b"k", b"v" * 100, sync=True)
    for f in (tmp_path / "db").iterdir():
        if f.name.startswith("MANIFEST"):
            f.write_bytes(b"\x13\x37" * 100)
    with pytest.raises(DatabaseCorrupt):
        Database.open(tmp_path / "db")


def test_a_path_that_is_a_file_gives_a_clear_error_that_is_not_corruption(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a database")
    with pytest.raises(StorageError) as info:
        Database.open(tmp_path / "file")
    assert info.value.code == "db_unavailable"  # a wrong path: the advice is the config, not a resync
    assert "file" in info.value.message and "node.data_dir" in info.value.message


def test_opening_a_missing_database_without_create_gives_db_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatabaseNotFound) as info:
        Database.open(tmp_path / "nothing", create=False)
    assert info.value.code == "db_not_found"


def test_using_a_closed_database_gives_db_closed(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db")
    db.close()
    db.close()  # idempotent
    with pytest.raises(DatabaseClosed):
        db.get(b"a")
    with pytest.raises(DatabaseClosed):
        db.put(b"a", b"1")
    with pytest.raises(DatabaseClosed), db.batch() as b:
        b.put(b"a", b"1")


def test_a_failed_write_raises_db_write_failed_and_leaves_nothing_of_the_batch(tmp_path: Path) -> None:
    # A file size limit makes LevelDB's log append fail exactly as a full disk does (EFBIG vs ENOSPC).
    result = run_python(f"""
        import resource, signal
        from storage.db import Database
        from storage.errors import StorageError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        db = Database.open({str(tmp_path / "db")!r})
        db.put(b"before", b"1", sync=True)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
        try:
            for i in range(100):
                with db.batch(sync=True) as b:
                    for j in range(50):
                        b.put(b"big%d-%d" % (i, j), b"x" * 1024)
        except StorageError as exc:
            print(exc.code, i)
        """)
    assert "Traceback" not in result.stderr, result.stderr
    code, failed_at = result.stdout.split()
    assert code == "db_write_failed"
    with Database.open(tmp_path / "db") as db:
        assert db.get(b"before") == b"1"
        assert db.get(b"big%s-0" % failed_at.encode()) is None  # the failed batch left nothing


def test_db_write_failed_is_a_storage_error_with_a_stable_code() -> None:
    err = DatabaseWriteFailed("disk full")
    assert isinstance(err, StorageError) and err.code == "db_write_failed" and err.message == "disk full"


def test_a_snapshot_does_not_see_later_writes(tmp_path: Path) -> None:
    with Database.open(tmp_path / "db") as db:
        db.put(b"a", b"1")
        with db.snapshot() as snap:
            db.put(b"a", b"2")
            db.put(b"b", b"3")
            assert snap.get(b"a") == b"1"
            assert snap.get(b"b") is None
            assert list(snap.iterate()) == [(b"a", b"1")]
        assert db.get(b"a") == b"2"


def test_a_prefixed_view_reads_and_writes_relative_keys_only_under_its_prefix(tmp_path: Path) -> None:
    with Database.open(tmp_path / "db") as db:
        db.put(b"a1", b"outside")
        db.put(b"b1", b"outside")
        view = db.prefixed(b"W")
        view.put(b"2", b"two")
        view.put(b"1", b"one")
        assert view.get(b"1") == b"one"
        assert db.get(b"W1") == b"one"
        assert list(view.iterate()) == [(b"1", b"one"), (b"2", b"two")]
        assert list(view.iterate(b"2")) == [(b"2", b"two")]
        assert list(view.iterate(reverse=True)) == [(b"2", b"two"), (b"1", b"one")]
        view.delete(b"1")
        assert view.get(b"1") is None and db.get(b"a1") == b"outside"


def test_delete_prefix_removes_exactly_that_namespace(tmp_path: Path) -> None:
    with Database.open(tmp_path / "db") as db:
        db.write([(b"s1", b""), (b"s2", b""), (b"t1", b""), (b"r9", b"")])
        with db.batch() as b:
            assert db.delete_prefix(b"s", b) == 2
        assert [k for k, _ in db.iterate()] == [b"r9", b"t1"]


def test_a_damaged_table_file_reads_as_db_corrupt_not_a_plyvel_error(tmp_path: Path) -> None:
    with Database.open(tmp_path / "db") as db, db.batch() as b:
        for i in range(20000):
            b.put(b"k%06d" % i, b"v" * 50)
    # reopening flushes the log into a table file; then damage every table file
    Database.open(tmp_path / "db").close()
    tables = [f for f in (tmp_path / "db").iterdir() if f.suffix == ".ldb"]
    assert tables
    for f in tables:
        data = bytearray(f.read_bytes())
        for j in range(100, len(data) - 100, 997):
            data[j] ^= 0xFF
        f.write_bytes(bytes(data))
    with Database.open(tmp_path / "db") as db, pytest.raises(DatabaseCorrupt):
        db.get(b"k000500")


def _log_records(raw: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each physical record of a LevelDB log file (32 KiB blocks, 7-byte headers)."""
    out, off, block = [], 0, 32 * 1024
    while off + 7 <= len(raw):
        if block - off % block < 7:
            off += block - off % block
            continue
        length = int.from_bytes(raw[off + 4:off + 6], "little")
        out.append((off, length))
        off += 7 + length
    return out


def _stretch_record(db_dir: Path, index: int) -> None:
    """Add 16 KiB to the length field of log record `index`: past the end of the file, LevelDB reads it
    as a write that never finished and drops it and everything after it, without an error."""
    log = next(f for f in db_dir.iterdir() if f.suffix == ".log" and f.stat().st_size > 0)
    raw = bytearray(log.read_bytes())
    off, _length = _log_records(bytes(raw))[index]
    raw[off + 5] ^= 0x40
    log.write_bytes(bytes(raw))


def test_a_log_tail_dropped_after_a_clean_close_refuses_to_open(tmp_path: Path) -> None:
    with Database.open(tmp_path / "db") as db:
        for i in range(20):
            db.put(b"k%02d" % i, b"v" * 100, sync=True)
    assert (tmp_path / "db" / SEAL_FILE).exists()
    _stretch_record(tmp_path / "db", -2)  # the last put; the seal is the record after it
    with pytest.raises(DatabaseCorrupt) as info:
        Database.open(tmp_path / "db")
    assert info.value.key == schema.META_SEAL and "resync from peers" in info.value.message


def test_without_the_seal_leveldb_drops_a_stretched_log_tail_silently(tmp_path: Path) -> None:
    """Why the seal exists: the same damage on a database that was not sealed opens without an error."""
    with Database.open(tmp_path / "db") as db:
        for i in range(20):
            db.put(b"k%02d" % i, b"v" * 100, sync=True)
    (tmp_path / "db" / SEAL_FILE).unlink()
    _stretch_record(tmp_path / "db", -2)
    with Database.open(tmp_path / "db") as db:
        assert db.get(b"k18") == b"v" * 100 and db.get(b"k19") is None


def test_a_clean_reopen_removes_the_seal_file_until_the_next_clean_close(tmp_path: Path) -> None:
    Database.open(tmp_path / "db").close()
    db = Database.open(tmp_path / "db")
    assert not (tmp_path / "db" / SEAL_FILE).exists()  # a crash now leaves no seal to be judged by
    db.put(b"k", b"v", sync=True)
    db.close()
    assert (tmp_path / "db" / SEAL_FILE).exists()
    with Database.open(tmp_path / "db") as db:
        assert db.get(b"k") == b"v"


def test_a_write_refused_because_a_compaction_met_damaged_data_is_db_corrupt(tmp_path: Path) -> None:
    """With paranoid checks a compaction that reads a damaged table stops every later write; that is
    damage (db_corrupt, fail-stop), not a full disk."""
    value = b"v" * 1000
    with Database.open(tmp_path / "db", write_buffer_mb=1) as db, db.batch() as b:
        for i in range(500):  # under the write buffer: one table, at level 0, when reopened
            b.put(b"k%05d" % i, value)
    Database.open(tmp_path / "db").close()  # the log becomes a table
    for table in (f for f in (tmp_path / "db").iterdir() if f.suffix == ".ldb"):
        data = bytearray(table.read_bytes())
        for j in range(1000, len(data) - 1000, 4001):
            data[j] ^= 0xFF
        table.write_bytes(bytes(data))
    db = Database.open(tmp_path / "db", write_buffer_mb=1)
    with pytest.raises(DatabaseCorrupt) as info:
        for round_ in range(200):  # overlapping level-0 tables until LevelDB compacts them with the damaged one
            with db.batch() as b:
                for i in range(1000):
                    b.put(b"k%05d" % i, value + b"%d" % round_)
    assert "damaged table data" in info.value.message and "resync from peers" in info.value.message
    with pytest.raises(DatabaseCorrupt):
        db.close()  # the seal is refused too; the database is closed all the same
    assert db.closed and not (tmp_path / "db" / SEAL_FILE).exists()
