"""Derived index keys (the ledger's event log) are stored and readable but outside the Merkle root and
outside state snapshots, so they cost no tree work and a state-synced node still reaches the same root."""

from __future__ import annotations

from pathlib import Path

from protocol import merkle
from storage.db import Database
from storage.snapshot import SnapshotImporter
from storage.state import StateStore

PREFIXES = (b"ev/", b"tx/")
STATE = {b"b/alice": b"10", b"b/bob": b"20"}
INDEX = {b"ev/0001": b"event", b"tx/abcd": b"pos"}


def test_index_keys_are_readable_but_do_not_change_the_state_root(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db")
    store = StateStore(db, index_prefixes=PREFIXES)
    store.commit(store.stage({**STATE, **INDEX}))
    assert store.root() == merkle.compute_root(sorted(STATE.items()))
    reader = store.reader()
    assert dict(reader.iter_range(b"", b"\xff")) == {**STATE, **INDEX}
    reader.close()
    db.close()


def test_a_snapshot_carries_only_proven_state_and_imports_to_the_same_root(tmp_path: Path) -> None:
    src_db = Database.open(tmp_path / "src")
    src = StateStore(src_db, index_prefixes=PREFIXES)
    src.commit(src.stage({**STATE, **INDEX}))
    dst_db = Database.open(tmp_path / "dst")
    dst = StateStore(dst_db, index_prefixes=PREFIXES)
    importer = SnapshotImporter(dst, src.root())
    for chunk in src.export_chunks(4096):
        importer.add_chunk(chunk)
    importer.finish()
    assert dst.root() == src.root()
    reader = dst.reader()
    assert dict(reader.iter_range(b"", b"\xff")) == STATE
    reader.close()
    src_db.close()
    dst_db.close()
