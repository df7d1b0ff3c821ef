"""`SyncService`: the node's block sync, snapshot state sync and history backfill, serving and fetching.

The consensus driver calls `request(target, peers)` on NeedSync (non-blocking, coalesced; a higher
target raises the running round's target), `note_committed` after each commit and
`note_stable_checkpoint` on StableCheckpoint. `run()` (the component's one task) serves peers, runs
rounds, probes validators' heads while nothing commits, and backfills history (node/sync/history.py).
A round is block sync to the target (every block certified and executed, so the node keeps every
block, receipt and event), preceded by state sync only when the node is empty or behind by more than
`block_sync_max_gap` blocks and a certified snapshot is offered; after a state sync, history backfill
fetches what lies below the snapshot.

Rule: sync never writes blocks or state. Verified blocks go to `handover.deliver_block(block, cert)` in
strict height order and snapshots to `handover.install_snapshot(plan)`; both are the consensus driver's
(through its inbox), awaited here, and raise on failure. What a peer can cause (a bad block, a timeout,
a refused hand-over) ends a round, which is retried with back-off; anything else is a bug or a storage
failure and ends `run()`, and with it the node (fail-stop), instead of retrying forever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from node.sync.blocks import NEED_SNAPSHOT, BlockFetcher
from node.sync.common import PeerBook, Requests, SnapshotPlan, SyncEnv, SyncMetrics, SyncSettings
from node.sync.history import HistoryBackfill
from node.sync.serve import ENVELOPE_SLACK, SyncServer
from node.sync.statesync import SnapshotFetcher
from protocol.block import Block
from protocol.consensus.certs import CommitCertificate
from protocol.messages import T_RES_REQ, T_RES_RESP, T_SNAP_REQ, T_SNAP_RESP, T_SYNC_REQ, T_SYNC_RESP
from protocol.syncmsg import ResultsResponse, SyncRequest, SyncResponse, decode_snap_resp
from storage.errors import SnapshotError, SnapshotRootMismatch


class Handover(Protocol):
    """Where verified blocks and snapshots go: the consensus driver's inbox."""

    async def deliver_block(self, block: Block, cert: CommitCertificate) -> None: ...

    async def install_snapshot(self, plan: SnapshotPlan) -> None: ...


MAX_HINT_PEERS = 64
MAX_RETRY_S = 30.0  # failed rounds back off exponentially up to this
PROBE_RID_BASE = 1 << 61  # probes answer as sync_resp too: their rids never meet block sync's


