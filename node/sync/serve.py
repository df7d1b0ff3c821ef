"""The serving side of sync: blocks with their certificates, their results (for history backfill), and
snapshots at stable checkpoints (held by `Snapshots`, node/sync/snapshots.py).

Requests are parsed in the P2P reader task and put on a bounded queue; one worker answers them in order,
reading the database in a worker thread. Over the queue bound or a peer's rate (token bucket) the answer
is `busy`. Blocks, certificates and results are sent as the exact stored bytes, never re-encoded.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from node.sync.common import SyncEnv, SyncMetrics, SyncSettings
from node.sync.snapfiles import SnapshotFileError, SnapshotFiles
from node.sync.snapshots import Held, Snapshots
from protocol.messages import T_RES_RESP, T_SNAP_RESP, T_SYNC_RESP
from protocol.syncmsg import (
    KIND_CHUNK,
    KIND_MANIFEST,
    STATUS_BUSY,
    STATUS_NONE,
    STATUS_OK,
    BlockResults,
    ResultsRequest,
    ResultsResponse,
    SnapChunk,
    SnapOffer,
    SnapRefusal,
    SnapRequest,
    SyncRequest,
    SyncResponse,
)
from storage.snapshot import MIN_CHUNK_BYTES

ENVELOPE_SLACK = 64 * 1024  # envelope, field names and channel overhead around a response's payload


@dataclass
class _Bucket:
    tokens: float
    last: float


@dataclass
class SyncServer:
    env: SyncEnv
    settings: SyncSettings
    metrics: SyncMetrics
    log: Any
    interval: int  # K: snapshots are taken at multiples of this height
    _queue: asyncio.Queue[tuple[bytes, str, Any]] = field(init=False)
    _buckets: dict[bytes, _Bucket] = field(default_factory=dict)
    snapshots: Snapshots = field(init=False)

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(self.settings.serve_queue)
        frame = self.env.p2p.settings.max_frame
        self.frame_budget = frame - ENVELOPE_SLACK  # one block alone may use all of it
        self.response_budget = max(MIN_CHUNK_BYTES, min(self.settings.max_response_bytes, self.frame_budget))
        self.chunk_bytes = max(MIN_CHUNK_BYTES, min(self.settings.chunk_bytes, self.response_budget - 1024))
        s = self.settings
        files = None if s.snapshot_dir is None else SnapshotFiles(
            s.snapshot_dir, keep=s.snapshots_on_disk, max_bytes=s.snapshot_disk_bytes, chain_id=self.env.chain_id,
            validators=self.env.validators)
        self.snapshots = Snapshots(self.env, s, self.log, self.interval, self.chunk_bytes, files)

    @property
    def held(self) -> list[Held]:
        return self.snapshots.held

    # ---- intake (P2P reader task: parse, rate-limit, enqueue; never block) -----------------------

    def _allow(self, peer: bytes) -> bool:
        now = time.monotonic()
        s = self.settings
        b = self._buckets.get(peer)
        if b is None:
            b = self._buckets[peer] = _Bucket(float(s.serve_burst), now)
        b.tokens = min(float(s.serve_burst), b.tokens + (now - b.last) * s.serve_rate)
        b.last = now
        if b.tokens < 1.0:
            return False
        b.tokens -= 1.0
        return True

    def _admit(self, peer: bytes, kind: str, msg: Any) -> bool:
        if not self._allow(peer):
            return False
        try:
            self._queue.put_nowait((peer, kind, msg))
        except asyncio.QueueFull:
            return False
        return True

    def on_sync_req(self, peer: bytes, body: Any) -> None:
        req = SyncRequest.from_value(body)
        if not self._admit(peer, "blocks", req):
            self._send(peer, T_SYNC_RESP, SyncResponse(req.rid, STATUS_BUSY, req.start, 0, 0).to_value(), "busy")

    def on_res_req(self, peer: bytes, body: Any) -> None:
        req = ResultsRequest.from_value(body)
        if not self._admit(peer, "results", req):
            busy = ResultsResponse(req.rid, STATUS_BUSY, req.start, req.receipt, 0, 0)
            self._send(peer, T_RES_RESP, busy.to_value(), "busy")

    def on_snap_req(self, peer: bytes, body: Any) -> None:
        req = SnapRequest.from_value(body)
        if not self._admit(peer, "snap", req):
            self._send(peer, T_SNAP_RESP, SnapRefusal(req.rid, req.kind, STATUS_BUSY).to_value(), "busy")

    def _send(self, peer: bytes, msg_type: str, body: dict[str, Any], status: str) -> None:
        if self.env.p2p.send(peer, msg_type, body):
            self.metrics.served.labels(msg_type, status).inc()
        else:
            self.metrics.served.labels(msg_type, "dropped").inc()

    # ---- worker ------------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            peer, kind, req = await self._queue.get()
            if kind == "blocks":
                resp = await self._in_thread(None, self._blocks_response, req)
                self._send(peer, T_SYNC_RESP, resp.to_value(), resp.status)
            elif kind == "results":
                res = await self._in_thread(None, self._results_response, req)
                self._send(peer, T_RES_RESP, res.to_value(), res.status)
            else:
                body, status = await self._snap_response(req)
                self._send(peer, T_SNAP_RESP, body, status)

    async def _in_thread(self, held: Held | None, fn: Any, *args: Any) -> Any:
        return await self.snapshots.read(held, fn, *args)

    def _blocks_response(self, req: SyncRequest) -> SyncResponse:
        blocks = self.env.store.blocks
        head = self.env.store.head.height
        first = blocks.first_block_height() or 0
        out: list[tuple[bytes, bytes]] = []
        if first and first <= req.start <= head:
            size = 0
            stop = min(req.start + req.count, head + 1)
            for h, raw, cert in blocks.iter_blocks(req.start, stop):
                n = len(raw) + (len(cert) if cert else 0) + 16
                if cert is None or h != req.start + len(out):
                    break
                if size + n > (self.response_budget if out else self.frame_budget):
                    if not out:
                        self.log.warning("sync_block_too_large", height=h, bytes=n, frame_budget=self.frame_budget)
                    break
                out.append((raw, cert))
                size += n
        return SyncResponse(req.rid, STATUS_OK if out else STATUS_NONE, req.start, head, first, tuple(out))

    def _results_response(self, req: ResultsRequest) -> ResultsResponse:
        """Results of blocks from `req.start` on, within the response budget; an entry that does not fit
        whole is cut after the receipts that do and ends the answer (the requester continues there)."""
        blocks = self.env.store.blocks
        head = self.env.store.head.height
        first = blocks.history_from()
        out: list[BlockResults] = []
        size, skip = 0, req.receipt
        held = range(req.start, min(req.start + req.count, head + 1)) if req.start >= max(first, 1) else range(0)
        for h in held:
            events = blocks.block_events_at(h)
            if events is None:
                break
            receipts = blocks.receipts_at(h)
            budget = self.response_budget if out else self.frame_budget
            n = len(events) + 16
            take: list[bytes] = []
            for r in receipts[skip:]:
                if size + n + len(r) + 8 > budget:
                    break
                take.append(r)
                n += len(r) + 8
            if size + n > budget or (not take and skip < len(receipts)):
                if not out:
                    self.log.warning("sync_results_too_large", height=h, receipt=skip, frame_budget=self.frame_budget)
                break
            out.append(BlockResults(tuple(take), events, len(receipts)))
            size += n
            if skip + len(take) < len(receipts):
                break
            skip = 0
        return ResultsResponse(req.rid, STATUS_OK if out else STATUS_NONE, req.start, req.receipt, head, first,
                               tuple(out))

    async def _snap_response(self, req: SnapRequest) -> tuple[dict[str, Any], str]:
        none = SnapRefusal(req.rid, req.kind, STATUS_NONE).to_value(), STATUS_NONE
        if req.kind == KIND_MANIFEST:
            held = self.servable()
            if held is None or held.checkpoint is None or held.commit is None:
                return none
            if held.manifest_bytes is None:
                manifest = await self._in_thread(held, held.read_manifest, self.chunk_bytes)
                held.manifest, held.manifest_bytes = manifest, manifest.encode()
            if held.closed or held.manifest_bytes is None:
                return none
            offer = SnapOffer(req.rid, held.height, held.block_hash, held.root, held.manifest_bytes,
                              held.checkpoint, held.commit)
            if len(held.manifest_bytes) + len(held.commit) > self.response_budget:
                self.log.warning("sync_manifest_too_large", height=held.height, bytes=len(held.manifest_bytes))
                return none
            return offer.to_value(), STATUS_OK
        assert req.kind == KIND_CHUNK
        match = [h for h in self.held if h.height == req.height and h.manifest is not None and not h.closed]
        if not match:
            return none
        held = match[0]
        try:
            data = await self._in_thread(held, held.read_chunk, req.index, self.chunk_bytes)
        except SnapshotFileError as exc:
            await self.snapshots.drop_damaged(held, exc)
            return none
        if data is None:
            return none
        return SnapChunk(req.rid, held.height, req.index, data).to_value(), STATUS_OK

    # ---- snapshots (driver task) ---------------------------------------------------------------------

    def servable(self) -> Held | None:
        return self.snapshots.servable()

    def note_committed(self, height: int, block_hash: bytes, state_root: bytes) -> None:
        self.snapshots.note_committed(height, block_hash, state_root)

    def note_stable_checkpoint(self, height: int, block_hash: bytes, state_root: bytes, cert_value: Any) -> None:
        self.snapshots.note_stable_checkpoint(height, block_hash, state_root, cert_value)

    async def close(self) -> None:
        """After the worker is cancelled: wait for its threads, then close every snapshot."""
        await self.snapshots.close()
