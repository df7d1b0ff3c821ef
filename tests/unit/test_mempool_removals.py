"""Nothing accepted just disappears: every way a tx leaves the mempool tells the removal listeners why."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from node.mempool import Mempool, MempoolLimits, Room
from protocol.tx import SignedTx
from tests.unit.test_mempool_admission import ALICE, BOB, CHAIN, tx

Heard = list[tuple[str, list[SignedTx]]]


@pytest.fixture
def nonces() -> dict[bytes, int]:
    return {}


@pytest.fixture
def clock() -> list[float]:
    return [1000.0]


@pytest.fixture
def pool(nonces: dict[bytes, int], clock: list[float]) -> Iterator[Mempool]:
    mp = Mempool(CHAIN, lambda s: nonces.get(s, 0), limits=MempoolLimits(ttl_s=60.0))
    mp._clock = lambda: clock[0]
    yield mp
    mp.close()


@pytest.fixture
def heard(pool: Mempool) -> Heard:
    out: Heard = []

    def listen(txs: Sequence[SignedTx], reason: str) -> None:
        out.append((reason, list(txs)))
    pool.add_removal_listener(listen)
    return out


async def test_a_committed_tx_leaves_as_committed_and_a_pending_rival_with_its_nonce_as_nonce_used(
        pool: Mempool, heard: Heard) -> None:
    mine, rival_nonce = tx(ALICE, 0), tx(BOB, 0)
    await pool.add_many([mine.raw, rival_nonce.raw])
    other = tx(BOB, 0, memo=b"committed elsewhere")  # same sender and nonce, another body
    pool.remove_committed([mine, other])
    assert heard == [("committed", [mine]), ("nonce_used", [rival_nonce])]
    assert len(pool) == 0


async def test_a_tx_pending_longer_than_the_ttl_leaves_as_expired(pool: Mempool, heard: Heard, clock: list[float]) -> None:
    stuck = tx(ALICE, 3)  # behind a nonce gap
    await pool.add_many([stuck.raw])
    clock[0] += 60.5
    assert pool.prune_expired(force=True) == 1
    assert heard == [("expired", [stuck])]


async def test_after_a_snapshot_the_resync_drops_txs_whose_nonces_were_used_as_nonce_used(
        pool: Mempool, heard: Heard, nonces: dict[bytes, int]) -> None:
    txs = [tx(ALICE, n) for n in range(3)]
    await pool.add_many([t.raw for t in txs])
    nonces[ALICE.public_key] = 2  # the installed snapshot's state: nonces 0 and 1 were used
    assert pool.resync_nonces() == 2
    assert heard == [("nonce_used", txs[:2])]
    assert pool.ready_txs == 1 and pool.get(txs[2].hash) is not None


async def test_a_tx_that_the_executed_blocks_nonces_make_ready_is_announced_as_work(
        pool: Mempool, nonces: dict[bytes, int]) -> None:
    """Pipelined commit: a block's txs leave the pool when it is decided, the ledger's nonces follow once
    it is executed. A tx of the same sender arriving in between waits behind the old nonce; when the
    executed block's nonces make it ready, consensus must hear of it (before, nothing told it, and a
    one-validator chain with no further txs never proposed it: the tx stayed pending)."""
    changes: list[tuple[int, int]] = []
    pool.add_change_listener(lambda txs, nbytes: changes.append((txs, nbytes)))
    first, second = tx(ALICE, 0), tx(ALICE, 1)
    await pool.add_many([first.raw])
    pool.remove_committed([first])  # decided: it leaves, and ALICE with it (no txs of hers left)
    await pool.add_many([second.raw])  # the state still says nonce 0: nonce 1 waits
    assert pool.ready_txs == 0
    changes.clear()
    nonces[ALICE.public_key] = 1
    pool.remove_committed((), {ALICE.public_key: 1})  # executed: the ledger's nonces arrive
    assert pool.ready_txs == 1 and changes, "the listeners heard that there is ready work"


async def test_a_resync_that_makes_a_waiting_tx_ready_is_announced_as_work(
        pool: Mempool, nonces: dict[bytes, int]) -> None:
    changes: list[tuple[int, int]] = []
    waiting = tx(ALICE, 2)
    await pool.add_many([waiting.raw])
    pool.add_change_listener(lambda txs, nbytes: changes.append((txs, nbytes)))
    nonces[ALICE.public_key] = 2
    assert pool.resync_nonces() == 0 and pool.ready_txs == 1 and changes


async def test_refused_and_duplicate_txs_are_no_removal_and_nothing_is_reported(pool: Mempool, heard: Heard) -> None:
    a = tx(ALICE, 0)
    await pool.add_many([a.raw, a.raw, tx(ALICE, 0, chain="other").raw])
    pool.remove_committed([b"\x55" * 32])
    assert heard == [] and len(pool) == 1


async def test_a_callers_room_admits_up_to_its_bound_and_refuses_the_rest_with_its_code(pool: Mempool) -> None:
    txs = [tx(ALICE, n) for n in range(3)]
    room = Room(2, len(txs[0].raw) + len(txs[1].raw), "journal_full", "full")
    assert [r.code for r in await pool.add_many([t.raw for t in txs], room=room)] == [
        "accepted", "accepted", "journal_full"]
    byte_short = Room(5, len(txs[2].raw) - 1, "journal_full", "full")  # one byte short of the next tx
    assert [r.code for r in await pool.add_many([txs[2].raw], room=byte_short)] == ["journal_full"]
