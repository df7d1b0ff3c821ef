"""Mempool output: ready txs in per-sender nonce order, fair across senders; committed txs leave."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from node.mempool import Mempool, MempoolLimits
from tests.unit.test_mempool_admission import ALICE, BOB, CAROL, CHAIN, tx


@pytest.fixture
def nonces() -> dict[bytes, int]:
    return {}


@pytest.fixture
def pool(nonces: dict[bytes, int]) -> Iterator[Mempool]:
    mp = Mempool(CHAIN, lambda s: nonces.get(s, 0), limits=MempoolLimits(per_sender_max=64, nonce_window=64))
    yield mp
    mp.close()


def who(batch: list) -> list[tuple[str, int]]:  # type: ignore[type-arg]
    names = {ALICE.public_key: "A", BOB.public_key: "B", CAROL.public_key: "C"}
    return [(names[t.sender], t.nonce) for t in batch]


async def test_take_batch_returns_each_senders_txs_in_nonce_order_whatever_the_arrival_order(pool: Mempool) -> None:
    await pool.add_many([tx(ALICE, n).raw for n in (2, 0, 1)])
    assert who(pool.take_batch(10, 1 << 20)) == [("A", 0), ("A", 1), ("A", 2)]


async def test_take_batch_serves_senders_round_robin_oldest_first(pool: Mempool) -> None:
    await pool.add_many([tx(BOB, n).raw for n in range(3)])
    await pool.add_many([tx(ALICE, n).raw for n in range(3)])
    await pool.add_many([tx(CAROL, 0).raw])
    assert who(pool.take_batch(10, 1 << 20)) == [("B", 0), ("A", 0), ("C", 0), ("B", 1), ("A", 1),
                                                 ("B", 2), ("A", 2)]
    assert who(pool.take_batch(4, 1 << 20)) == [("B", 0), ("A", 0), ("C", 0), ("B", 1)]


async def test_take_batch_stops_at_a_nonce_gap_and_respects_the_byte_cap(pool: Mempool) -> None:
    await pool.add_many([tx(ALICE, n).raw for n in (0, 1, 3)])
    assert who(pool.take_batch(10, 1 << 20)) == [("A", 0), ("A", 1)]
    one = len(tx(ALICE, 0).raw)
    assert who(pool.take_batch(10, one * 2 - 1)) == [("A", 0)]
    assert pool.take_batch(0, 1 << 20) == []


async def test_take_batch_does_not_remove_and_skips_already_proposed_txs(pool: Mempool) -> None:
    txs = [tx(ALICE, n) for n in range(3)]
    await pool.add_many([t.raw for t in txs])
    first = pool.take_batch(2, 1 << 20)
    assert len(pool) == 3
    assert pool.take_batch(10, 1 << 20, skip={t.hash for t in first}) == [txs[2]]


async def test_a_sender_whose_committed_nonce_is_ahead_has_no_ready_txs_until_told(pool: Mempool, nonces: dict[bytes, int]) -> None:
    nonces[ALICE.public_key] = 1
    await pool.add_many([tx(ALICE, n).raw for n in (2, 3)])
    assert pool.take_batch(10, 1 << 20) == []
    pool.remove_committed([], account_nonces={ALICE.public_key: 2})
    assert who(pool.take_batch(10, 1 << 20)) == [("A", 2), ("A", 3)]


async def test_remove_committed_drops_committed_and_now_stale_txs(pool: Mempool) -> None:
    a = [tx(ALICE, n) for n in range(3)]
    rival = tx(BOB, 0)
    await pool.add_many([t.raw for t in [*a, rival]])
    # a block committed A0, A1 (as SignedTx) and BOB's nonce 0 through a different tx known only by hash
    removed = pool.remove_committed([a[0], a[1].hash, b"\x77" * 32], account_nonces={BOB.public_key: 1})
    assert removed == 3
    assert len(pool) == 1 and pool.get(a[2].hash) is not None
    assert pool.size_bytes == len(a[2].raw)
    assert who(pool.take_batch(10, 1 << 20)) == [("A", 2)]
    assert pool.stats.committed == 2 and pool.stats.evicted_stale == 1
    assert (await pool.add_many([a[0].raw]))[0].code == "already_committed"
    assert (await pool.add_many([tx(ALICE, 1, memo=b"late").raw]))[0].code == "nonce_too_low"


async def test_the_recently_committed_memory_is_bounded() -> None:
    mp = Mempool(CHAIN, lambda s: 0, limits=MempoolLimits(recent_committed=3))
    try:
        mp.remove_committed([bytes([i]) * 32 for i in range(10)])
        assert len(mp._recent) == 3
    finally:
        mp.close()


async def test_txs_pending_longer_than_the_ttl_are_dropped_oldest_first() -> None:
    now = [1000.0]
    mp = Mempool(CHAIN, lambda s: 0, limits=MempoolLimits(ttl_s=60.0))
    mp._clock = lambda: now[0]
    try:
        await mp.add_many([tx(ALICE, 5).raw])  # stuck behind a nonce gap
        now[0] += 30
        await mp.add_many([tx(BOB, 0).raw])
        now[0] += 31
        assert mp.prune_expired(force=True) == 1
        assert len(mp) == 1 and mp.stats.expired == 1
        now[0] += 30
        await mp.add_many([tx(CAROL, 0).raw])  # admission prunes too
        assert len(mp) == 1 and mp.take_batch(10, 1 << 20)[0].sender == CAROL.public_key
    finally:
        mp.close()


async def test_change_listeners_hear_the_new_totals_after_admission_and_removal(pool: Mempool) -> None:
    heard: list[tuple[int, int]] = []
    pool.add_change_listener(lambda n, b: heard.append((n, b)))
    a = tx(ALICE, 0)
    await pool.add_many([a.raw])
    await pool.add_many([a.raw])  # duplicate: no change, no call
    pool.remove_committed([a])
    assert heard == [(1, len(a.raw)), (0, 0)]


def test_remove_committed_refuses_raw_tx_bytes_mistaken_for_hashes(pool: Mempool) -> None:
    with pytest.raises(ValueError):
        pool.remove_committed([tx(ALICE, 0).raw])


async def test_after_the_state_moved_under_the_pool_a_resync_drops_used_nonces_and_recounts_ready_work() -> None:
    committed = {ALICE.public_key: 0}
    pool = Mempool(CHAIN, lambda k: committed.get(k, 0))
    try:
        res = await pool.add_many([tx(ALICE, n).raw for n in range(5)])
        assert all(r.accepted for r in res) and pool.ready_txs == 5
        committed[ALICE.public_key] = 3  # a state sync installed a state where nonces 0..2 are used
        assert pool.resync_nonces() == 3
        assert len(pool) == 2 and pool.ready_txs == 2
        committed[ALICE.public_key] = 7  # ...or all of them, and more
        assert pool.resync_nonces() == 2 and len(pool) == 0 and pool.ready_txs == 0
    finally:
        pool.close()
