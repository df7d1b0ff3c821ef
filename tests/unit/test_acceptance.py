"""The accepted-tx journal's owner on its own: its room at the byte edge, bounded drop records, the reasons a
restart gives to journaled txs it cannot re-admit, compaction, and fail-stop on a failed write."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from node.acceptance import Acceptance, JournalLimits
from node.journal import JournalError, JournalFile, add_record
from node.mempool import Mempool, MempoolLimits
from protocol.tx import SignedTx
from tests.unit.test_mempool_admission import ALICE, BOB, CAROL, CHAIN, tx


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    warning = info


class _Rig:
    """An Acceptance over a real journal file and mempool, its run() task going, restartable."""

    def __init__(self, tmp: Path, **limits: Any) -> None:
        self.tmp = tmp
        self.limits = limits
        self.nonces: dict[bytes, int] = {}
        self.chain: dict[bytes, tuple[int, int]] = {}  # the tx index
        self.frozen: set[bytes] = set()
        self.now = [1_000_000]
        self.pool_limits = MempoolLimits()
        self.log = _Log()
        self.acc: Acceptance | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Acceptance:
        def check(t: SignedTx) -> tuple[str, str] | None:
            return ("frozen", "frozen") if t.sender in self.frozen else None
        pool = Mempool(CHAIN, lambda s: self.nonces.get(s, 0), sender_check=check, limits=self.pool_limits)
        lim = {"max_txs": 1000, "max_bytes": 1 << 20, **self.limits}
        self.acc = Acceptance(pool, JournalFile(self.tmp / "journal"), JournalLimits(**lim),
                              tx_committed=self.chain.__contains__, log=self.log, clock_ms=lambda: self.now[0])
        await self.acc.open()
        await self.acc.restore()
        self.task = asyncio.create_task(self.acc.run())
        return self.acc

    async def stop(self) -> None:
        assert self.task is not None and self.acc is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.acc.mempool.close()

    async def restart(self) -> Acceptance:
        await self.stop()
        return await self.start()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[_Rig] = []

    async def make(**limits: Any) -> _Rig:
        r = _Rig(tmp_path, **limits)
        await r.start()
        made.append(r)
        return r
    yield make
    for r in made:
        if r.task is not None and not r.task.done():
            await r.stop()


def _codes(results: list[Any]) -> list[str]:
    return [r.code for r in results]


async def test_the_journal_takes_txs_up_to_its_byte_bound_exactly_and_not_one_byte_more(rig: Any) -> None:
    a, b, c = tx(ALICE, 1), tx(ALICE, 2), tx(ALICE, 3)
    r = await rig(max_bytes=len(a.raw) + len(b.raw))
    assert _codes(await r.acc.submit([a.raw, b.raw, c.raw])) == ["accepted", "accepted", "journal_full"]
    assert r.acc.room() == (998, 0)


async def test_a_drop_is_remembered_with_its_reason_across_a_restart_and_only_the_newest_are_kept(rig: Any) -> None:
    r = await rig(dropped_keep=2)
    txs = [tx(ALICE, 5), tx(BOB, 5), tx(CAROL, 5)]
    for t in txs:
        await r.acc.submit([t.raw])
        r.acc.mempool.remove_committed([], {t.sender: 6})  # another tx used nonce 5
    assert [r.acc.dropped(t.hash) is not None for t in txs] == [False, True, True]
    acc = await r.restart()
    assert [acc.dropped(t.hash) is not None for t in txs] == [False, True, True]
    assert acc.dropped(txs[2].hash).reason == "nonce_used"  # type: ignore[union-attr]
    assert len(acc) == 0 and len(acc.mempool) == 0  # dropped txs are not re-admitted


async def test_a_drop_older_than_the_age_bound_is_forgotten(rig: Any) -> None:
    r = await rig(dropped_keep_ms=60_000)
    old = tx(ALICE, 5)
    await r.acc.submit([old.raw])
    r.acc.mempool.remove_committed([], {ALICE.public_key: 6})
    r.now[0] += 60_001
    acc = await r.restart()
    assert acc.dropped(old.hash) is None


async def test_a_restart_gives_each_journaled_tx_it_cannot_readmit_a_final_status(rig: Any) -> None:
    r = await rig()
    committed, used, frozen, kept = tx(ALICE, 0), tx(BOB, 0), tx(CAROL, 0), tx(ALICE, 1)
    assert _codes(await r.acc.submit([t.raw for t in (committed, used, frozen, kept)])) == ["accepted"] * 4
    await r.stop()
    r.nonces.update({ALICE.public_key: 1, BOB.public_key: 1})  # meanwhile the chain moved on
    r.chain[committed.hash] = (7, 0)
    r.frozen.add(CAROL.public_key)
    acc = await r.start()
    assert acc.dropped(committed.hash) is None and not acc.journaled(committed.hash)
    assert acc.dropped(used.hash).reason == "nonce_used"  # type: ignore[union-attr]
    assert acc.dropped(frozen.hash).reason == "sender_frozen"  # type: ignore[union-attr]
    assert acc.mempool.status(kept.hash) == "pending" and acc.journaled(kept.hash)
    [(_event, counts)] = [e for e in r.log.events if e[0] == "journal_restored"]
    assert counts == {"txs": 4, "committed": 1, "nonce_used": 1, "sender_frozen": 1, "readmitted": 1}


async def test_journaled_txs_without_room_at_a_restart_are_evicted_and_a_garbled_one_is_invalid(rig: Any) -> None:
    r = await rig()
    txs = [tx(ALICE, n) for n in (1, 2)]
    await r.acc.submit([t.raw for t in txs])
    await r.stop()
    r.acc.file.open()
    r.acc.file.append([add_record(b"\x42" * 32, b"\xc1not a tx")], sync=True)
    r.acc.file.close()
    r.pool_limits = MempoolLimits(max_txs=1)
    acc = await r.start()
    assert acc.mempool.status(txs[0].hash) == "pending"
    assert acc.dropped(txs[1].hash).reason == "evicted"  # type: ignore[union-attr]
    assert acc.dropped(b"\x42" * 32).reason == "invalid"  # type: ignore[union-attr]


async def test_the_journal_is_compacted_to_what_it_keeps_once_it_is_mostly_closed_records(rig: Any) -> None:
    r = await rig(compact_min_bytes=4096)
    for n in range(40):
        t = tx(ALICE, n)
        await r.acc.submit([t.raw])
        r.acc.mempool.remove_committed([t])
    last = tx(ALICE, 40)
    await r.acc.submit([last.raw])
    size = r.acc.file.path.stat().st_size
    assert size < 4096 + 2 * len(add_record(last.hash, last.raw)) + 64
    assert list(JournalFile(r.tmp / "journal").replay().live) == [last.hash]


async def test_a_failed_journal_write_answers_journal_failed_and_ends_the_journal_task(rig: Any) -> None:
    r = await rig()
    r.acc.file.close()  # the disk goes away: every write now fails
    with pytest.raises(JournalError) as err:
        await r.acc.submit([tx(ALICE, 1).raw])
    assert err.value.code == "journal_failed" and err.value.http_status == 503
    with pytest.raises(JournalError):
        await asyncio.wait_for(r.task, 5)
    with pytest.raises(JournalError):  # and nothing is accepted after it
        await r.acc.submit([tx(ALICE, 2).raw])


async def test_after_a_snapshot_a_tx_that_used_its_own_nonce_leaves_without_a_drop_and_a_rival_is_nonce_used(
        rig: Any) -> None:
    r = await rig()
    own, rival = tx(ALICE, 0), tx(BOB, 0)
    await r.acc.submit([own.raw, rival.raw])
    r.nonces.update({ALICE.public_key: 1, BOB.public_key: 1})  # the snapshot's state
    r.chain[own.hash] = (3, 0)  # the ledger's record says `own` executed; BOB's nonce went to another tx
    assert r.acc.mempool.resync_nonces() == 2
    assert r.acc.dropped(own.hash) is None and not r.acc.journaled(own.hash)
    assert r.acc.dropped(rival.hash).reason == "nonce_used"  # type: ignore[union-attr]


async def test_the_journal_task_stops_when_it_is_cancelled_in_the_moment_a_batch_wakes_it(rig: Any) -> None:
    r = await rig()
    await asyncio.sleep(0.05)  # the task waits for work
    r.acc._wake.set()  # a batch arrives ...
    r.task.cancel()  # ... as the node stops (Python 3.11's wait_for would swallow this cancellation)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(r.task), 5)


async def test_a_batch_whose_write_is_running_when_the_node_stops_still_gets_its_answer(rig: Any) -> None:
    r = await rig()
    entered, release = threading.Event(), threading.Event()
    real = r.acc.file.append

    def slow_append(records: list[bytes], sync: bool, accepted: bool = False) -> int:
        entered.set()
        release.wait(10)
        return real(records, sync, accepted)
    r.acc.file.append = slow_append
    t = tx(ALICE, 1)
    submit = asyncio.create_task(r.acc.submit([t.raw]))
    assert await asyncio.to_thread(entered.wait, 10)  # the group commit is on the journal thread
    r.task.cancel()  # the node stops meanwhile
    await asyncio.sleep(0.05)
    release.set()
    assert _codes(await asyncio.wait_for(submit, 5)) == ["accepted"]
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(r.task), 5)
    assert list(JournalFile(r.tmp / "journal").replay().live) == [t.hash]
