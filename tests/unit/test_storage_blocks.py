"""The block store: one atomic commit per height, exact block bytes, indexes, and crash consistency."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from protocol import codec, merkle
from protocol.block import Block, state_root_height
from protocol.consensus import CommitCertificate
from protocol.crypto import PrivateKey
from protocol.results import GENESIS_RESULTS
from protocol.tx import SignedTx
from storage import schema
from storage.blocks import BlockStore
from storage.db import Database, WriteBatch
from storage.decided import DecidedBlocks
from storage.errors import HeightMismatch, StaleStage, StorageError
from storage.state import StateStore

REPO = Path(__file__).resolve().parents[2]
KEY = PrivateKey(b"\x05" * 32)
GENESIS_HASH = b"\x99" * 32


def make_txs(height: int, n: int) -> list[SignedTx]:
    return [SignedTx.create(KEY, {"chain": "test", "kind": "transfer", "nonce": height * 1000 + i,
                                  "to": b"\x02" * 32, "asset": "CNY.BANKA", "amount": 1}) for i in range(n)]


def receipt(tx: SignedTx, status: str = "ok") -> bytes:
    return codec.encode({"tx_hash": tx.hash, "status": status, "code": status, "message": "", "events": []})


def cert(block: Block) -> bytes:
    return codec.encode(CommitCertificate(block.height, 0, block.hash, ((0, b"\x01" * 64),)).to_value())


class Chain:
    def __init__(self, path: Path) -> None:
        self.db = Database.open(path)
        self.state = StateStore(self.db)
        self.blocks = BlockStore(self.db, self.state)

    def genesis(self, items: dict[bytes, bytes]) -> None:
        self.blocks.commit_genesis(self.state.stage(dict(items)), GENESIS_HASH)

    def next_block(self, txs: list[SignedTx]) -> Block:
        h = self.blocks.height() + 1
        return Block.build(chain="test", height=h, parent=self.blocks.last_block_hash() or b"\x00" * 32,
                           proposer=KEY.public_key, view=0, time=h * 1000,
                           state_root=self.blocks.state_root_at(state_root_height(h)) or b"\x00" * 32,
                           results_root=self.blocks.results_root_at(state_root_height(h)) or b"\x00" * 32,
                           txs=[t.raw for t in txs])

    def commit(self, changes: dict[bytes, bytes | None], n_txs: int = 3) -> Block:
        txs = make_txs(self.blocks.height() + 1, n_txs)
        block = self.next_block(txs)
        self.blocks.commit(block, cert(block), [receipt(t) for t in txs], self.state.stage(changes),
                           tx_hashes=[t.hash for t in txs])
        return block

    def close(self) -> None:
        self.db.close()


def test_committed_blocks_are_served_byte_for_byte_with_their_certificate_and_indexes(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "db")
    chain.genesis({b"a": b"1"})
    genesis_root = chain.state.root()
    txs = make_txs(1, 4)
    block = chain.next_block(txs)
    raw = block.encode()
    staged = chain.state.stage({b"a": b"2", b"b": b"3"})
    receipts = [receipt(t, "failed" if i == 1 else "ok") for i, t in enumerate(txs)]
    chain.blocks.commit(block, cert(block), receipts, staged, block_bytes=raw)
    b = chain.blocks
    assert b.height() == 1
    assert b.last_block_hash() == block.hash
    assert b.get_block_bytes(1) == raw
    assert b.get_block(1) == block
    assert b.get_certificate(1) == cert(block)
    assert b.height_of(block.hash) == 1
    assert b.state_root_at(0) == genesis_root
    assert b.state_root_at(1) == staged.new_root == chain.state.root() == b.state_root()
    assert b.get_tx_location(txs[2].hash) == (1, 2)  # derived from the txs when not passed in
    assert b.get_receipt(txs[2].hash) == receipts[2]
    assert b.get_tx(txs[3].hash) == (1, 3, txs[3].raw)
    assert b.receipts_at(1) == receipts
    assert b.get_block(2) is None and b.get_receipt(b"\x00" * 32) is None and b.get_tx(b"\x00" * 32) is None
    chain.close()


def test_reopen_after_close_keeps_blocks_state_and_head(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "db")
    chain.genesis({b"a": b"1"})
    blocks = [chain.commit({b"k%d" % h: b"v"}) for h in range(1, 6)]
    root = chain.state.root()
    chain.close()
    chain = Chain(tmp_path / "db")
    assert chain.blocks.height() == 5
    assert chain.state.root() == root == merkle.compute_root({b"a": b"1", **{b"k%d" % h: b"v" for h in range(1, 6)}})
    assert [h for h, _, _ in chain.blocks.iter_blocks(1)] == [1, 2, 3, 4, 5]
    assert [(h, c) for h, _, c in chain.blocks.iter_blocks(2, 4)] == [(2, cert(blocks[1])), (3, cert(blocks[2]))]
    assert chain.blocks.get_block(3) == blocks[2]
    chain.close()


def test_commits_must_extend_the_head_by_one_on_the_current_root(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "db")
    chain.genesis({})
    block = chain.next_block([])
    skipped = Block.build(chain="test", height=2, parent=block.hash, proposer=KEY.public_key, view=0,
                          time=1, state_root=chain.state.root(), results_root=GENESIS_RESULTS, txs=[])
    with pytest.raises(HeightMismatch):
        chain.blocks.commit(skipped, b"", [], chain.state.stage({}))
    stale = chain.state.stage({b"x": b"1"})
    chain.commit({b"y": b"1"}, n_txs=0)
    with pytest.raises(StaleStage):
        chain.blocks.commit(chain.next_block([]), b"", [], stale)
    wrong_root = Block.build(chain="test", height=2, parent=b"\x00" * 32, proposer=KEY.public_key, view=0,
                             time=1, state_root=b"\x07" * 32, results_root=GENESIS_RESULTS, txs=[])
    with pytest.raises(StorageError) as info:
        chain.blocks.commit(wrong_root, b"", [], chain.state.stage({}))
    assert info.value.code == "bad_commit"
    with pytest.raises(StorageError):
        chain.blocks.commit(chain.next_block(make_txs(2, 2)), b"", [b"only one"], chain.state.stage({}))
    with pytest.raises(HeightMismatch):
        chain.blocks.commit_genesis(chain.state.stage({}), GENESIS_HASH)
    assert chain.blocks.height() == 1
    chain.close()


def test_a_failure_in_the_middle_of_a_commit_leaves_nothing_of_that_height(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chain = Chain(tmp_path / "db")
    chain.genesis({b"a": b"1"})
    chain.commit({b"a": b"2"})
    root = chain.state.root()
    txs = make_txs(2, 3)
    block = chain.next_block(txs)
    staged = chain.state.stage({b"a": b"3", b"new": b"1"})
    original = WriteBatch.apply

    def apply_then_fail(self: WriteBatch, ops: object) -> None:
        original(self, ops)  # type: ignore[arg-type]
        raise OSError("simulated crash after the state ops were added to the batch")

    monkeypatch.setattr(WriteBatch, "apply", apply_then_fail)
    with pytest.raises(OSError):
        chain.blocks.commit(block, cert(block), [receipt(t) for t in txs], staged)
    monkeypatch.undo()
    b = chain.blocks
    assert b.height() == 1 and b.get_block_bytes(2) is None and b.get_certificate(2) is None
    assert b.get_tx_location(txs[0].hash) is None and b.state_root_at(2) is None
    assert chain.state.get(b"a") == b"2" and chain.state.get(b"new") is None
    assert chain.state.root() == root
    chain.blocks.commit(block, cert(block), [receipt(t) for t in txs], staged)  # the same staged commit still works
    assert b.height() == 2
    chain.close()


def test_a_replayed_tx_hash_keeps_pointing_at_its_first_inclusion(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "db")
    chain.genesis({})
    tx = make_txs(1, 1)[0]
    for _h in (1, 2):
        block = chain.next_block([tx, tx])
        chain.blocks.commit(block, cert(block), [receipt(tx), receipt(tx, "failed")], chain.state.stage({}),
                            tx_hashes=[tx.hash] * 2)
    assert chain.blocks.get_tx_location(tx.hash) == (1, 0)
    assert chain.blocks.get_receipt(tx.hash) == receipt(tx)
    assert chain.blocks.get_receipt_at(2, 1) == receipt(tx, "failed")
    chain.close()
    chain = Chain(tmp_path / "db")  # the open-time check accepts a replay pointing at its first inclusion
    assert chain.blocks.get_receipt(tx.hash) == receipt(tx)
    chain.close()


def test_kill_9_during_commits_leaves_a_consistent_height(tmp_path: Path) -> None:
    path = tmp_path / "db"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.unit.test_storage_blocks import Chain
        chain = Chain(__import__("pathlib").Path({str(path)!r}))
        chain.genesis({{b"seed": b"0"}})
        for h in range(1, 100_000):  # killed long before the end
            chain.commit({{b"k%d" % (h * 37 % 500 + i): b"v%d" % h for i in range(200)}}, n_txs=2)
            if h == 3:
                print("ready", flush=True)
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == b"ready", proc.stderr.read() if proc.stderr else b""
        time.sleep(0.4)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    chain = Chain(path)  # rebuilding the tree checks it against the stored root
    h = chain.blocks.height()
    assert h >= 3
    assert chain.blocks.get_block_bytes(h) is not None and chain.blocks.get_block_bytes(h + 1) is None
    assert chain.blocks.state_root_at(h) == chain.state.root()
    assert chain.blocks.state_root_at(h + 1) is None
    assert chain.blocks.get_certificate(h) == cert(chain.blocks.get_block(h))  # type: ignore[arg-type]
    items = dict(chain.state.reader().iter_range(b"", b"\xff"))
    assert merkle.compute_root(items) == chain.state.root()
    assert chain.db.get(schema.META_LAST_HASH) == chain.blocks.get_block(h).hash  # type: ignore[union-attr]
    chain.close()


def test_first_block_height_is_none_before_blocks_and_one_after(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "db")
    chain.genesis({})
    assert chain.blocks.first_block_height() is None
    chain.commit({b"a": b"1"})
    chain.commit({b"a": b"2"})
    assert chain.blocks.first_block_height() == 1
    chain.close()


def test_a_block_must_carry_the_state_root_after_the_block_two_below_it(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "db")
    chain.genesis({})
    chain.commit({b"a": b"1"}, n_txs=0)
    chain.commit({b"a": b"2"}, n_txs=0)
    assert chain.blocks.state_root_at(1) != chain.blocks.state_root_at(2)
    parent = chain.blocks.last_block_hash() or b""
    after_parent = Block.build(chain="test", height=3, parent=parent, proposer=KEY.public_key, view=0, time=3000,
                               state_root=chain.blocks.state_root(), results_root=GENESIS_RESULTS,
                               txs=[])  # the root after 2: one too new
    with pytest.raises(StorageError) as info:
        chain.blocks.commit(after_parent, b"", [], chain.state.stage({}))
    assert info.value.code == "bad_commit" and "after height 1" in info.value.message
    chain.commit({b"a": b"3"}, n_txs=0)  # the root after height 1: accepted
    assert chain.blocks.height() == 3
    chain.close()


def test_decided_records_survive_a_reopen_in_height_order_and_a_drop_removes_one(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "db")
    decided = DecidedBlocks(db)
    decided.put(8, b"block-8", b"cert-8")
    decided.put(7, b"block-7", b"cert-7")
    db.close()
    db = Database.open(tmp_path / "db")
    decided = DecidedBlocks(db)
    assert list(decided.entries()) == [(7, b"block-7", b"cert-7"), (8, b"block-8", b"cert-8")]
    decided.drop(7)
    assert [h for h, _b, _c in decided.entries()] == [8]
    db.close()
