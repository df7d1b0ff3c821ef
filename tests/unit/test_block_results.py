"""A block's results (receipts + time-driven events) are committed by the next header, checked by every
node, and rebuild exactly the audit indexes execution wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.chain import ChainStore
from node.executor import BlockExecutor, BlockRejected, Parent
from protocol.block import Block
from protocol.crypto import sha256
from protocol.errors import FieldError
from protocol.ledger import apply_genesis, keys
from protocol.ledger.harness import Harness
from protocol.ledger.results import genesis_index_entries, index_entries, last_results_roots
from protocol.ledger.store import enc
from protocol.results import GENESIS_RESULTS, NO_EVENTS, results_root
from protocol.state import MemoryState, Overlay
from storage.blocks import BlockStore
from storage.db import Database
from storage.errors import StorageError
from storage.state import StateStore
from storage.wal import ConsensusWal


def test_genesis_index_entries_are_exactly_the_index_keys_genesis_writes() -> None:
    h = Harness.standard()
    state = MemoryState()
    ov = Overlay(state)
    apply_genesis(ov, h.spec)
    wrote = {k: v for k, v in ov.changes().items() if k.startswith(keys.INDEX_PREFIXES)}
    assert wrote and dict(genesis_index_entries(h.spec)) == wrote


def test_a_block_without_txs_or_events_has_the_genesis_results_root_and_state_keeps_the_last_two() -> None:
    h = Harness.standard()
    assert last_results_roots(h.state) == (GENESIS_RESULTS, GENESIS_RESULTS)
    res = h.advance(1)
    assert res.results_root == GENESIS_RESULTS == results_root((), NO_EVENTS)
    tx = h.tx("banka", "transfer", to=h.id("smea"), asset="CNY.BANKA", amount=5)
    second = h.block([tx])
    assert last_results_roots(h.state) == (GENESIS_RESULTS, second.results_root) != (GENESIS_RESULTS,) * 2
    third = h.advance(1)
    assert last_results_roots(h.state) == (second.results_root, third.results_root)


def test_results_root_changes_with_any_receipt_byte_and_with_the_block_events() -> None:
    receipts = (enc({"a": 1}), enc({"b": 2}))
    base = results_root(receipts, NO_EVENTS)
    assert results_root((receipts[0], enc({"b": 3})), NO_EVENTS) != base
    assert results_root(receipts[::-1], NO_EVENTS) != base
    assert results_root(receipts, enc([{"x": 1}])) != base
    assert results_root(receipts[:1], NO_EVENTS) != base


@pytest.mark.parametrize("receipt, events", [
    (b"\xc1", NO_EVENTS),  # not msgpack
    (enc({"tx_hash": b"\0" * 32, "status": "ok"}), NO_EVENTS),  # no events list
    (enc({"tx_hash": b"\0" * 32, "status": "maybe", "events": []}), NO_EVENTS),
    (enc({"tx_hash": b"\0" * 32, "status": "ok", "events": [{"height": 9, "index": 0}]}), NO_EVENTS),
    (enc({"tx_hash": b"\0" * 32, "status": "ok", "events": []}), enc({"not": "a list"})),
    (enc({"tx_hash": b"\0" * 32, "status": "ok", "events": []}),
     enc([{"height": 1, "index": 1, "kind": "k", "accounts": []}])),  # index out of place
])
def test_malformed_results_are_refused_with_a_field_error(receipt: bytes, events: bytes) -> None:
    with pytest.raises(FieldError):
        index_entries(1, [receipt], events)


def _chain(tmp_path: Path) -> tuple[ChainStore, BlockExecutor, Harness]:
    h = Harness.standard()
    db = Database.open(tmp_path / "db")
    state = StateStore(db, index_prefixes=keys.INDEX_PREFIXES)
    blocks = BlockStore(db, state)
    ov = Overlay(state.reader(snapshot=False))
    apply_genesis(ov, h.spec)
    blocks.commit_genesis(state.stage(ov.changes()), sha256(b"genesis"))
    store = ChainStore(db, state, blocks, ConsensusWal(db))
    return store, BlockExecutor("smeledger-test", blocks, max_future_ms=10**12, max_block_txs=100,
                                max_block_bytes=1 << 20), h


def test_a_proposal_must_carry_the_results_root_of_the_block_two_below_and_execution_checks_it(
        tmp_path: Path) -> None:
    store, ex, h = _chain(tmp_path)
    try:
        genesis = store.head
        assert store.blocks.results_root_at(0) == GENESIS_RESULTS

        def build(height: int, parent: bytes, results: bytes, nonce: int) -> Block:
            tx = h.tx("banka", "transfer", to=h.id("smea"), asset="CNY.BANKA", amount=5, nonce=nonce)
            root = store.blocks.state_root_at(max(0, height - 2))
            assert root is not None
            return Block.build(chain=ex.chain_id, height=height, parent=parent, proposer=h.id("banka"), view=0,
                               time=10**9 + height, state_root=root, results_root=results, txs=[tx.raw])

        def parent(height: int, block_hash: bytes, results: bytes | None) -> Parent:
            return Parent(height, block_hash, 0, genesis.state_root, results)

        made_up = build(1, genesis.block_hash, sha256(b"made up"), 0)
        with pytest.raises(BlockRejected) as info:
            ex.precheck(made_up, parent(0, genesis.block_hash, GENESIS_RESULTS), 10**9)
        assert info.value.reason == "wrong_results_root"
        ex.precheck(made_up, parent(0, genesis.block_hash, None), 10**9)  # None: below a snapshot, not checked
        first = build(1, genesis.block_hash, GENESIS_RESULTS, 0)
        done = ex.execute(first, b"cert", ex.precheck(first, parent(0, genesis.block_hash, GENESIS_RESULTS), 10**9),
                          store.state)
        assert done.result.results_root != GENESIS_RESULTS
        assert store.blocks.results_root_at(1) == done.result.results_root
        assert store.blocks.receipts_at(1) == list(done.result.receipt_bytes)
        assert store.blocks.block_events_at(1) == done.result.events_bytes
        second = build(2, first.hash, GENESIS_RESULTS, 1)  # block 2 carries the roots of height 0 too
        ex.execute(second, b"cert", ex.decoded(second), store.state)
        stale = build(3, second.hash, GENESIS_RESULTS, 2)  # block 3 must carry the results of block 1
        with pytest.raises(StorageError) as err:  # certified or not: executing it would diverge, so never
            ex.execute(stale, b"cert", ex.decoded(stale), store.state)
        assert err.value.code == "bad_commit" and store.blocks.height() == 2
        good = build(3, second.hash, done.result.results_root, 2)
        ex.execute(good, b"cert", ex.decoded(good), store.state)
        assert store.blocks.height() == 3
    finally:
        store.close_now()