class SyncService:
    def __init__(self, env: SyncEnv, handover: Handover, *, checkpoint_interval: int, registry: CollectorRegistry,
                 log: Any, settings: SyncSettings | None = None, state_sync: bool = True,
                 genesis_index: Callable[[], Sequence[tuple[bytes, bytes]]] = tuple) -> None:
        """`genesis_index()`: the derived index entries genesis writes (rebuilt when backfill reaches 0)."""
        self.env = env
        self.settings = s = settings or SyncSettings()
        self.log = log.bind(component="sync")
        self.metrics = SyncMetrics(registry)
        self.interval = checkpoint_interval
        self._handover = handover
        self._state_sync_on = state_sync
        self._wake = asyncio.Event()
        self.book = PeerBook(s, self.metrics, self.log)
        self.block_requests = Requests(on_answer=self._wake.set)
        self.snap_requests = Requests(on_answer=self._wake.set)
        self.probes = Requests(rid_base=PROBE_RID_BASE)
        self._heads: dict[bytes, int] = {}  # validator -> head height it reported to a probe
        self.server = SyncServer(env, s, self.metrics, self.log, self.interval)
        self.history = HistoryBackfill(env, s, self.metrics, self.log, genesis_index)
        self._target = 0
        self._hint: tuple[bytes, ...] = ()
        self.rounds = 0

    # ---- lifecycle -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve, fetch and probe until cancelled; then close every held snapshot."""
        p2p = self.env.p2p
        p2p.register(T_SYNC_REQ, self.server.on_sync_req)
        p2p.register(T_SNAP_REQ, self.server.on_snap_req)
        p2p.register(T_SYNC_RESP, self._on_sync_resp)
        p2p.register(T_SNAP_RESP, self._on_snap_resp)
        p2p.register(T_RES_REQ, self.server.on_res_req)
        p2p.register(T_RES_RESP, self._on_res_resp)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.server.run(), name="sync-serve")
                tg.create_task(self.server.snapshots.run(), name="sync-snapshots")
                tg.create_task(self._run(), name="sync-fetch")
                tg.create_task(self._probe_loop(), name="sync-probe")
                tg.create_task(self.history.run(), name="sync-history")
        finally:
            await self.server.close()
            self.env.status.syncing = False

    # ---- driver interface ----------------------------------------------------------------------------

    def request(self, target_height: int, peers: Sequence[bytes]) -> None:
        """Sync up to at least `target_height`; repeated calls coalesce and only ever raise the target."""
        if peers:
            merged = list(dict.fromkeys([*peers, *self._hint]))
            self._hint = tuple(merged[:MAX_HINT_PEERS])
        if target_height > self._target:
            self._target = target_height
            if self.env.status.syncing:
                self.env.status.sync_target = target_height
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
        if self.block_requests.answer(peer, resp.rid, resp) or self.history.on_blocks(peer, resp):
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
        p2p, store = self.env.p2p, self.env.store
        while True:
            await asyncio.sleep(self.settings.probe_interval)
            last = self.env.status.last_commit_ms
            if last is not None and time.time() * 1000 - last < self.settings.probe_interval * 1000:
                continue
            self.probes.take_expired()
            start = store.head.height + 1
            for peer in p2p.connected():
                if p2p.is_validator(peer) and not any(p.peer == peer for p in self.probes.open.values()):
                    rid = self.probes.add(peer, None, self.settings.request_timeout)
                    if not p2p.send(peer, T_SYNC_REQ, SyncRequest(rid, start, 1).to_value()):
                        self.probes.drop(rid)

    def _note_head(self, peer: bytes, height: int) -> None:
        """Remember a validator's reported head; sync to the (f+1)-th highest, which an honest one has."""
        local = self.env.store.head.height
        self._heads[peer] = height
        validators = self.env.validators
        f = (len(validators) - 1) // 3
        heads = sorted((h for p, h in self._heads.items() if p in validators), reverse=True)
        if len(heads) > f and heads[f] > max(local, self._target):
            self.log.info("sync_behind_idle_network", height=local, target=heads[f])
            self.request(heads[f], [p for p, h in sorted(self._heads.items()) if h >= heads[f]])

    def _on_res_resp(self, peer: bytes, body: Any) -> None:
        if not self.history.on_results(peer, ResultsResponse.from_value(body)):
            self.metrics.peer_failures.labels("unsolicited").inc()

    def _on_snap_resp(self, peer: bytes, body: Any) -> None:
        resp = decode_snap_resp(body)
        if not self.snap_requests.answer(peer, resp.rid, resp):
            self.metrics.peer_failures.labels("unsolicited").inc()

    # ---- rounds ----------------------------------------------------------------------------------------

    async def _run(self) -> None:
        store = self.env.store
        delay = self.settings.retry_interval
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._target <= store.head.height:
                continue
            before = store.head.height
            result = await self._round()  # peers' faults end a round; anything else ends the node
            if store.head.height < self._target:
                delay = self.settings.retry_interval if store.head.height > before else min(delay * 2, MAX_RETRY_S)
                self.log.info("sync_retry_scheduled", result=result, delay_s=delay)
                await asyncio.sleep(delay)
                self._wake.set()
            else:
                delay = self.settings.retry_interval

    async def _round(self) -> str:
        store, ch = self.env.store, self.env.status
        self.rounds += 1
        local, target = store.head.height, self._target
        ch.syncing, ch.sync_target, ch.sync_progress = True, target, local
        self.log.info("sync_started", height=local, target=target)
        result = "failed"
        try:
            if self._state_sync_on and (local == 0 or target - local > self.settings.block_sync_max_gap):
                await self._state_sync()
            result = await self._fetcher().run()
            if result == NEED_SNAPSHOT and self._state_sync_on and await self._state_sync():
                result = await self._fetcher().run()
            return result
        finally:
            height = store.head.height
            ch.sync_progress = height
            if height >= self._target:
                ch.syncing = False
            self.log.info("sync_finished", height=height, target=self._target, result=result)

    def _fetcher(self) -> BlockFetcher:
        return BlockFetcher(self.env, self.settings, self.metrics, self.book, self.block_requests,
                            self._handover.deliver_block,
                            lambda: self._target, lambda: self._hint, self._wake, self.log)

    async def _state_sync(self) -> bool:
        p2p = self.env.p2p
        local = self.env.store.head.height
        self.log.info("state_sync_started", height=local, target=self._target)
        fetcher = SnapshotFetcher(self.env, self.settings, self.metrics, self.book, self.snap_requests, self._wake,
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
            await self._handover.install_snapshot(plan)
        except SnapshotError as exc:  # refused before anything was written (the driver goes on)
            if isinstance(exc, SnapshotRootMismatch):
                for p in choice.peers:
                    self.book.misbehaved(p, "bad_snapshot", height=plan.height, error=exc.message)
            else:
                self.log.warning("state_sync_install_refused", height=plan.height, error=exc.message)
            await asyncio.to_thread(plan.importer.abort)
            return False
        self.metrics.snapshots_installed.inc()
        self.env.status.sync_progress = plan.height
        self.history.wake()
        self.log.info("state_sync_installed", height=plan.height, state_root=plan.state_root.hex(),
                      block_hash=plan.block_hash.hex(), chunks=len(plan.manifest.chunk_hashes),
                      items=plan.importer.items)
        return True
