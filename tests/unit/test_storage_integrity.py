"""Integrity on read: a stored block, certificate, receipt or tx index entry that does not hold together
with its block is `db_corrupt` naming the key and the way out, never served; the head region is checked
when the store opens, the rest when it is read.

LevelDB's own checksums catch flipped bytes first (tests/unit/test_disk_corruption.py); these tests write
well-checksummed but wrong records, which only the block store's cross-checks can catch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from protocol import codec
from protocol.block import Block
from storage import schema
from storage.errors import DatabaseCorrupt
from tests.unit.test_storage_blocks import Chain, cert, make_txs, receipt

WAY_OUT = "resync from peers: stop the node, move the data dir"


def chain_of(path: Path, blocks: int, n_txs: int = 3) -> tuple[Chain, list[Block]]:
    chain = Chain(path)
    chain.genesis({b"a": b"1"})
    return chain, [chain.commit({b"k%d" % h: b"v%d" % h}, n_txs=n_txs) for h in range(1, blocks + 1)]


def corrupt_read(read: Callable[[], object], key: bytes) -> DatabaseCorrupt:
    with pytest.raises(DatabaseCorrupt) as info:
        read()
    err = info.value
    assert err.code == "db_corrupt" and err.key == key
    assert schema.describe(key) in err.message and WAY_OUT in err.message
    return err


def test_a_block_that_no_longer_hashes_to_its_index_is_db_corrupt_naming_the_block(tmp_path: Path) -> None:
    chain, blocks = chain_of(tmp_path / "db", 3)
    other = Block.build(chain="test", height=2, parent=blocks[0].hash, proposer=blocks[1].header.proposer,
                        view=0, time=blocks[1].header.time + 1, state_root=blocks[1].header.state_root,
                        results_root=blocks[1].header.results_root, txs=blocks[1].txs)
    chain.db.put(schema.block_key(2), other.encode())
    b = chain.blocks
    err = corrupt_read(lambda: b.get_block(2), schema.block_key(2))
    assert "block 2" in err.message
    corrupt_read(lambda: b.get_block_bytes(2), schema.block_key(2))
    corrupt_read(lambda: list(b.iter_blocks(1)), schema.block_key(2))
    assert b.get_block(3) == blocks[2]  # the rest is still served
    chain.close()


def test_a_block_that_does_not_decode_or_sits_at_another_height_is_db_corrupt(tmp_path: Path) -> None:
    chain, blocks = chain_of(tmp_path / "db", 3)
    chain.db.put(schema.block_key(1), blocks[0].encode()[:-1])
    corrupt_read(lambda: chain.blocks.get_block(1), schema.block_key(1))
    chain.db.put(schema.block_key(2), blocks[2].encode())
    err = corrupt_read(lambda: chain.blocks.get_block(2), schema.block_key(2))
    assert "says height 3" in err.message
    chain.close()


def test_a_receipt_of_another_tx_or_with_an_unknown_status_is_db_corrupt_never_a_status(tmp_path: Path) -> None:
    chain, _blocks = chain_of(tmp_path / "db", 2)
    txs = make_txs(1, 3)
    key = schema.receipt_key(1, 0)
    for bad in (receipt(txs[1]), receipt(txs[0], "okay"), receipt(txs[0])[:-1], codec.encode(["ok"])):
        chain.db.put(key, bad)
        corrupt_read(lambda: chain.blocks.get_receipt(txs[0].hash), key)
        corrupt_read(lambda: chain.blocks.get_receipt_at(1, 0), key)
        corrupt_read(lambda: chain.blocks.receipts_at(1), key)
    chain.db.delete(key)
    err = corrupt_read(lambda: chain.blocks.get_receipt(txs[0].hash), key)
    assert "receipt is missing" in err.message
    chain.db.put(schema.receipt_key(1, 3), receipt(txs[0]))  # a receipt with no tx at its place
    corrupt_read(lambda: chain.blocks.get_receipt_at(1, 3), schema.receipt_key(1, 3))
    chain.close()


def test_a_tx_index_entry_that_points_elsewhere_is_db_corrupt(tmp_path: Path) -> None:
    chain, _blocks = chain_of(tmp_path / "db", 2)
    tx = make_txs(1, 3)[0]
    key = schema.tx_index_key(tx.hash)
    for where in (schema.tx_location_value(1, 1), schema.tx_location_value(2, 0), schema.tx_location_value(9, 0),
                  schema.tx_location_value(1, 7), b"\x00" * 5):
        chain.db.put(key, where)
        corrupt_read(lambda: chain.blocks.get_tx_location(tx.hash), key)
        corrupt_read(lambda: chain.blocks.get_tx(tx.hash), key)
    chain.close()


def test_a_certificate_of_another_block_is_db_corrupt(tmp_path: Path) -> None:
    chain, blocks = chain_of(tmp_path / "db", 3)
    key = schema.certificate_key(2)
    chain.db.put(key, cert(blocks[2]))
    corrupt_read(lambda: chain.blocks.get_certificate(2), key)
    corrupt_read(lambda: list(chain.blocks.iter_blocks(2, 3)), key)
    chain.db.put(key, b"not a certificate")
    corrupt_read(lambda: chain.blocks.get_certificate(2, blocks[1].hash), key)
    chain.close()


def test_a_hash_index_entry_pointing_at_another_block_is_db_corrupt(tmp_path: Path) -> None:
    chain, blocks = chain_of(tmp_path / "db", 3)
    key = schema.block_hash_key(blocks[0].hash)
    chain.db.put(key, schema.u64(2))
    corrupt_read(lambda: chain.blocks.height_of(blocks[0].hash), key)
    corrupt_read(lambda: chain.blocks.get_block(1), key)
    chain.close()


def _replace_block(chain: Chain, blocks: list[Block], height: int) -> bytes:
    """Store a different, self-consistent block at `height` (its hash indexed): only the chain above it
    (the next block's parent, or the head hash) and its certificate still name the block committed."""
    old = blocks[height - 1]
    other = Block.build(chain="test", height=height, parent=old.header.parent, proposer=old.header.proposer,
                        view=0, time=old.header.time + 1, state_root=old.header.state_root,
                        results_root=old.header.results_root, txs=old.txs)
    chain.db.write([(schema.block_key(height), other.encode()), (schema.block_hash_key(other.hash),
                                                                  schema.u64(height))])
    return schema.block_key(height)


HEAD_DAMAGE: dict[str, Callable[[Chain, list[Block]], bytes]] = {
    "the head hash names no stored block": lambda c, bs: (
        c.db.put(schema.META_LAST_HASH, b"\x42" * 32), schema.certificate_key(len(bs)))[1],
    "the head block was replaced": lambda c, bs: _replace_block(c, bs, len(bs)),
    "a receipt of the head block is missing": lambda c, bs: (
        c.db.delete(schema.receipt_key(len(bs), 2)), schema.receipt_key(len(bs), 2))[1],
    "a tx of the head block is missing from the tx index": lambda c, bs: (
        c.db.delete(schema.tx_index_key(make_txs(len(bs), 3)[1].hash)), schema.tx_index_key(make_txs(len(bs), 3)[1].hash))[1],
    "a block is stored above the head": lambda c, bs: (
        c.db.put(schema.block_key(len(bs) + 1), bs[0].encode()), schema.block_key(len(bs) + 1))[1],
    "the head certificate is missing": lambda c, bs: (
        c.db.delete(schema.certificate_key(len(bs))), schema.certificate_key(len(bs)))[1],
    "the state root at the head is not the state root": lambda c, bs: (
        c.db.put(schema.state_root_at_key(len(bs)), b"\x42" * 32), schema.state_root_at_key(len(bs)))[1],
    "a results root stored in the head region is not the one the header two above carries": lambda c, bs: (
        c.db.put(schema.results_root_at_key(len(bs) - 2), b"\x42" * 32), schema.results_root_at_key(len(bs) - 2))[1],
    "a results root is stored above the head": lambda c, bs: (
        c.db.put(schema.results_root_at_key(len(bs) + 1), b"\x42" * 32), schema.results_root_at_key(len(bs) + 1))[1],
    "a block in the tail does not chain to the block above": lambda c, bs: _replace_block(c, bs, len(bs) - 2),
    "a certificate in the tail certifies another block": lambda c, bs: (
        c.db.put(schema.certificate_key(len(bs) - 2), cert(bs[-2])), schema.certificate_key(len(bs) - 2))[1],
}


@pytest.mark.parametrize("damage", sorted(HEAD_DAMAGE))
def test_opening_refuses_a_head_region_that_does_not_hold_together(tmp_path: Path, damage: str) -> None:
    chain, blocks = chain_of(tmp_path / "db", 5)
    key = HEAD_DAMAGE[damage](chain, blocks)
    chain.close()
    err = corrupt_read(lambda: Chain(tmp_path / "db"), key)
    assert err.key == key


def test_a_damaged_block_below_the_checked_tail_is_db_corrupt_when_it_is_read(tmp_path: Path) -> None:
    chain, blocks = chain_of(tmp_path / "db", 20, n_txs=1)
    chain.db.put(schema.block_key(2), blocks[2].encode())
    chain.close()
    chain = Chain(tmp_path / "db")  # the open-time check covers the top 16 blocks only: bounded work
    corrupt_read(lambda: chain.blocks.get_block(2), schema.block_key(2))
    assert chain.blocks.get_block(20) == blocks[19]
    chain.close()


def test_the_open_check_stops_at_the_height_a_state_sync_installed(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "db")
    chain.genesis({b"a": b"1"})
    synced = Block.build(chain="test", height=5, parent=b"\x01" * 32, proposer=b"\x02" * 32, view=0, time=5,
                         state_root=b"\x03" * 32, results_root=b"\x04" * 32, txs=[])  # the block itself is not stored by a state sync
    root = chain.state.root()
    chain.db.write([*chain.blocks.head_ops(5, synced.hash, root), (schema.certificate_key(5), cert(synced))])
    assert chain.blocks.get_certificate(5) == cert(synced)  # checked against the head hash
    blocks = [chain.commit({b"k%d" % h: b"v"}) for h in range(6, 9)]
    assert blocks[0].header.parent == synced.hash
    chain.close()
    chain = Chain(tmp_path / "db")
    assert chain.blocks.height() == 8 and chain.blocks.first_block_height() == 6
    assert chain.blocks.get_certificate(5) == cert(synced)  # checked against the parent block 6 names
    chain.close()
