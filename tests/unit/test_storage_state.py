"""The persistent state store: ordered reads, incremental root, proofs, reopen and consistency checks."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from protocol import merkle
from protocol.state import Overlay
from storage import schema
from storage.db import Database
from storage.errors import DatabaseCorrupt, StaleStage, StorageError
from storage.state import StateStore


def open_store(path: Path) -> tuple[Database, StateStore]:
    db = Database.open(path)
    return db, StateStore(db)


def test_incremental_root_matches_compute_root_across_many_commits(tmp_path: Path) -> None:
    db, store = open_store(tmp_path / "db")
    rng = random.Random(7)
    model: dict[bytes, bytes] = {}
    for _ in range(12):
        changes: dict[bytes, bytes | None] = {}
        for _ in range(rng.randint(1, 300)):
            k = b"acct/%d" % rng.randint(0, 500)
            changes[k] = None if rng.random() < 0.2 else rng.randbytes(rng.randint(0, 40))
        staged = store.stage(changes)
        store.commit(staged)
        for k, v in changes.items():
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v
        assert store.root() == staged.new_root == merkle.compute_root(model)
    assert dict(store.reader().iter_range(b"", b"\xff")) == model
    db.close()


def test_staging_changes_nothing_until_committed(tmp_path: Path) -> None:
    db, store = open_store(tmp_path / "db")
    staged = store.stage({b"a": b"1"})
    assert store.root() == merkle.EMPTY_ROOT
    assert store.get(b"a") is None
    assert staged.new_root == merkle.compute_root({b"a": b"1"})
    db.close()


def test_a_stage_computed_on_an_old_root_is_refused(tmp_path: Path) -> None:
    db, store = open_store(tmp_path / "db")
    first = store.stage({b"a": b"1"})
    second = store.stage({b"b": b"2"})
    store.commit(first)
    with pytest.raises(StaleStage) as info:
        store.commit(second)
    assert info.value.code == "stale_stage"
    assert store.get(b"b") is None
    db.close()


def test_oversized_keys_and_values_are_refused_before_staging(tmp_path: Path) -> None:
    db, store = open_store(tmp_path / "db")
    with pytest.raises(StorageError):
        store.stage({b"k" * (merkle.MAX_KEY_BYTES + 1): b"v"})
    with pytest.raises(StorageError):
        store.stage({b"": b"v"})
    with pytest.raises(StorageError):
        store.stage({b"k": b"v" * (merkle.MAX_VALUE_BYTES + 1)})
    db.close()


def test_iter_range_is_ordered_bounded_and_excludes_other_namespaces(tmp_path: Path) -> None:
    db, store = open_store(tmp_path / "db")
    keys = [b"a", b"b/1", b"b/2", b"b/10", b"b\xff", b"c", b"\x00", b"\xff\xff"]
    store.commit(store.stage({k: b"v" + k for k in keys}))
    db.put(b"t-not-state", b"x")
    db.put(b"r-not-state", b"x")
    reader = store.reader()
    assert [k for k, _ in reader.iter_range(b"", b"\xff\xff\xff")] == sorted(keys)
    assert [k for k, _ in reader.iter_range(b"b/", b"b0")] == [b"b/1", b"b/10", b"b/2"]
    assert list(reader.iter_range(b"c", b"c")) == []
    assert list(reader.iter_range(b"d", b"a")) == []
    assert reader.get(b"b/10") == b"vb/10"
    assert reader.get(b"zzz") is None
    reader.close()
    db.close()


def test_a_snapshot_reader_keeps_its_view_while_blocks_commit(tmp_path: Path) -> None:
    db, store = open_store(tmp_path / "db")
    store.commit(store.stage({b"a": b"1", b"b": b"1"}))
    with store.reader(snapshot=True) as old:
        store.commit(store.stage({b"a": b"2", b"b": None, b"c": b"3"}))
        live = store.reader(snapshot=False)
        assert old.get(b"a") == b"1" and old.get(b"c") is None
        assert list(old.iter_range(b"", b"z")) == [(b"a", b"1"), (b"b", b"1")]
        assert list(live.iter_range(b"", b"z")) == [(b"a", b"2"), (b"c", b"3")]
    db.close()


def test_the_ledger_overlay_runs_on_a_store_reader_and_its_changes_commit(tmp_path: Path) -> None:
    db, store = open_store(tmp_path / "db")
    store.commit(store.stage({b"bal/a": b"10", b"bal/b": b"5"}))
    with store.reader() as reader:
        ov = Overlay(reader)
        ov.put(b"bal/a", b"7")
        sp = ov.savepoint()
        ov.delete(b"bal/b")
        ov.revert(sp)
        ov.put(b"bal/c", b"3")
        assert list(ov.iter_range(b"bal/", b"bal0")) == [(b"bal/a", b"7"), (b"bal/b", b"5"), (b"bal/c", b"3")]
        staged = store.stage(ov.changes())
    store.commit(staged)
    assert store.root() == merkle.compute_root({b"bal/a": b"7", b"bal/b": b"5", b"bal/c": b"3"})
    db.close()


def test_store_proofs_verify_against_the_store_root(tmp_path: Path) -> None:
    db, store = open_store(tmp_path / "db")
    items = {b"k%d" % i: b"v%d" % i for i in range(2000)}
    store.commit(store.stage(items))
    root = store.root()
    for key in (b"k0", b"k1999", b"k777"):
        proof = store.proof(key)
        assert proof.value == items[key]
        assert merkle.verify_proof(root, proof)
    absent = store.proof(b"missing")
    assert absent.value is None and merkle.verify_proof(root, absent)
    db.close()


def test_reopening_rebuilds_the_same_tree_from_disk(tmp_path: Path) -> None:
    db, store = open_store(tmp_path / "db")
    items = {b"k%d" % i: b"v%d" % i for i in range(3000)}
    store.commit(store.stage(items))
    store.commit(store.stage({b"k5": None, b"new": b"1"}))
    root = store.root()
    db.close()
    db, store = open_store(tmp_path / "db")
    assert store.root() == root
    assert merkle.verify_proof(root, store.proof(b"new"))
    db.close()


def test_a_tampered_bucket_hash_on_disk_is_reported_as_corrupt_on_open(tmp_path: Path) -> None:
    db, store = open_store(tmp_path / "db")
    store.commit(store.stage({b"a": b"1"}))
    bucket = merkle.bucket_of(b"a")
    db.put(schema.merkle_node_key(merkle.DEPTH, bucket), b"\x00" * 32)
    with pytest.raises(DatabaseCorrupt) as info:
        StateStore(db)
    assert info.value.code == "db_corrupt"
    db.put(schema.merkle_node_key(merkle.DEPTH, bucket), b"\x00" * 5)
    with pytest.raises(DatabaseCorrupt):
        StateStore(db)
    db.close()


def test_stage_ops_cover_values_bucket_blobs_and_bucket_hashes_only(tmp_path: Path) -> None:
    db, store = open_store(tmp_path / "db")
    staged = store.stage({b"a": b"1", b"b": None})
    prefixes = sorted({k[:1] for k, _ in staged.ops})
    assert prefixes == sorted([schema.STATE, schema.MERKLE_BUCKET, schema.MERKLE_NODE])
    assert (schema.state_key(b"b"), None) in staged.ops
    db.close()


def test_a_damaged_state_database_fails_to_open_with_db_corrupt(tmp_path: Path) -> None:
    db, store = open_store(tmp_path / "db")
    store.commit(store.stage({b"k%d" % i: b"v" * 40 for i in range(20000)}))
    db.close()
    Database.open(tmp_path / "db").close()  # flush the log into table files
    for f in (tmp_path / "db").iterdir():
        if f.suffix == ".ldb":
            data = bytearray(f.read_bytes())
            for j in range(100, len(data) - 100, 501):
                data[j] ^= 0xFF
            f.write_bytes(bytes(data))
    db = Database.open(tmp_path / "db")
    with pytest.raises(DatabaseCorrupt):
        StateStore(db)
    db.close()


@pytest.mark.parametrize("cache_bytes", [0, 700, 64 * 1024 * 1024])
def test_the_bucket_cache_never_changes_the_root_whatever_its_size(tmp_path: Path, cache_bytes: int) -> None:
    db = Database.open(tmp_path / "db")
    store = StateStore(db, bucket_cache_bytes=cache_bytes)
    rng = random.Random(cache_bytes)
    model: dict[bytes, bytes] = {}
    for _ in range(8):
        changes: dict[bytes, bytes | None] = {
            b"k%d" % rng.randint(0, 3000): (None if rng.random() < 0.3 else b"v%d" % rng.randint(0, 9))
            for _ in range(400)}
        if rng.random() < 0.3:
            store.stage({b"never-committed": b"x"})  # staging alone must not leak into the cache
        store.commit(store.stage(changes))
        for k, v in changes.items():
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v
        assert store.root() == merkle.compute_root(model)
    db.close()
