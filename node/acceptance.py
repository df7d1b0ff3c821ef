"""Accepted means durable: the API's tx intake, the owner of the accepted-tx journal, and the final status of
every tx this node accepted.

Intake (`submit`, what `POST /txs` calls): the batch reserves the journal's free room first and the mempool
admits no more than fits in it (the txs past it answer `journal_full`, which the API turns into 503 +
Retry-After, and are not admitted); the mempool admits what it can without gossiping it yet; the accepted txs are appended to the journal and
made durable with ONE fdatasync for the batch (concurrent batches share it: group commit); only then are
they gossiped and the answer sent. So a tx leaves this node, and a client hears `accepted`, only once it
is on disk here. Txs admitted from gossip are not journaled: the node that accepted them from a client
journaled them and re-gossips them after a restart.

Leaving: the mempool tells why each tx leaves the pool (node/mempool.py). A committed tx leaves the
journal (a `C` record); any other reason is a drop: the tx leaves the journal, and the reason is kept with
the time (a `D` record) so `GET /txs/{hash}` answers `dropped` with it, also after a restart. The kept drops
are bounded: the newest `dropped_keep` (default 100,000) and none older than `dropped_keep_s` (default 7
days); a hash past either bound answers 404 `unknown` again. These records are written with the next
group commit or the once-a-second housekeeping sync, not on their own: lost in a crash, they cost nothing
but a re-check against the chain at the next start.

Restart (`open`, then `restore` before intake opens): the journal is replayed (a torn tail cut and logged
as `journal_tail_cut`), every accepted tx still open is admitted again (signatures checked again) and
gossiped to peers as they connect. One the chain already holds leaves as committed; one the pool refuses
is dropped with the reason its refusal implies (`RESTORE_REASONS`).

Rule: the journal file is touched on ONE journal thread, in the order the loop queued the records; the loop
keeps the bookkeeping (open txs, drops, room) and never waits on the disk except for the answer it must
not give early. A failed journal write ends `run()`, and with it the node (fail-stop): a node that answers
`accepted` without a journal would break its promise silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from node.journal import (
    FRAME_HEADER,
    HASH,
    Dropped,
    JournalError,
    JournalFile,
    add_record,
    committed_record,
    dropped_record,
)
from node.mempool import COMMITTED, EXPIRED, NONCE_USED, AdmitResult, Mempool, Room
from protocol.tx import SignedTx

T = TypeVar("T")

HOUSEKEEPING_S = 1.0  # drops pruned by age and queued C/D records synced at least this often
COMPACT_MIN_BYTES = 4 * 1024 * 1024  # the file is rewritten once it is over this and twice what it keeps
ADD_OVERHEAD = FRAME_HEADER.size + 1 + HASH
DROP_OVERHEAD = FRAME_HEADER.size + 1 + HASH + 8 + 16

SENDER_FROZEN = "sender_frozen"
EVICTED = "evicted"
INVALID = "invalid"
# what a tx's drop reason means, as GET /txs/{hash} explains it
REASONS: dict[str, str] = {
    EXPIRED: "it waited longer than the mempool TTL (mempool.ttl_s), e.g. behind a nonce gap never filled",
    NONCE_USED: "another tx with the same sender and nonce was committed",
    SENDER_FROZEN: "its sender is frozen",
    "not_registered": "its sender is not a registered participant",
    "forbidden_role": "its sender's roles do not allow this kind of tx",
    "unknown_kind": "this chain has no such tx kind",
    EVICTED: "the node had no room or nonce window for it when it re-admitted its journal after a restart",
    INVALID: "its journal record is not a valid tx for this chain",
}
# the pool's refusal of a journaled tx at restart -> the drop reason (anything else: INVALID)
RESTORE_REASONS: dict[str, str] = {
    "nonce_too_low": NONCE_USED, "already_committed": NONCE_USED, "frozen": SENDER_FROZEN,
    "not_registered": "not_registered", "forbidden_role": "forbidden_role", "unknown_kind": "unknown_kind",
    "mempool_full": EVICTED, "sender_limit": EVICTED, "nonce_too_high": EVICTED, "batch_too_large": EVICTED,
}


@dataclass(frozen=True, slots=True)
class JournalLimits:
    max_txs: int  # accepted txs open at once (the mempool's bound unless set lower)
    max_bytes: int  # their raw bytes
    dropped_keep: int = 100_000
    dropped_keep_ms: int = 7 * 24 * 3600 * 1000
    compact_min_bytes: int = COMPACT_MIN_BYTES


@dataclass(frozen=True, slots=True)
class _Write:
    """A group commit running on the journal thread and the answers waiting for it."""

    fut: asyncio.Future[int]  # bytes written (append) or the new file size (rewrite)
    waiters: list[asyncio.Future[None]]
    grow: bool  # an append (the file grew by the result) rather than a rewrite
    started: float


def _wall_ms() -> int:
    return int(time.time() * 1000)


class Acceptance:
    def __init__(self, mempool: Mempool, file: JournalFile, limits: JournalLimits, *,
                 tx_committed: Callable[[bytes], bool], log: Any,
                 registry: CollectorRegistry | None = None, clock_ms: Callable[[], int] = _wall_ms) -> None:
        """`tx_committed(hash)` says whether the chain holds the tx: its tx index, or the ledger's record
        of an executed tx (which a state-synced node has for history whose blocks it skipped)."""
        self.mempool = mempool
        self.file = file
        self.limits = limits
        self._tx_committed = tx_committed
        self.log = log
        self._clock_ms = clock_ms
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="journal")
        self._live: OrderedDict[bytes, bytes] = OrderedDict()  # open accepted txs: hash -> raw
        self._live_bytes = 0
        self._dropped: OrderedDict[bytes, Dropped] = OrderedDict()  # oldest first
        self._reserved = (0, 0)  # (txs, bytes) of batches being admitted
        self._queue: list[bytes] = []  # records for the next write, in order
        self._waiters: list[asyncio.Future[None]] = []  # answers waiting for that write to be synced
        self._wake = asyncio.Event()
        self._file_bytes = 0
        self._failed: JournalError | None = None
        self._inflight: _Write | None = None  # the group commit on the journal thread, if one is running
        self._closed = False
        self.drops: Counter[str] = Counter()  # by reason, since start
        self._sync_seconds = Histogram("smeledger_journal_sync_seconds", "Write + fdatasync of one group commit",
                                       buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
                                       registry=registry)
        if registry is not None:
            registry.register(_Collector(self))
        mempool.add_removal_listener(self._on_removed)

    # ---- queries ---------------------------------------------------------------------------------

    def dropped(self, tx_hash: bytes) -> Dropped | None:
        """Why this node dropped the tx, while that is remembered (see the module docstring)."""
        return self._dropped.get(tx_hash)

    def journaled(self, tx_hash: bytes) -> bool:
        return tx_hash in self._live

    def __len__(self) -> int:
        return len(self._live)

    # ---- start: replay and re-admit ----------------------------------------------------------------

    async def open(self) -> None:
        """Replay the journal file (on the journal thread); cut and log a bad tail."""
        replayed = await self._on_thread(self.file.open)
        self._live, self._dropped, self._file_bytes = replayed.live, replayed.dropped, replayed.file_bytes
        self._live_bytes = sum(len(raw) for raw in self._live.values())
        if replayed.cut_bytes:
            self.log.warning("journal_tail_cut", path=str(self.file.path), at=replayed.file_bytes,
                             cut_bytes=replayed.cut_bytes, reason=replayed.cut_reason)
        self._prune_dropped()

    async def restore(self) -> None:
        """Admit every journaled tx again; the ones that cannot be leave as committed or dropped."""
        items = list(self._live.items())
        counts: Counter[str] = Counter()
        step = self.mempool.limits.max_batch
        for i in range(0, len(items), step):
            chunk = items[i:i + step]
            results = await self.mempool.add_many([raw for _h, raw in chunk], None)
            for (h, _raw), r in zip(chunk, results, strict=True):
                counts[self._restored(h, r)] += 1
        if items:
            self.log.info("journal_restored", txs=len(items), **{k: counts[k] for k in sorted(counts)})

    def _restored(self, h: bytes, r: AdmitResult) -> str:
        if r.hash == h and (r.accepted or r.code == "duplicate"):
            return "readmitted"
        if r.hash == h and r.code in ("nonce_too_low", "already_committed") and self._tx_committed(h):
            self._leave(h)
            return "committed"
        reason = RESTORE_REASONS.get(r.code, INVALID) if r.hash == h else INVALID
        self._drop(h, reason, self._clock_ms())
        return reason

    # ---- intake ------------------------------------------------------------------------------------

    def room(self) -> tuple[int, int]:
        """(txs, bytes) the journal can still take, net of the batches being admitted."""
        rt, rb = self._reserved
        lim = self.limits
        return max(0, lim.max_txs - len(self._live) - rt), max(0, lim.max_bytes - self._live_bytes - rb)

    async def submit(self, raws: Sequence[bytes]) -> list[AdmitResult]:
        """Admit a client batch; every tx answered `accepted` is durable in the journal on return. Txs past
        the journal's free room answer `journal_full` and are not admitted."""
        free_txs, free_bytes = self.room()
        held = (min(free_txs, len(raws)), min(free_bytes, sum(len(r) for r in raws)))
        self._reserved = (self._reserved[0] + held[0], self._reserved[1] + held[1])
        try:
            results = await self.mempool.add_many(raws, None, announce=False, room=Room(
                held[0], held[1], "journal_full", "the node's tx journal is full; retry later"))
            accepted = [r.tx for r in results if r.accepted and r.tx is not None]
            if accepted:
                records = []
                for tx in accepted:
                    self._live[tx.hash] = tx.raw
                    self._live_bytes += len(tx.raw)
                    records.append(add_record(tx.hash, tx.raw))
                await self._append(records)
                self.mempool.announce(accepted)
        finally:
            self._reserved = (self._reserved[0] - held[0], self._reserved[1] - held[1])
        return results

    async def _append(self, records: list[bytes]) -> None:
        """Queue records and wait until the journal thread has synced them."""
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise JournalError("the tx journal is closed (the node is stopping)", code="journal_closed")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.extend(records)
        self._waiters.append(fut)
        self._wake.set()
        await asyncio.shield(fut)

    # ---- leaving -----------------------------------------------------------------------------------

    def _on_removed(self, txs: Sequence[SignedTx], reason: str) -> None:
        if reason == COMMITTED:
            for tx in txs:
                self._leave(tx.hash)
            return
        at = self._clock_ms()
        for tx in txs:
            if reason == NONCE_USED and self._tx_committed(tx.hash):
                self._leave(tx.hash)  # its own nonce: it committed in blocks this node skipped (a snapshot)
            else:
                self._drop(tx.hash, reason, at)

    def _leave(self, h: bytes) -> None:
        raw = self._live.pop(h, None)
        if raw is not None:
            self._live_bytes -= len(raw)
            self._queue.append(committed_record(h))

    def _drop(self, h: bytes, reason: str, at_ms: int) -> None:
        self.drops[reason] += 1
        if self.limits.dropped_keep <= 0:  # nothing remembered: it only leaves the journal
            self._leave(h)
            return
        raw = self._live.pop(h, None)
        if raw is not None:
            self._live_bytes -= len(raw)
        info = Dropped(reason, at_ms)
        self._dropped.pop(h, None)
        self._dropped[h] = info
        self._queue.append(dropped_record(h, info))
        if len(self._dropped) > self.limits.dropped_keep:
            self._dropped.popitem(last=False)

    def _prune_dropped(self) -> None:
        """Forget drops past the count bound and the age bound (oldest first)."""
        while len(self._dropped) > self.limits.dropped_keep:
            self._dropped.popitem(last=False)
        cutoff = self._clock_ms() - self.limits.dropped_keep_ms
        while self._dropped:
            h, info = next(iter(self._dropped.items()))
            if info.at_ms >= cutoff:
                break
            del self._dropped[h]

    # ---- the journal thread ------------------------------------------------------------------------

    async def _on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        fut = asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        return await asyncio.shield(fut)  # a cancelled caller stops waiting; the write still completes

    async def run(self) -> None:
        """The journal's task: group commits as answers wait for them, housekeeping once a second."""
        next_housekeeping = time.monotonic() + HOUSEKEEPING_S
        try:
            while True:
                # the wait ends at the next housekeeping (asyncio.timeout, not wait_for: on 3.11 wait_for
                # swallows a cancellation that arrives as the event is set, and the node never stops)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, next_housekeeping - time.monotonic())):
                        await self._wake.wait()
                self._wake.clear()
                if time.monotonic() >= next_housekeeping:
                    self._prune_dropped()
                    next_housekeeping = time.monotonic() + HOUSEKEEPING_S
                await self._flush()
        finally:
            await self._close()

    async def _flush(self) -> None:
        """One group commit: everything queued, in one write and ONE sync, then the answers waiting for it.
        A cancelled flush leaves its write running (`_inflight`); `_close` waits for it and answers."""
        if not self._queue:
            return
        records, self._queue = self._queue, []
        waiters, self._waiters = self._waiters, []
        loop = asyncio.get_running_loop()
        if self._compaction_due():
            fut = loop.run_in_executor(self._thread, self.file.rewrite, self._kept_records(), bool(waiters))
            self._inflight = _Write(fut, waiters, False, time.monotonic())
        else:
            fut = loop.run_in_executor(self._thread, self.file.append, records, True, bool(waiters))
            self._inflight = _Write(fut, waiters, True, time.monotonic())
        await asyncio.wait([fut])  # a cancellation of this task does not cancel the write
        self._settle()

    def _settle(self) -> None:
        """Answer the waiters of the finished write; a failed write fails them and raises (fail-stop)."""
        w, self._inflight = self._inflight, None
        if w is None:
            return
        exc = w.fut.exception()
        if exc is not None:
            err = exc if isinstance(exc, JournalError) else JournalError(f"tx journal write failed: {exc!r}")
            self._failed = err
            for f in w.waiters:
                if not f.done():
                    f.set_exception(err)
            raise err
        self._file_bytes = self._file_bytes + w.fut.result() if w.grow else w.fut.result()
        if w.waiters:
            self._sync_seconds.observe(time.monotonic() - w.started)
        for f in w.waiters:
            if not f.done():
                f.set_result(None)

    def _compaction_due(self) -> bool:
        kept = self._live_bytes + len(self._live) * ADD_OVERHEAD + len(self._dropped) * DROP_OVERHEAD
        return self._file_bytes > max(self.limits.compact_min_bytes, 2 * kept)

    def _kept_records(self) -> Iterator[bytes]:
        """What a replay would keep: lists taken on the loop, records built lazily on the journal thread."""
        live, dropped = list(self._live.items()), list(self._dropped.items())

        def records() -> Iterator[bytes]:
            for h, raw in live:
                yield add_record(h, raw)
            for h, info in dropped:
                yield dropped_record(h, info)
        return records()

    async def _close(self) -> None:
        """Write what is queued (unless the journal failed), then close the file and the thread. Cancelled
        while it waits for a write (the node's stop ran out of time), it stops waiting: that write is left
        to its thread, unanswered, as a crash would leave it (its waiters never heard `accepted`)."""
        self._closed = True
        try:
            if self._inflight is not None:  # the flush that was cancelled: its write still answers
                await asyncio.wait([self._inflight.fut])
                self._settle()
            if self._failed is None and self._queue:
                await self._flush()
        finally:
            closed = JournalError("the node stopped before the journal write", code="journal_closed")
            abandoned = self._inflight
            for w in [*self._waiters, *(abandoned.waiters if abandoned is not None else ())]:
                if not w.done():
                    w.set_exception(closed)
            if abandoned is None:  # the journal thread is idle: the file is closed on it
                await asyncio.get_running_loop().run_in_executor(self._thread, self.file.close)
                self._thread.shutdown(wait=True)
            else:
                self.log.warning("journal_write_abandoned", waited_s=round(time.monotonic() - abandoned.started, 3),
                                 answers=len(abandoned.waiters))
                self._thread.shutdown(wait=False)

    def close_now(self) -> None:
        """Synchronous close for start-up failures (run() never started)."""
        self._closed = True
        self._thread.submit(self.file.close).result()
        self._thread.shutdown(wait=True)


class _Collector(Collector):
    def __init__(self, acc: Acceptance) -> None:
        self._a = acc

    def collect(self) -> Iterator[Any]:
        a = self._a
        yield GaugeMetricFamily("smeledger_journal_txs", "Accepted txs open in the journal", value=len(a))
        yield GaugeMetricFamily("smeledger_journal_bytes", "Raw bytes of the open accepted txs", value=a._live_bytes)
        yield GaugeMetricFamily("smeledger_journal_file_bytes", "Size of the journal file", value=a._file_bytes)
        yield GaugeMetricFamily("smeledger_journal_dropped_kept", "Dropped txs whose reason is remembered",
                                value=len(a._dropped))
        fam = CounterMetricFamily("smeledger_dropped_txs", "Txs dropped from the mempool, by reason",
                                  labels=["reason"])
        for reason in sorted(a.drops):
            fam.add_metric([reason], a.drops[reason])
        yield fam
