"""`SyncService`: the node's block sync and snapshot state sync, serving and fetching.

The consensus driver calls `request(target, peers)` on NeedSync (non-blocking, coalesced; a higher
target raises the running round's target), `note_committed` after each commit and
`note_stable_checkpoint` on StableCheckpoint. One task runs rounds: state sync first when the gap is
large (or the node is empty) and a certified snapshot is offered, then block sync to the target.

Rule: sync never writes blocks or state. Verified blocks go to `deliver_block(block, cert)` in strict
height order and snapshots to `install_snapshot(plan)`; both are the driver's, awaited here, and raise
on failure (the round then ends and is retried after `retry_interval` while the target is ahead).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from node.context import NodeContext
from node.sync.blocks import NEED_SNAPSHOT, BlockFetcher, Deliver
from node.sync.common import PeerBook, Requests, SnapshotPlan, SyncMetrics, SyncSettings
from node.sync.serve import ENVELOPE_SLACK, SyncServer
from node.sync.statesync import SnapshotFetcher
from protocol.messages import T_SNAP_REQ, T_SNAP_RESP, T_SYNC_REQ, T_SYNC_RESP
from protocol.syncmsg import SyncRequest, SyncResponse, decode_snap_resp
from storage.errors import SnapshotRootMismatch

Install = Callable[[SnapshotPlan], Awaitable[None]]
MAX_HINT_PEERS = 64
MAX_RETRY_S = 30.0  # failed rounds back off exponentially up to this


class DeliverFailed(Exception):
    """The driver refused a verified block (raised inside `deliver_block`)."""


class SyncService:
    def __init__(self, ctx: NodeContext, deliver_block: Deliver, install_snapshot: Install | None = None, *,
                 settings: SyncSettings | None = None) -> None:
        self.ctx = ctx
        self.settings = s = settings or SyncSettings()
        self.log = ctx.log.bind(component="sync")
        self.metrics = SyncMetrics(ctx.registry)
        self.interval = ctx.genesis.consensus_params(ctx.config.consensus.as_dict()).checkpoint_interval
        self.state_sync_gap = s.state_sync_gap or 2 * self.interval
        self._deliver_block = deliver_block
        self._install = install_snapshot
        self._wake = asyncio.Event()
        self.book = PeerBook(s, self.metrics, self.log)
        self.block_requests = Requests(on_answer=self._wake.set)
        self.snap_requests = Requests(on_answer=self._wake.set)
        self.probes = Requests()
        self._heads: dict[bytes, int] = {}  # validator -> head height it reported to a probe
        self.server = SyncServer(ctx, s, self.metrics, self.log, self.interval)
        self._target = 0
        self._hint: tuple[bytes, ...] = ()
        self._tasks: list[asyncio.Task[Any]] = []
        self.rounds = 0

    # ---- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        p2p = self.ctx.p2p
        assert p2p is not None and self.ctx.blocks is not None
        p2p.register(T_SYNC_REQ, self.server.on_sync_req)
        p2p.register(T_SNAP_REQ, self.server.on_snap_req)
        p2p.register(T_SYNC_RESP, self._on_sync_resp)
        p2p.register(T_SNAP_RESP, self._on_snap_resp)
        self._tasks = [asyncio.create_task(self.server.run(), name="sync-serve"),
                       asyncio.create_task(self._run(), name="sync-fetch"),
                       asyncio.create_task(self._probe_loop(), name="sync-probe")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        await self.server.close()
        self.ctx.chain.syncing = False

    # ---- driver interface ----------------------------------------------------------------------------

    def request(self, target_height: int, peers: Sequence[bytes]) -> None:
        """Sync up to at least `target_height`; repeated calls coalesce and only ever raise the target."""
        if peers:
            merged = list(dict.fromkeys([*peers, *self._hint]))
            self._hint = tuple(merged[:MAX_HINT_PEERS])
        if target_height > self._target:
            self._target = target_height
            if self.ctx.chain.syncing:
                self.ctx.chain.sync_target = target_height
        self._wake.set()

    def note_committed(self, height: int, block_hash: bytes, state_root: bytes) -> None:
        self.server.note_committed(height, block_hash, state_root)

    def note_stable_checkpoint(self, height: int, block_hash: bytes, state_root: bytes, cert_value: Any) -> None:
        self.server.note_stable_checkpoint(height, block_hash, state_root, cert_value)

    @property
    def target(self) -> int:
        return self._target

    # ---- responses (P2P reader task) -------------------------------------------------------------------

    def _on_sync_resp(self, peer: bytes, body: Any) -> None:
        resp = SyncResponse.from_value(body)
        if self.block_requests.answer(peer, resp.rid, resp):
            return
        if self.probes.answer(peer, resp.rid, resp):
            self.probes.drop(resp.rid)
            self._note_head(peer, resp.height)
            return
        self.metrics.peer_failures.labels("unsolicited").inc()

    # ---- head probes: a node that is behind while the network is idle still learns it --------------

    async def _probe_loop(self) -> None:
        """Consensus learns it is behind from consensus traffic; an idle network sends none. So while
        this node has not committed for `probe_interval`, it asks every connected validator for its
        head (a one-block sync_req) and syncs to the height at least f+1 of them report."""
        p2p, blocks = self.ctx.p2p, self.ctx.blocks
        assert p2p is not None and blocks is not None
        while True:
            await asyncio.sleep(self.settings.probe_interval)
            last = self.ctx.chain.last_commit_ms
            if last is not None and time.time() * 1000 - last < self.settings.probe_interval * 1000:
                continue
            self.probes.take_expired()
            start = blocks.height() + 1
            for peer in p2p.connected():
                if p2p.is_validator(peer) and not any(p.peer == peer for p in self.probes.open.values()):
                    rid = self.probes.add(peer, None, self.settings.request_timeout)
                    if not p2p.send(peer, T_SYNC_REQ, SyncRequest(rid, start, 1).to_value()):
                        self.probes.drop(rid)

    def _note_head(self, peer: bytes, height: int) -> None:
        """Remember a validator's reported head; sync to the (f+1)-th highest, which an honest one has."""
        blocks = self.ctx.blocks
        assert blocks is not None
        self._heads[peer] = height
        validators = self.ctx.genesis.validator_keys
        f = (len(validators) - 1) // 3
        heads = sorted((h for p, h in self._heads.items() if p in validators), reverse=True)
        if len(heads) > f and heads[f] > max(blocks.height(), self._target):
            self.log.info("sync_behind_idle_network", height=blocks.height(), target=heads[f])
            self.request(heads[f], [p for p, h in sorted(self._heads.items()) if h >= heads[f]])

    def _on_snap_resp(self, peer: bytes, body: Any) -> None:
        resp = decode_snap_resp(body)
        if not self.snap_requests.answer(peer, resp.rid, resp):
            self.metrics.peer_failures.labels("unsolicited").inc()

    # ---- rounds ----------------------------------------------------------------------------------------

    async def _run(self) -> None:
        blocks = self.ctx.blocks
        assert blocks is not None
        delay = self.settings.retry_interval
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._target <= blocks.height():
                continue
            before = blocks.height()
            try:
                result = await self._round()
            except Exception:  # a bug or a storage failure: logged with its traceback, retried later
                self.log.exception("sync_round_failed", height=blocks.height(), target=self._target)
                result = "error"
            if blocks.height() < self._target:
                delay = self.settings.retry_interval if blocks.height() > before else min(delay * 2, MAX_RETRY_S)
                self.log.info("sync_retry_scheduled", result=result, delay_s=delay)
                await asyncio.sleep(delay)
                self._wake.set()
            else:
                delay = self.settings.retry_interval

    async def _deliver(self, block: Any, cert: Any) -> None:
        try:
            await self._deliver_block(block, cert)
        except Exception as exc:
            raise DeliverFailed(str(exc)) from exc

    async def _round(self) -> str:
        blocks, ch = self.ctx.blocks, self.ctx.chain
        assert blocks is not None
        self.rounds += 1
        local, target = blocks.height(), self._target
        ch.syncing, ch.sync_target, ch.sync_progress = True, target, local
        self.log.info("sync_started", height=local, target=target)
        result = "failed"
        try:
            if self._install is not None and (target - local > self.state_sync_gap or local == 0):
                await self._state_sync()
            result = await self._fetcher().run()
            if result == NEED_SNAPSHOT and self._install is not None and await self._state_sync():
                result = await self._fetcher().run()
            return result
        except DeliverFailed as exc:
            self.log.error("sync_deliver_failed", height=blocks.height() + 1, error=str(exc.__cause__ or exc))
            return result
        finally:
            height = blocks.height()
            ch.sync_progress = height
            if height >= self._target:
                ch.syncing = False
            self.log.info("sync_finished", height=height, target=self._target, result=result)

    def _fetcher(self) -> BlockFetcher:
        return BlockFetcher(self.ctx, self.settings, self.metrics, self.book, self.block_requests, self._deliver,
                            lambda: self._target, lambda: self._hint, self._wake, self.log)

    async def _state_sync(self) -> bool:
        blocks, p2p = self.ctx.blocks, self.ctx.p2p
        assert blocks is not None and p2p is not None and self._install is not None
        local = blocks.height()
        self.log.info("state_sync_started", height=local, target=self._target)
        fetcher = SnapshotFetcher(self.ctx, self.settings, self.metrics, self.book, self.snap_requests, self._wake,
                                  self.log, p2p.settings.max_frame - ENVELOPE_SLACK)
        choices = [c for c in await fetcher.collect() if c.offer.height > local]
        if not choices:
            self.log.info("state_sync_skipped", height=local, reason="no_offer")
            return False
        choice = choices[0]
        plan = await fetcher.fetch(choice)
        if plan is None:
            return False
        try:
            await self._install(plan)
        except SnapshotRootMismatch as exc:
            for p in choice.peers:
                self.book.misbehaved(p, "bad_snapshot", height=plan.height, error=exc.message)
            await asyncio.to_thread(plan.importer.abort)
            return False
        except Exception:
            self.log.exception("state_sync_install_failed", height=plan.height)
            await asyncio.to_thread(plan.importer.abort)
            return False
        self.metrics.snapshots_installed.inc()
        self.ctx.chain.sync_progress = plan.height
        self.log.info("state_sync_installed", height=plan.height, state_root=plan.state_root.hex(),
                      block_hash=plan.block_hash.hex(), chunks=len(plan.manifest.chunk_hashes),
                      items=plan.importer.items)
        return True
