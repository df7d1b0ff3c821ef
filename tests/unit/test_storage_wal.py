"""The consensus WAL: synced appends replayed in order, pruning, bounds; and the chain-identity check."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.db import Database
from storage.errors import GenesisMismatch, RecordTooLarge, WalFull
from storage.meta import ChainMeta
from storage.wal import ConsensusWal


def test_records_come_back_in_append_order_after_a_reopen(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db")
    wal = ConsensusWal(db)
    assert wal.append(b"prepare v0 h1") == 0
    assert wal.append_many([b"commit v0 h1", b"prepare v0 h2"]) == [1, 2]
    db.close()
    db = Database.open(tmp_path / "db")
    wal = ConsensusWal(db)
    assert wal.records() == [b"prepare v0 h1", b"commit v0 h1", b"prepare v0 h2"]
    assert wal.next_seq == 3 and len(wal) == 3
    assert wal.append(b"commit v0 h2") == 3
    assert wal.entries()[-1] == (3, b"commit v0 h2")
    db.close()


def test_sequence_numbers_keep_growing_past_ten_so_byte_order_is_append_order(tmp_path: Path) -> None:
    with Database.open(tmp_path / "db") as db:
        wal = ConsensusWal(db)
        for i in range(300):
            wal.append(b"r%d" % i)
        assert wal.records() == [b"r%d" % i for i in range(300)]


def test_prune_drops_records_below_a_sequence_and_by_predicate(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db")
    wal = ConsensusWal(db)
    wal.append_many([b"h1-a", b"h1-b", b"h2-a", b"h3-a", b"h3-b"])
    assert wal.prune(2) == 2
    assert wal.records() == [b"h2-a", b"h3-a", b"h3-b"]
    assert wal.prune_where(lambda r: r.endswith(b"-b")) == 1
    assert wal.records() == [b"h2-a", b"h3-a"]
    assert wal.prune(0) == 0
    db.close()
    db = Database.open(tmp_path / "db")
    wal = ConsensusWal(db)
    assert wal.records() == [b"h2-a", b"h3-a"]
    assert wal.append(b"h4") == 4  # sequence numbers are never reused
    db.close()


def test_the_wal_is_bounded_and_a_refused_append_writes_nothing(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db")
    wal = ConsensusWal(db, max_records=3, max_bytes=100, max_record_bytes=40)
    wal.append_many([b"a", b"b"])
    with pytest.raises(WalFull) as info:
        wal.append_many([b"c", b"d"])
    assert info.value.code == "wal_full"
    with pytest.raises(RecordTooLarge):
        wal.append(b"x" * 41)
    wal.append(b"c")
    with pytest.raises(WalFull):
        wal.append(b"d")
    assert wal.records() == [b"a", b"b", b"c"]
    wal.prune(2)
    wal.append_many([b"y" * 40, b"z" * 40])
    with pytest.raises(WalFull):  # byte bound: 1 + 40 + 40 + 40 > 100
        ConsensusWal(db, max_records=10, max_bytes=100).append(b"w" * 40)
    assert ConsensusWal(db).total_bytes == 81
    db.close()


def test_a_home_is_bound_to_one_chain_and_refuses_another_genesis(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db")
    meta = ChainMeta(db)
    assert meta.chain_id() is None
    assert meta.bind("smeledger-test", b"\x01" * 32) is True
    assert meta.bind("smeledger-test", b"\x01" * 32) is False
    db.close()
    db = Database.open(tmp_path / "db")
    meta = ChainMeta(db)
    assert meta.chain_id() == "smeledger-test" and meta.genesis_hash() == b"\x01" * 32
    with pytest.raises(GenesisMismatch) as info:
        meta.bind("smeledger-test", b"\x02" * 32)
    assert info.value.code == "genesis_mismatch"
    assert "smeledger-test" in info.value.message
    with pytest.raises(GenesisMismatch):
        meta.bind("other-chain", b"\x01" * 32)
    db.close()


def test_records_named_to_drop_leave_in_the_same_synced_append_and_free_their_room(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db")
    wal = ConsensusWal(db, max_records=3, max_bytes=100, max_record_bytes=40)
    wal.append_many([b"h1-a", b"h1-b", b"h2-a"])
    with pytest.raises(WalFull):  # full, and nothing named to drop
        wal.append(b"h2-b")
    assert wal.append_many([b"h2-b", b"h3-a"], drop=[0, 1, 1, 99]) == [3, 4]  # a repeat or unknown seq: ignored
    assert wal.records() == [b"h2-a", b"h2-b", b"h3-a"] and len(wal) == 3 and wal.total_bytes == 12
    with pytest.raises(WalFull):  # a refused append drops nothing either
        wal.append_many([b"h4-a", b"h4-b"], drop=[2])
    assert wal.records() == [b"h2-a", b"h2-b", b"h3-a"]
    db.close()
    db = Database.open(tmp_path / "db")
    assert ConsensusWal(db).entries() == [(2, b"h2-a"), (3, b"h2-b"), (4, b"h3-a")]
    db.close()


def _damage(db: Database, seq: int, value: bytes) -> None:
    from storage import schema

    with db.batch(sync=True) as b:
        b.put(schema.wal_key(seq), value)


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty"])
def test_a_damaged_tail_is_cut_at_open_and_reported_and_the_log_goes_on(tmp_path: Path, damage: str) -> None:
    from storage import schema
    from storage.wal import frame

    db = Database.open(tmp_path / "db")
    ConsensusWal(db).append_many([b"prepare v0 h1", b"commit v0 h1", b"prepare v0 h2", b"commit v0 h2"])
    whole = frame(b"prepare v0 h2")
    bad = {"truncated": whole[:-3], "flipped": whole[:-1] + bytes([whole[-1] ^ 1]), "empty": b""}[damage]
    _damage(db, 2, bad)
    _damage(db, 3, frame(b"commit v0 h2")[:2])
    db.close()
    db = Database.open(tmp_path / "db")
    wal = ConsensusWal(db)
    assert wal.cut == [2, 3]
    assert wal.records() == [b"prepare v0 h1", b"commit v0 h1"]
    assert db.get(schema.wal_key(2)) is None  # cut on disk, not only skipped
    assert wal.append(b"prepare v0 h2 again") == 4
    db.close()
    with Database.open(tmp_path / "db") as db:
        again = ConsensusWal(db)
        assert again.cut == [] and again.records()[-1] == b"prepare v0 h2 again"


def test_a_damaged_record_with_intact_records_after_it_is_a_corrupt_database_naming_the_way_out(
        tmp_path: Path) -> None:
    from storage.errors import DatabaseCorrupt

    db = Database.open(tmp_path / "db")
    ConsensusWal(db).append_many([b"prepare v0 h1", b"commit v0 h1", b"prepare v0 h2"])
    _damage(db, 1, b"\x00\x00\x00\x00commit v0 h1")
    db.close()
    with Database.open(tmp_path / "db") as db, pytest.raises(DatabaseCorrupt) as err:
        ConsensusWal(db)
    assert err.value.code == "db_corrupt"
    assert str(tmp_path / "db") in str(err.value) and "record 1" in str(err.value)
    assert "move its data directory aside" in str(err.value)
