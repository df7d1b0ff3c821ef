"""The consensus driver: the single owner of the `Replica` in a running node.

One task takes events from an inbox (network messages in a bounded queue, timers and answers to the
replica's requests in an internal queue served first), calls `Replica.handle(event, now_ms)` and carries
the returned actions out strictly in order: `Persist` records are synced to the WAL before any later
action (so a vote is on disk before anyone can see it), `CommitBlock` is stored and executed in one
synced batch before the replica hears `BlockExecuted`. Block validation (tx signatures in worker threads)
runs concurrently and answers through the inbox. Sync hands verified blocks back through the inbox too,
so blocks and state have exactly one writer.

Rule: nothing else touches the replica, the WAL or block/state writes. Every queue here is bounded or
fed only by the driver itself; a full network queue drops the message (consensus retransmits).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from node.context import NodeContext
from node.executor import BlockExecutor, BlockRejected, Executed
from node.sync import SnapshotPlan, SyncService
from protocol import codec
from protocol import consensus as cs
from protocol.block import GENESIS_PARENT, Block
from protocol.consensus.params import ConsensusParams
from protocol.consensus.wal import compact_records
from protocol.errors import ProtocolError
from protocol.messages import T_CONS
from storage import schema
from storage.errors import DatabaseCorrupt

FRAME_HEADROOM = 256 * 1024  # PRE-PREPARE fields and envelope around a block's txs
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


class _Metrics:
    def __init__(self, registry: Any) -> None:
        self.height = Gauge("smeledger_consensus_height", "Last committed height", registry=registry)
        self.view = Gauge("smeledger_consensus_view", "Current consensus view", registry=registry)
        self.commits = Counter("smeledger_consensus_commits", "Blocks committed by consensus", registry=registry)
        self.synced = Counter("smeledger_sync_blocks_applied", "Blocks applied from block sync", registry=registry)
        self.txs = Counter("smeledger_committed_txs", "Transactions committed", registry=registry)
        self.view_changes = Counter("smeledger_consensus_view_changes", "Views entered after view 0",
                                    registry=registry)
        self.round = Histogram("smeledger_consensus_round_seconds", "Time between consecutive commits",
                               buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=registry)
        self.exec = Histogram("smeledger_block_execute_seconds", "Execute + store time of a block",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=registry)
        self.dropped = Counter("smeledger_consensus_dropped_messages", "Consensus messages dropped",
                               ["reason"], registry=registry)
        self.rejected = Counter("smeledger_blocks_rejected", "Proposed blocks failing validation", ["reason"],
                                registry=registry)
        self.evidence = Counter("smeledger_consensus_evidence", "Conflicting signed messages seen",
                                registry=registry)


def consensus_params(ctx: NodeContext) -> ConsensusParams:
    """The genesis params with local overrides; a block (inside a PRE-PREPARE) must fit one P2P frame."""
    params = ctx.genesis.consensus_params(ctx.config.consensus.as_dict())
    fits = ctx.config.p2p.max_frame - FRAME_HEADROOM
    if params.max_block_bytes > fits:
        params = dataclasses.replace(params, max_block_bytes=fits)
    return params


class ConsensusDriver:
    def __init__(self, ctx: NodeContext) -> None:
        assert ctx.blocks is not None and ctx.state is not None and ctx.wal is not None
        self.ctx = ctx
        self.log = ctx.log.bind(component="consensus")
        self.params = consensus_params(ctx)
        self.validators = tuple(ctx.genesis.validator_keys)
        self.metrics = _Metrics(ctx.registry)
        self.executor = BlockExecutor(ctx.genesis.chain_id, ctx.blocks, ctx.state,
                                      max_future_ms=MAX_CLOCK_DRIFT_MS,
                                      max_block_txs=self.params.max_block_txs,
                                      max_block_bytes=self.params.max_block_bytes)
        self._net: asyncio.Queue[cs.Event] = asyncio.Queue(NETWORK_QUEUE)
        self._internal: deque[Any] = deque()
        self._wake = asyncio.Event()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._validating: set[bytes] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._work_dirty = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_commit = time.monotonic()
        self.replica = self._build_replica()
        self.sync = SyncService(ctx, self.deliver_block, self.install_snapshot)

    # ---- construction / restore ----------------------------------------------------------------

    def _build_replica(self) -> cs.Replica:
        ctx = self.ctx
        assert ctx.blocks is not None and ctx.wal is not None
        height = ctx.blocks.height()
        last = ctx.blocks.last_block_hash() or GENESIS_PARENT
        cert = None
        if height > 0:
            raw = ctx.blocks.get_certificate(height)
            if raw is None:
                raise DatabaseCorrupt(f"the database has no commit certificate for its height {height}")
            cert = cs.CommitCertificate.from_value(codec.decode(raw))
        records = ctx.wal.records()
        replica = cs.Replica(ctx.genesis.chain_id, self.validators, ctx.key, self.params, height, last,
                             records, committed_cert=cert)
        self.log.info("replica_restored", committed=height, wal_records=len(records), view=replica.view)
        return replica

    # ---- lifetime ------------------------------------------------------------------------------

    async def start(self) -> None:
        ctx = self.ctx
        assert ctx.p2p is not None and ctx.mempool is not None
        ctx.p2p.register(T_CONS, self._on_network)
        ctx.mempool.add_change_listener(self._on_mempool_change)
        ctx.sync = self.sync
        await self.sync.start()
        ctx.chain.view = self.replica.view  # restored, not a change
        self._publish_position()
        self._work_dirty = True
        self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="consensus")

    async def stop(self) -> None:
        self._stopping = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        await self.sync.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- inputs --------------------------------------------------------------------------------

    def _on_network(self, peer: bytes, body: Any) -> None:
        try:
            msg = cs.decode_message(body)
        except ProtocolError as exc:
            self.metrics.dropped.labels("undecodable").inc()
            raise exc  # the P2P layer closes a link that sends undecodable messages
        try:
            self._net.put_nowait(cs.MessageReceived(peer, msg))
        except asyncio.QueueFull:
            self.metrics.dropped.labels("queue_full").inc()
            return
        self._wake.set()

    def _on_mempool_change(self, txs: int, nbytes: int) -> None:
        self._work_dirty = True
        self._wake.set()

    def _internal_put(self, item: Any) -> None:
        self._internal.append(item)
        self._wake.set()

    async def deliver_block(self, block: Block, cert: cs.CommitCertificate) -> None:
        """Sync hands over a verified block; returns once it is stored and executed (or raises)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._internal_put(_SyncedBlock(block, cert, fut))
        await fut

    async def install_snapshot(self, plan: SnapshotPlan) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._internal_put(_InstallSnapshot(plan, fut))
        await fut

    async def _next(self) -> Any:
        while True:
            if self._internal:
                return self._internal.popleft()
            if self._work_dirty:
                self._work_dirty = False
                mp = self.ctx.mempool
                assert mp is not None
                return cs.WorkPending(len(mp), mp.size_bytes)
            if not self._net.empty():
                return self._net.get_nowait()
            self._wake.clear()
            await self._wake.wait()

    # ---- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            item = await self._next()
            try:
                if isinstance(item, _SyncedBlock):
                    await self._settle(item.done, self._apply_synced(item.block, item.cert))
                elif isinstance(item, _InstallSnapshot):
                    await self._settle(item.done, self._install(item.plan))
                else:
                    await self._feed(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a driver bug must not silently stop consensus: log and go on
                self.log.exception("consensus_event_failed", event=type(item).__name__, error=str(exc))

    async def _feed(self, event: cs.Event) -> None:
        actions = self.replica.handle(event, now_ms())
        await self._execute(actions)

    async def _execute(self, actions: list[cs.Action]) -> None:
        i = 0
        while i < len(actions):
            a = actions[i]
            if isinstance(a, cs.Persist):
                records = [a.record]
                while i + 1 < len(actions) and isinstance(actions[i + 1], cs.Persist):
                    i += 1
                    nxt = actions[i]
                    assert isinstance(nxt, cs.Persist)
                    records.append(nxt.record)
                wal = self.ctx.wal
                assert wal is not None
                await asyncio.to_thread(wal.append_many, records)
            elif isinstance(a, cs.Broadcast):
                self._p2p().broadcast(T_CONS, a.msg.to_value())
            elif isinstance(a, cs.Send):
                self._p2p().send(a.to, T_CONS, a.msg.to_value())
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
                self._validate(a.block)
            elif isinstance(a, cs.NeedSync):
                self.sync.request(a.target_height, a.peers)
            elif isinstance(a, cs.StableCheckpoint):
                await self._stable(a)
            elif isinstance(a, cs.Evidence):
                self.metrics.evidence.inc()
                self.log.warning("consensus_evidence", validator=a.index, first=type(a.first).__name__)
            i += 1
        self._publish_position()

    def _p2p(self) -> Any:
        assert self.ctx.p2p is not None
        return self.ctx.p2p

    def _set_timer(self, kind: str, token: int, delay_ms: int) -> None:
        old = self._timers.pop(kind, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[kind] = loop.call_later(delay_ms / 1000, self._internal_put, cs.TimerFired(kind, token))

    def _publish_position(self) -> None:
        r = self.replica
        ctx = self.ctx
        assert ctx.blocks is not None
        if r.view != ctx.chain.view:
            if r.view > ctx.chain.view:
                self.metrics.view_changes.inc()
            self.log.info("view_changed", old_view=ctx.chain.view, new_view=r.view,
                          primary=self.ctx.genesis.name_of(self.validators[r.primary]))
        ctx.chain.view = r.view
        ctx.chain.primary = self.validators[r.primary]
        ctx.position.update(height=ctx.blocks.height(), view=r.view)
        self.metrics.view.set(r.view)

    # ---- block building and validation ---------------------------------------------------------

    def _build(self, a: cs.BuildBlock) -> None:
        ctx = self.ctx
        assert ctx.mempool is not None and ctx.blocks is not None
        txs = ctx.mempool.take_batch(a.max_txs, a.max_bytes)
        t = max(now_ms() + ctx.time_offset.offset_ms, self.executor.parent_time() + 1)
        block = Block.build(chain=ctx.genesis.chain_id, height=a.height, parent=a.parent,
                            proposer=ctx.key.public_key, view=a.view, time=t,
                            state_root=ctx.blocks.state_root(), txs=[tx.raw for tx in txs])
        self.executor.remember(block, tuple(txs))
        self._internal_put(cs.BlockBuilt(block))

    def _validate(self, block: Block) -> None:
        if block.hash in self._validating:
            return
        if len(self._validating) >= MAX_VALIDATIONS:
            self._internal_put(cs.BlockValidated(block.hash, False, "busy"))
            return
        self._validating.add(block.hash)
        task = asyncio.get_running_loop().create_task(self._validate_task(block))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _validate_task(self, block: Block) -> None:
        ok, reason = False, ""
        try:
            now = now_ms() + self.ctx.time_offset.offset_ms
            mp = self.ctx.mempool
            assert mp is not None
            txs = self.executor.precheck(block, now, mp.by_raw)
            todo = [tx for tx in txs if not mp.is_verified(tx.hash, tx.sig)]
            if todo:
                results = await mp.verify_txs(todo)
                if not all(results):
                    raise BlockRejected("bad_signature", "a tx signature does not verify")
            self.executor.remember(block, txs)
            ok = True
        except BlockRejected as exc:
            reason = exc.reason
            self.metrics.rejected.labels(exc.reason).inc()
            self.log.warning("block_rejected", block_height=block.height, reason=exc.reason, message=str(exc))
        finally:
            self._validating.discard(block.hash)
        self._internal_put(cs.BlockValidated(block.hash, ok, reason))

    # ---- commit --------------------------------------------------------------------------------

    async def _store(self, block: Block, cert: cs.CommitCertificate) -> Executed:
        txs = self.executor.decoded(block)
        cert_bytes = codec.encode(cert.to_value())
        started = time.monotonic()
        done = await asyncio.to_thread(self.executor.execute, block, cert_bytes, txs)
        self.metrics.exec.observe(time.monotonic() - started)
        mp = self.ctx.mempool
        assert mp is not None
        mp.remove_committed(done.txs, done.nonces)
        now = time.monotonic()
        self.metrics.round.observe(now - self._last_commit)
        self._last_commit = now
        self.metrics.height.set(done.height)
        self.metrics.txs.inc(len(done.txs))
        self.ctx.chain.last_commit_ms = now_ms()
        self.ctx.position.update(height=done.height)
        self.sync.note_committed(done.height, done.block_hash, done.state_root)
        return done

    async def _commit(self, block: Block, cert: cs.CommitCertificate) -> None:
        done = await self._store(block, cert)
        self.metrics.commits.inc()
        failed = sum(1 for r in done.result.receipts if not r.ok)
        self.log.info("block_committed", block_height=done.height, txs=len(done.txs), failed=failed,
                      hash=done.block_hash.hex()[:16], state_root=done.state_root.hex()[:16])
        self._internal.appendleft(cs.BlockExecuted(done.height, done.block_hash, done.state_root))
        self._work_dirty = True
        self._wake.set()

    @staticmethod
    async def _settle(done: asyncio.Future[None], work: Awaitable[None]) -> None:
        """Run a hand-over from sync and settle the future sync awaits with its outcome."""
        try:
            await work
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
            raise
        if not done.done():
            done.set_result(None)

    async def _apply_synced(self, block: Block, cert: cs.CommitCertificate) -> None:
        assert self.ctx.blocks is not None
        if block.height <= self.ctx.blocks.height():
            return
        done = await self._store(block, cert)
        self.metrics.synced.inc()
        await self._feed(cs.SyncedTo(done.height, done.block_hash, cert, done.state_root))
        self._work_dirty = True

    async def _install(self, plan: SnapshotPlan) -> None:
        await asyncio.to_thread(self._install_sync, plan)
        await self._feed(cs.SyncedTo(plan.height, plan.block_hash, plan.cert, plan.state_root))
        self._work_dirty = True

    def _install_sync(self, plan: SnapshotPlan) -> None:
        blocks = self.ctx.blocks
        assert blocks is not None
        extra = blocks.head_ops(plan.height, plan.block_hash, plan.state_root)
        extra.append((schema.certificate_key(plan.height), codec.encode(plan.cert.to_value())))
        plan.importer.finish(extra_ops=extra)

    async def _stable(self, a: cs.StableCheckpoint) -> None:
        self.sync.note_stable_checkpoint(a.height, a.block_hash, a.state_root, a.certificate)
        wal = self.ctx.wal
        assert wal is not None
        records = wal.records()
        keep = set(compact_records(records, min(a.height, self.replica.committed)))
        dropped = await asyncio.to_thread(wal.prune_where, lambda r: r not in keep)
        self.log.info("wal_pruned", dropped=dropped, kept=len(keep), stable_height=a.height)

