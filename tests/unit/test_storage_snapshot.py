"""State-sync snapshots: deterministic chunks, verified import, and rejection that leaves state untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol import codec, merkle
from protocol.crypto import sha256
from protocol.errors import FieldError
from storage import schema
from storage.blocks import BlockStore
from storage.db import Database
from storage.errors import SnapshotError, SnapshotRootMismatch
from storage.snapshot import (
    SnapshotImporter,
    SnapshotManifest,
    StateSnapshot,
    load_manifest,
    save_manifest,
)
from storage.state import StateStore

ITEMS = {b"acct/%05d" % i: b"balance-%d" % (i * 37) for i in range(1500)}


def store_with(path: Path, items: dict[bytes, bytes]) -> tuple[Database, StateStore]:
    db = Database.open(path)
    store = StateStore(db)
    store.commit(store.stage(dict(items)))
    return db, store


def test_export_then_import_rebuilds_the_same_state_and_root(tmp_path: Path) -> None:
    src_db, src = store_with(tmp_path / "src", ITEMS)
    chunks = list(src.export_chunks(4096))
    assert len(chunks) > 5
    dst_db, dst = store_with(tmp_path / "dst", {b"stale": b"old state to be replaced"})
    importer = SnapshotImporter(dst, src.root())
    for c in chunks:
        importer.add_chunk(c)
    importer.finish()
    assert dst.root() == src.root()
    assert dict(dst.reader().iter_range(b"", b"\xff")) == ITEMS
    assert merkle.verify_proof(dst.root(), dst.proof(b"acct/00042"))
    assert list(dst_db.iterate(prefix=schema.IMPORT_STAGING)) == []
    dst_db.close()
    dst_db = Database.open(tmp_path / "dst")  # the installed state survives a reopen
    assert StateStore(dst_db).root() == src.root()
    dst_db.close()
    src_db.close()


def test_chunks_are_identical_on_every_node_and_randomly_addressable(tmp_path: Path) -> None:
    a_db, a = store_with(tmp_path / "a", ITEMS)
    b_db, b = store_with(tmp_path / "b", dict(reversed(list(ITEMS.items()))))
    assert list(a.export_chunks(4096)) == list(b.export_chunks(4096))
    snap = StateSnapshot.take(a)
    chunks = list(snap.chunks(4096))
    assert snap.chunk_count(4096) == len(chunks)
    assert [snap.chunk(i, 4096) for i in range(len(chunks))] == chunks
    assert snap.chunk(len(chunks), 4096) is None
    snap.close()
    a_db.close()
    b_db.close()


def test_a_snapshot_serves_the_state_of_its_height_while_new_blocks_commit(tmp_path: Path) -> None:
    db, store = store_with(tmp_path / "db", ITEMS)
    snap = StateSnapshot.take(store)
    root = snap.root
    store.commit(store.stage({b"acct/00001": b"changed", b"extra": b"1"}))
    chunks = list(snap.chunks(8192))
    snap.close()
    dst_db = Database.open(tmp_path / "dst")
    importer = SnapshotImporter(StateStore(dst_db), root)
    for c in chunks:
        importer.add_chunk(c)
    importer.finish()
    assert importer.items == len(ITEMS)
    dst_db.close()
    db.close()


def test_a_tampered_chunk_is_rejected_and_the_existing_state_is_untouched(tmp_path: Path) -> None:
    src_db, src = store_with(tmp_path / "src", ITEMS)
    chunks = list(src.export_chunks(4096))
    chunk = codec.decode(chunks[2], codec.Limits(max_bytes=1 << 20))
    chunk["items"][3][1] = b"forged balance"
    chunks[2] = codec.encode(chunk)
    dst_db, dst = store_with(tmp_path / "dst", {b"mine": b"keep me"})
    before = dst.root()
    importer = SnapshotImporter(dst, src.root())
    for c in chunks:
        importer.add_chunk(c)  # structurally fine: only the root can tell
    with pytest.raises(SnapshotRootMismatch) as info:
        importer.finish()
    assert info.value.code == "snapshot_root_mismatch"
    assert dst.root() == before
    assert dict(dst.reader().iter_range(b"", b"\xff")) == {b"mine": b"keep me"}
    assert list(dst_db.iterate(prefix=schema.IMPORT_STAGING)) == []
    with pytest.raises(SnapshotError):
        importer.add_chunk(chunks[0])  # an aborted import stays aborted
    src_db.close()
    dst_db.close()


@pytest.mark.parametrize("mangle", ["garbage", "reorder", "wrong_root", "unsorted", "bad_item", "extra_field"])
def test_structurally_bad_chunks_are_rejected_on_arrival(tmp_path: Path, mangle: str) -> None:
    src_db, src = store_with(tmp_path / "src", ITEMS)
    chunks = list(src.export_chunks(4096))
    dst_db, dst = store_with(tmp_path / "dst", {b"mine": b"keep me"})
    importer = SnapshotImporter(dst, src.root())
    importer.add_chunk(chunks[0])
    value = codec.decode(chunks[1], codec.Limits(max_bytes=1 << 20))
    if mangle == "garbage":
        bad = b"\xc1not msgpack"
    elif mangle == "reorder":
        bad = chunks[2]
    elif mangle == "wrong_root":
        bad = codec.encode({**value, "root": b"\x01" * 32})
    elif mangle == "unsorted":
        bad = codec.encode({**value, "items": list(reversed(value["items"]))})
    elif mangle == "bad_item":
        bad = codec.encode({**value, "items": [[b"k"]]})
    else:
        bad = codec.encode({**value, "more": 1})
    with pytest.raises(SnapshotError):
        importer.add_chunk(bad)
    assert dict(dst.reader().iter_range(b"", b"\xff")) == {b"mine": b"keep me"}
    assert list(dst_db.iterate(prefix=schema.IMPORT_STAGING)) == []
    src_db.close()
    dst_db.close()


def test_keys_must_ascend_across_chunk_boundaries(tmp_path: Path) -> None:
    src_db, src = store_with(tmp_path / "src", ITEMS)
    chunks = list(src.export_chunks(4096))
    dst_db = Database.open(tmp_path / "dst")
    importer = SnapshotImporter(StateStore(dst_db), src.root())
    importer.add_chunk(chunks[0])
    replay = codec.decode(chunks[0], codec.Limits(max_bytes=1 << 20))
    with pytest.raises(SnapshotError):
        importer.add_chunk(codec.encode({**replay, "index": 1}))
    src_db.close()
    dst_db.close()


def test_an_empty_state_exports_one_chunk_and_imports_to_the_empty_root(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "src")
    chunks = list(StateStore(db).export_chunks(4096))
    assert len(chunks) == 1
    dst_db, dst = store_with(tmp_path / "dst", {b"x": b"1"})
    importer = SnapshotImporter(dst, merkle.EMPTY_ROOT)
    importer.add_chunk(chunks[0])
    importer.finish()
    assert dst.root() == merkle.EMPTY_ROOT
    assert list(dst.reader().iter_range(b"", b"\xff")) == []
    db.close()
    dst_db.close()


def test_finishing_without_chunks_or_with_a_bad_limit_is_an_error(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db")
    store = StateStore(db)
    with pytest.raises(SnapshotError):
        SnapshotImporter(store, merkle.EMPTY_ROOT).finish()
    with pytest.raises(ValueError):
        list(store.export_chunks(10))
    db.close()


def test_finish_installs_the_chain_head_in_the_same_batch(tmp_path: Path) -> None:
    src_db, src = store_with(tmp_path / "src", ITEMS)
    dst_db = Database.open(tmp_path / "dst")
    dst = StateStore(dst_db)
    blocks = BlockStore(dst_db, dst)
    importer = SnapshotImporter(dst, src.root())
    for c in src.export_chunks(65536):
        importer.add_chunk(c)
    importer.finish(blocks.head_ops(100, b"\xab" * 32, src.root()))
    assert blocks.height() == 100
    assert blocks.last_block_hash() == b"\xab" * 32
    assert blocks.state_root_at(100) == src.root() == blocks.state_root()
    src_db.close()
    dst_db.close()


def test_a_manifest_checks_every_chunk_on_arrival_and_round_trips_through_storage(tmp_path: Path) -> None:
    src_db, src = store_with(tmp_path / "src", ITEMS)
    snap = StateSnapshot.take(src)
    manifest = snap.manifest(4096)
    chunks = list(snap.chunks(4096))
    assert manifest.chunk_hashes == tuple(sha256(c) for c in chunks)
    assert [snap.chunk(i, 4096) for i in range(len(chunks))] == chunks
    save_manifest(src_db, manifest)
    save_manifest(src_db, SnapshotManifest(height=manifest.height + 100, root=manifest.root,
                                           max_chunk_bytes=4096, chunk_hashes=manifest.chunk_hashes))
    assert load_manifest(src_db, manifest.height) == manifest
    latest = load_manifest(src_db)
    assert latest is not None and latest.height == manifest.height + 100
    assert load_manifest(src_db, 12345) is None
    assert SnapshotManifest.decode(manifest.encode()) == manifest

    dst_db, dst = store_with(tmp_path / "dst", {b"mine": b"keep me"})
    importer = SnapshotImporter(dst, src.root(), manifest=manifest)
    importer.add_chunk(chunks[0])
    value = codec.decode(chunks[1], codec.Limits(max_bytes=1 << 20))
    value["items"] = value["items"][:-1]  # well-formed, ascending, but not what the manifest says
    with pytest.raises(SnapshotError) as info:
        importer.add_chunk(codec.encode(value))
    assert info.value.code == "snapshot_chunk_mismatch"
    assert dict(dst.reader().iter_range(b"", b"\xff")) == {b"mine": b"keep me"}

    importer = SnapshotImporter(dst, src.root(), manifest=manifest)
    for c in chunks[:-1]:
        importer.add_chunk(c)
    with pytest.raises(SnapshotError):
        importer.finish()  # a chunk short of the manifest
    importer = SnapshotImporter(dst, src.root(), manifest=manifest)
    for c in chunks:
        importer.add_chunk(c)
    importer.finish()
    assert dst.root() == src.root()
    with pytest.raises(SnapshotRootMismatch):
        SnapshotImporter(dst, b"\x00" * 32, manifest=manifest)
    snap.close()
    src_db.close()
    dst_db.close()


def test_a_malformed_manifest_is_rejected() -> None:
    good = SnapshotManifest(height=5, root=b"\x01" * 32, max_chunk_bytes=4096, chunk_hashes=(b"\x02" * 32,))
    for bad in ({**good.to_value(), "chunk_hashes": []}, {**good.to_value(), "chunk_hashes": [b"x"]},
                {**good.to_value(), "max_chunk_bytes": 1}, {**good.to_value(), "extra": 1}):
        with pytest.raises(FieldError):
            SnapshotManifest.from_value(bad)


def test_export_chunks_reflects_the_state_when_called_not_when_first_read(tmp_path: Path) -> None:
    db, store = store_with(tmp_path / "db", {b"a": b"1"})
    root = store.root()
    chunks = store.export_chunks(4096)
    store.commit(store.stage({b"a": b"2"}))
    first = codec.decode(next(chunks), codec.Limits(max_bytes=1 << 20))
    assert first["root"] == root and first["items"] == [[b"a", b"1"]]
    list(chunks)
    with store.snapshot() as snap:
        assert snap.root == store.root() and snap.height == 0
    db.close()
