"""The consensus driver: the single owner of the `Replica` in a running node.

One task takes items from the `ConsensusInbox` (internal items first: timer fires, validation answers,
blocks and snapshots handed over by sync; then the mempool's ready totals when they changed; then network
messages from a bounded queue), calls `Replica.handle(event, now_ms)` and carries the returned actions out
strictly in order. `Persist` records are synced to the WAL before any later action, so a vote is on disk
before anyone can see it (the Persists of a run of Persist/Send/Broadcast actions share one synced write
that precedes the run's messages, and the records WAL compaction dropped ride along in it). `CommitBlock` is pipelined: the decided block and its certificate are synced to
`storage.decided` before the next action (so the replica may agree on the next height at once), its txs
leave the mempool, and the `Pipeline` (node/pipeline.py; its `run()` a child task here) executes decided
blocks in height order on the store's execution thread, publishing each new head before the replica
hears `BlockExecuted`. A node restarted with decided blocks not executed executes them before consensus
starts.
Block validation (against the last decided block and the state root after height-2, signatures in
worker threads) runs in child tasks and answers through the inbox.

Fail-stop (DESIGN section 7): there is no catch-all here. A failed WAL write, a failed commit or any
unexpected exception ends `run()`, which ends the node: the node logs one line naming the cause and
exits non-zero, systemd restarts it, and the WAL restores the replica. Nothing after a failed action
runs, so a vote whose Persist failed is never sent, not even by a retransmit timer: the timers die
with the task. Work is the mempool's READY txs only (the sender's next nonce and what follows it without
a gap), so an idle chain, or one holding only gapped txs, makes no blocks.

Rule: nothing else touches the replica or the WAL, and block/state writes happen only through the pipeline. Every queue here is bounded or
fed only by the driver itself; a full network queue drops the message (consensus retransmits).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from node import failpoints
from node.chain import ChainHead, ChainStatus, ChainStore, TimeOffset
from node.consensus_metrics import ConsensusMetrics, ReplicaStats, StepClock
from node.executor import BlockExecutor, BlockRejected, Parent
from node.genesis import Genesis
from node.logging import Position
from node.mempool import Mempool
from node.p2p.node import Handler
from node.pipeline import Pipeline
from node.status import Health
from node.sync import SnapshotPlan, SyncService
from protocol import codec
from protocol import consensus as cs
from protocol.block import Block
from protocol.consensus.params import ConsensusParams
from protocol.consensus.wal import WalMeta, compact_plan, decode_record
from protocol.crypto import PrivateKey
from protocol.errors import ProtocolError
from protocol.ledger import keys as ledger_keys
from protocol.ledger.results import parse_results_roots
from protocol.messages import T_CONS
from storage import schema
from storage.errors import DatabaseCorrupt, SnapshotError

MAX_CLOCK_DRIFT_MS = 30_000  # a proposal's time may lead this node's clock by at most this much
NETWORK_QUEUE = 20_000  # consensus messages waiting for the driver; beyond it new ones are dropped
MAX_VALIDATIONS = 16  # concurrent block validations

# Testing hook for the clock-skew fault test: shifts this node's consensus clock (not the OS clock).
CLOCK_SKEW_MS = int(os.environ.get("SMELEDGER_CLOCK_SKEW_MS", "0") or 0)


def now_ms() -> int:
    return int(time.time() * 1000) + CLOCK_SKEW_MS


@dataclass(frozen=True, slots=True)
class _SyncedBlock:
    block: Block
    cert: cs.CommitCertificate
    done: asyncio.Future[None]


@dataclass(frozen=True, slots=True)
class _InstallSnapshot:
    plan: SnapshotPlan
    done: asyncio.Future[None]


class Outbox(Protocol):
    """What the driver needs of the P2P layer (the node passes `P2P`, or the test-only byzantine layer
    around it: node/byzantine.py)."""

    def register(self, msg_type: str, handler: Handler) -> None: ...

    def send(self, peer: bytes, msg_type: str, body: Any) -> bool: ...

    def broadcast(self, msg_type: str, body: Any, *, validators_only: bool = False) -> int: ...


class _Work:
    """The inbox's marker: the mempool's ready totals changed."""


WORK = _Work()
Item = cs.Event | _SyncedBlock | _InstallSnapshot | _Work


class ConsensusInbox:
    """Everything the consensus owner is asked to do, in one place (the bounded queue of STYLE rule 2).

    Network messages wait in a queue of at most `limit`; past it the newest is dropped and counted (the
    sender retransmits). Internal items come from the driver itself (timers, validation answers) or from
    sync handing over verified blocks and snapshots, and are served first. `work_changed()` is cheap and
    coalesces: the driver reads the mempool's totals once when it gets to them."""

    def __init__(self, limit: int = NETWORK_QUEUE) -> None:
        self.limit = limit
        self._net: deque[cs.Event] = deque()
        self._internal: deque[Item] = deque()
        self._wake = asyncio.Event()
        self._work = True
        self.dropped = 0

    def put_network(self, event: cs.Event) -> bool:
        if len(self._net) >= self.limit:
            self.dropped += 1
            return False
        self._net.append(event)
        self._wake.set()
        return True

    def put_internal(self, item: Item, *, first: bool = False) -> None:
        if first:
            self._internal.appendleft(item)
        else:
            self._internal.append(item)
        self._wake.set()

    def work_changed(self) -> None:
        self._work = True
        self._wake.set()

    async def next(self) -> Item:
        while True:
            if self._internal:
                return self._internal.popleft()
            if self._work:
                self._work = False
                return WORK
            if self._net:
                return self._net.popleft()
            self._wake.clear()
            await self._wake.wait()

    # ---- hand-overs from sync (the driver answers through the futures) ---------------------------

    async def deliver_block(self, block: Block, cert: cs.CommitCertificate) -> None:
        """Sync hands over a verified block; returns once it is stored and executed (or raises)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.put_internal(_SyncedBlock(block, cert, fut))
        await fut

    async def install_snapshot(self, plan: SnapshotPlan) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.put_internal(_InstallSnapshot(plan, fut))
        await fut


class ConsensusDriver:
    def __init__(self, *, genesis: Genesis, key: PrivateKey, params: ConsensusParams, store: ChainStore,
                 mempool: Mempool, p2p: Outbox, sync: SyncService, inbox: ConsensusInbox, chain: ChainStatus,
                 health: Health, time_offset: TimeOffset, registry: CollectorRegistry, log: Any,
                 position: Position) -> None:
        self.genesis = genesis
        self.key = key
        self.params = params
        self.store = store
        self.mempool = mempool
        self.p2p = p2p
        self.sync = sync
        self.inbox = inbox
        self.chain = chain
        self.health = health
        self.time_offset = time_offset
        self.log = log.bind(component="consensus")
        self.position = position
        self.validators = tuple(genesis.validator_keys)
        self.metrics = ConsensusMetrics(registry)
        self.steps = StepClock(self.metrics)
        registry.register(ReplicaStats(lambda: self.replica.stats))
        self.executor = BlockExecutor(genesis.chain_id, store.blocks, max_future_ms=MAX_CLOCK_DRIFT_MS,
                                      max_block_txs=params.max_block_txs, max_block_bytes=params.max_block_bytes)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._validating: set[bytes] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._last_commit = time.monotonic()
        self._wal_meta: dict[int, WalMeta] = {}
        self._wal_doomed: list[int] = []  # compacted away: dropped in the next append's write
        self.pipeline = Pipeline(store=store, executor=self.executor, mempool=mempool, sync=sync, health=health,
                                 position=position, exec_seconds=self.metrics.exec,
                                 execute_wait=self.steps.steps["execute_wait"], log=self.log,
                                 executed=lambda e: inbox.put_internal(e, first=True))
        self.replica = self._build_replica()

    # ---- construction / restore ----------------------------------------------------------------

    def _build_replica(self) -> cs.Replica:
        self.pipeline.execute_stored()
        head = self.store.head
        cert = None
        if head.height > 0:
            raw = self.store.blocks.get_certificate(head.height)
            if raw is None:
                raise DatabaseCorrupt(f"the database has no commit certificate for its height {head.height}",
                                      key=schema.certificate_key(head.height), path=self.store.db.path)
            cert = cs.CommitCertificate.from_value(codec.decode(raw))
        entries = self.store.wal.entries()
        metas = [decode_record(r).meta for _seq, r in entries]
        keep = set(compact_plan(metas, head.height))
        self._wal_meta = {seq: metas[i] for i, (seq, _r) in enumerate(entries) if i in keep}
        doomed = [seq for i, (seq, _r) in enumerate(entries) if i not in keep]
        if doomed:
            self.store.wal.drop(doomed, sync=True)
        records = [r for i, (_seq, r) in enumerate(entries) if i in keep]
        replica = cs.Replica(self.genesis.chain_id, self.validators, self.key, self.params, head.height,
                             head.block_hash, records, committed_cert=cert)
        self.log.info("replica_restored", committed=head.height, wal_records=len(records),
                      wal_compacted=len(doomed), view=replica.view)
        return replica

    # ---- lifetime ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Own the replica until cancelled; any error ends the task (and with it the node)."""
        self.p2p.register(T_CONS, self._on_network)
        self.mempool.add_change_listener(self._on_mempool_change)
        self.chain.view = self.replica.view  # restored, not a change
        self._publish_position()
        self.health.consensus_running = True
        try:
            async with asyncio.TaskGroup() as tg:  # block validations and execution run as children
                self._tg = tg
                tg.create_task(self.pipeline.run(), name="consensus-execution")
                while True:
                    item = await self.inbox.next()
                    failpoints.hit("consensus.event")
                    await self._handle(item)
        finally:
            self.health.consensus_running = False
            self._tg = None
            for handle in self._timers.values():
                handle.cancel()
            self._timers.clear()

    async def _handle(self, item: Item) -> None:
        if isinstance(item, _SyncedBlock):
            await self._settle(item.done, self._apply_synced(item.block, item.cert))
        elif isinstance(item, _InstallSnapshot):
            try:
                await self._install(item.plan)
            except SnapshotError as exc:  # refused before anything was written: sync judges the peers
                item.done.set_exception(exc)
                return
            except BaseException as exc:
                item.done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("the driver stopped"))
                raise
            item.done.set_result(None)
        elif isinstance(item, _Work):
            mp = self.mempool
            self.health.note_ready(mp.ready_txs)
            if mp.ready_txs > 0:
                self.steps.work_ready()
            await self._feed(cs.WorkPending(mp.ready_txs, mp.ready_bytes))
        else:
            await self._feed(item)

    # ---- inputs --------------------------------------------------------------------------------

    def _on_network(self, peer: bytes, body: Any) -> None:
        try:
            msg = cs.decode_message(body)
        except ProtocolError:
            self.metrics.dropped.labels("undecodable").inc()
            raise  # the P2P layer closes a link that sends undecodable messages
        if not self.inbox.put_network(cs.MessageReceived(peer, msg)):
            self.metrics.dropped.labels("queue_full").inc()

    def _on_mempool_change(self, txs: int, nbytes: int) -> None:
        self.inbox.work_changed()

    # ---- carrying out actions ------------------------------------------------------------------

    async def _feed(self, event: cs.Event) -> None:
        await self._execute(self.replica.handle(event, now_ms()))

    async def _execute(self, actions: list[cs.Action]) -> None:
        i = 0
        while i < len(actions):
            a = actions[i]
            if isinstance(a, cs.Persist):
                # one synced write for the Persists of a run of Persist/Send/Broadcast actions (a primary's
                # PRE-PREPARE and PREPARE), then the run's messages in order: each still leaves after its
                # own record is durable, only later by the time the other records took to join the write
                end = i
                while end < len(actions) and isinstance(actions[end], cs.Persist | cs.Broadcast | cs.Send):
                    end += 1
                run = actions[i:end]
                await self._persist([p for p in run if isinstance(p, cs.Persist)])
                for m in run:
                    if not isinstance(m, cs.Persist):
                        self._send(m)
                i = end
                continue
            if isinstance(a, cs.Broadcast | cs.Send):
                self._send(a)
            elif isinstance(a, cs.CommitBlock):
                await self._commit(a.block, a.certificate)
            elif isinstance(a, cs.SetTimer):
                self._set_timer(a.kind, a.token, a.delay_ms)
            elif isinstance(a, cs.CancelTimer):
                handle = self._timers.pop(a.kind, None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(a, cs.BuildBlock):
                self._build(a)
            elif isinstance(a, cs.ValidateBlock):
                self.steps.agreeing(a.block.height)
                self._validate(a.block)
            elif isinstance(a, cs.NeedSync):
                self.sync.request(a.target_height, a.peers)
            elif isinstance(a, cs.StableCheckpoint):
                self.sync.note_stable_checkpoint(a.height, a.block_hash, a.state_root, a.certificate)
            elif isinstance(a, cs.Evidence):
                self.metrics.evidence.inc()
                self.log.warning("consensus_evidence", validator=a.index, first=type(a.first).__name__)
            i += 1
        self._publish_position()

    def _send(self, a: cs.Broadcast | cs.Send) -> None:
        if isinstance(a, cs.Broadcast):
            self.p2p.broadcast(T_CONS, a.msg.to_value())
        else:
            self.p2p.send(a.to, T_CONS, a.msg.to_value())

    async def _persist(self, batch: list[cs.Persist]) -> None:
        """One synced WAL write for the batch; the records compaction doomed since leave in it."""
        doomed, self._wal_doomed = self._wal_doomed, []
        started = time.monotonic()
        seqs = await self.store.write(self._append_wal, [p.record for p in batch], doomed)
        self.steps.steps["wal_append"].observe(time.monotonic() - started)
        for s in doomed:
            self._wal_meta.pop(s, None)
        for seq, p in zip(seqs, batch, strict=True):
            self._wal_meta[seq] = p.meta

    def _append_wal(self, records: list[bytes], doomed: list[int]) -> list[int]:
        """Writer thread: the synced WAL append (failure points around it for crash tests)."""
        failpoints.hit("wal.before_append")
        seqs = self.store.wal.append_many(records, drop=doomed)
        failpoints.hit("wal.after_append")
        return seqs

    def _compact_wal(self) -> None:
        """After each commit: name the WAL records the replica can no longer need (a few records stay).
        They leave with the next append, in its synced write, instead of in a write of their own on the
        way from one height to the next; until then a crash brings them back and the start drops them."""
        seqs = sorted(self._wal_meta)
        keep = set(compact_plan([self._wal_meta[s] for s in seqs], self.replica.committed))
        self._wal_doomed = [s for i, s in enumerate(seqs) if i not in keep]

    def _set_timer(self, kind: str, token: int, delay_ms: int) -> None:
        old = self._timers.pop(kind, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[kind] = loop.call_later(delay_ms / 1000, self.inbox.put_internal, cs.TimerFired(kind, token))

    def _publish_position(self) -> None:
        r = self.replica
        if r.view != self.chain.view:
            if r.view > self.chain.view:
                self.metrics.view_changes.inc()
            self.log.info("view_changed", old_view=self.chain.view, new_view=r.view,
                          primary=self.genesis.name_of(self.validators[r.primary]))
        self.chain.view = r.view
        self.chain.primary = self.validators[r.primary]
        self.position.update(height=self.store.head.height, view=r.view)

    # ---- block building and validation ---------------------------------------------------------

    def _build(self, a: cs.BuildBlock) -> None:
        txs = self.mempool.take_batch(a.max_txs, a.max_bytes)
        self.steps.building(a.height, [self.mempool.arrived_at(tx.hash) for tx in txs])
        parent = self.pipeline.parent()
        if not txs or parent.block_hash != a.parent or parent.state_root is None or parent.results_root is None:
            self.inbox.put_internal(cs.BlockBuilt(None))
            return
        t = max(now_ms() + self.time_offset.offset_ms, parent.time_ms + 1)
        block = Block.build(chain=self.genesis.chain_id, height=a.height, parent=a.parent,
                            proposer=self.key.public_key, view=a.view, time=t, state_root=parent.state_root,
                            results_root=parent.results_root, txs=[tx.raw for tx in txs])
        self.executor.remember(block, tuple(txs))
        self.inbox.put_internal(cs.BlockBuilt(block))

    def _validate(self, block: Block) -> None:
        if block.hash in self._validating:
            return
        if len(self._validating) >= MAX_VALIDATIONS or self._tg is None:
            self.inbox.put_internal(cs.BlockValidated(block.hash, False, "busy"))
            return
        self._validating.add(block.hash)
        self._tg.create_task(self._validate_task(block, self.pipeline.parent()))

    def _stale(self, parent: Parent) -> bool:
        """Another block was decided since the validation started: its answer no longer matters."""
        return self.pipeline.tip.block_hash != parent.block_hash or self.store.commit_in_flight

    async def _validate_task(self, block: Block, head: Parent) -> None:
        ok, reason = False, "stale"
        try:
            if self._stale(head):
                return
            now = now_ms() + self.time_offset.offset_ms
            mp = self.mempool
            txs = self.executor.precheck(block, head, now, mp.by_raw, self.pipeline.in_blocks)
            todo = [tx for tx in txs if not mp.is_verified(tx.hash, tx.sig)]
            if todo and not all(await mp.verify_txs(todo)):
                raise BlockRejected("bad_signature", "a tx signature does not verify")
            if self._stale(head):
                return
            self.executor.remember(block, txs)
            ok, reason = True, ""
        except BlockRejected as exc:
            if self._stale(head):
                return  # it was checked against a head that a commit was replacing: not a rejection
            reason = exc.reason
            self.metrics.rejected.labels(exc.reason).inc()
            self.log.warning("block_rejected", block_height=block.height, reason=exc.reason, message=str(exc))
        finally:
            self._validating.discard(block.hash)
            self.inbox.put_internal(cs.BlockValidated(block.hash, ok, reason))

    # ---- commit (pipelined: decided durably now, executed in height order by `self.pipeline`) -------

    async def _commit(self, block: Block, cert: cs.CommitCertificate) -> None:
        """CommitBlock: the block and its certificate are durable before the next action; the replica
        then goes on to the next height while the pipeline executes this block."""
        txs = self.executor.decoded(block)
        started = time.monotonic()
        await self.pipeline.decide(block, codec.encode(cert.to_value()), txs)
        now = self.steps.decided(block.height, started, self.mempool.ready_txs > 0)
        self.metrics.round.observe(now - self._last_commit)
        self._last_commit = now
        self.metrics.commits.inc()
        self.metrics.txs.inc(len(txs))
        self.chain.last_commit_ms = now_ms()
        self.inbox.work_changed()
        self._compact_wal()
        await self.pipeline.backpressure()

    @staticmethod
    async def _settle(done: asyncio.Future[None], work: Awaitable[None]) -> None:
        """Run a hand-over from sync and settle the future sync awaits with its outcome; a failure still
        ends the driver (fail-stop) after sync has been told."""
        try:
            await work
        except BaseException as exc:
            if not done.done():
                done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("the driver stopped"))
            raise
        if not done.done():
            done.set_result(None)

    async def _apply_synced(self, block: Block, cert: cs.CommitCertificate) -> None:
        await self.pipeline.drain()
        if block.height <= self.store.head.height:
            return
        txs = self.executor.decoded(block)
        self.mempool.remove_committed(txs)
        done = await self.pipeline.execute(block, codec.encode(cert.to_value()), txs)
        self.mempool.remove_committed((), done.nonces)
        self.metrics.synced.inc()
        await self._feed(cs.SyncedTo(done.height, done.block_hash, cert, done.state_root))
        self.inbox.work_changed()
        self._compact_wal()

    async def _install(self, plan: SnapshotPlan) -> None:
        await self.pipeline.drain()
        self.store.commit_in_flight = True
        try:
            head = await self.store.write(self._install_sync, plan)
        finally:
            self.store.commit_in_flight = False
        self.store.set_head(head)
        self.pipeline.reset(head)
        self.mempool.resync_nonces()  # the state under the pool changed at once: its nonces may be stale
        self.health.note_progress()
        await self._feed(cs.SyncedTo(plan.height, plan.block_hash, plan.cert, plan.state_root))
        self.inbox.work_changed()
        self._compact_wal()

    def _install_sync(self, plan: SnapshotPlan) -> ChainHead:
        """Writer thread: install a fully imported snapshot as the new head."""
        blocks = self.store.blocks
        extra = blocks.head_ops(plan.height, plan.block_hash, plan.state_root)
        extra.append((schema.certificate_key(plan.height), codec.encode(plan.cert.to_value())))
        extra.append(blocks.history_from_op(plan.height + 1))  # history backfill fills what lies below
        # the snapshot's certified state names the results roots of its height and the one below, which the
        # next two headers carry (and history backfill starts from)
        before, last = parse_results_roots(plan.importer.staged_value(ledger_keys.RESULTS))
        extra.append(blocks.results_root_op(plan.height, last))
        extra.append(blocks.results_root_op(max(0, plan.height - 1), before))
        failpoints.hit("snapshot.before_install")
        plan.importer.finish(extra_ops=extra)
        failpoints.hit("snapshot.after_install")
        return self.store.read_head()
