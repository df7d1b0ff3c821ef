"""The serving side of sync: blocks with their certificates, and snapshots at stable checkpoints.

Requests are parsed in the P2P reader task and put on a bounded queue; one worker answers them in order,
reading the database in a worker thread. Over the queue bound or a peer's rate (token bucket) the answer
is `busy`. Blocks and certificates are sent as the exact stored bytes, never re-encoded.

Snapshots: the driver calls `note_committed` right after committing a multiple of K, in its task, so a
LevelDB snapshot taken there is the state of exactly that height; `note_stable_checkpoint` makes one
servable. Rule: a held snapshot is closed only when no thread reads it (the worker owns all reads), and
at most `snapshots_kept` candidates plus the latest servable one are held, and up to `SUPERSEDED_KEPT`
superseded ones that were already offered, for `SUPERSEDED_GRACE_S`, so downloads in progress finish.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from node.sync.common import SyncEnv, SyncMetrics, SyncSettings
from protocol.consensus.certs import CheckpointCertificate
from protocol.messages import T_SNAP_RESP, T_SYNC_RESP
from protocol.syncmsg import (
    KIND_CHUNK,
    KIND_MANIFEST,
    STATUS_BUSY,
    STATUS_NONE,
    STATUS_OK,
    SnapChunk,
    SnapOffer,
    SnapRefusal,
    SnapRequest,
    SyncRequest,
    SyncResponse,
)
from storage.snapshot import MIN_CHUNK_BYTES, SnapshotManifest, StateSnapshot

ENVELOPE_SLACK = 64 * 1024  # envelope, field names and channel overhead around a response's payload


SUPERSEDED_GRACE_S = 30.0  # an offered snapshot stays servable this long after a newer one appears...
SUPERSEDED_KEPT = 2  # ...for at most this many superseded snapshots


@dataclass
class Held:
    """One LevelDB snapshot the node may serve."""

    height: int
    block_hash: bytes
    snap: StateSnapshot
    checkpoint: CheckpointCertificate | None = None
    commit: bytes | None = None
    manifest: SnapshotManifest | None = None
    manifest_bytes: bytes | None = None
    retired: bool = False
    closed: bool = False
    superseded_at: float | None = None  # monotonic time a newer snapshot became servable


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
    held: list[Held] = field(default_factory=list)
    _queue: asyncio.Queue[tuple[bytes, str, Any]] = field(init=False)
    _buckets: dict[bytes, _Bucket] = field(default_factory=dict)
    _in_use: Held | None = None
    _closing: deque[Held] = field(default_factory=deque)
    _thread_job: asyncio.Future[Any] | None = None

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(self.settings.serve_queue)
        frame = self.env.p2p.settings.max_frame
        self.frame_budget = frame - ENVELOPE_SLACK  # one block alone may use all of it
        self.response_budget = max(MIN_CHUNK_BYTES, min(self.settings.max_response_bytes, self.frame_budget))
        self.chunk_bytes = max(MIN_CHUNK_BYTES, min(self.settings.chunk_bytes, self.response_budget - 1024))

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
            else:
                body, status = await self._snap_response(req)
                self._send(peer, T_SNAP_RESP, body, status)

    async def _in_thread(self, held: Held | None, fn: Any, *args: Any) -> Any:
        """Run a database read in a thread; `held` cannot be closed until it returns."""
        self._in_use = held
        job = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        self._thread_job = job
        try:
            return await asyncio.shield(job)
        finally:
            self._in_use = None
            self._thread_job = None
            self._close_retired()

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

    async def _snap_response(self, req: SnapRequest) -> tuple[dict[str, Any], str]:
        none = SnapRefusal(req.rid, req.kind, STATUS_NONE).to_value(), STATUS_NONE
        if req.kind == KIND_MANIFEST:
            held = self.servable()
            if held is None or held.checkpoint is None or held.commit is None:
                return none
            if held.manifest_bytes is None:
                manifest = await self._in_thread(held, held.snap.manifest, self.chunk_bytes)
                held.manifest, held.manifest_bytes = manifest, manifest.encode()
            if held.closed or held.manifest_bytes is None:
                return none
            offer = SnapOffer(req.rid, held.height, held.block_hash, held.snap.root, held.manifest_bytes,
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
        data = await self._in_thread(held, held.snap.chunk, req.index, self.chunk_bytes)
        if data is None:
            return none
        return SnapChunk(req.rid, held.height, req.index, data).to_value(), STATUS_OK

    # ---- snapshots (driver task) ---------------------------------------------------------------------

    def servable(self) -> Held | None:
        ok = [h for h in self.held if h.checkpoint is not None and not h.retired]
        return max(ok, key=lambda h: h.height) if ok else None

    def note_committed(self, height: int, block_hash: bytes, state_root: bytes) -> None:
        if height <= 0 or height % self.interval != 0:
            return
        snap = self.env.store.state.snapshot()
        if snap.height != height or snap.root != state_root:
            snap.close()
            self.log.warning("sync_snapshot_skipped", height=height, snapshot_height=snap.height)
            return
        self.held.append(Held(height, block_hash, snap))
        self._trim()

    def note_stable_checkpoint(self, height: int, block_hash: bytes, state_root: bytes, cert_value: Any) -> None:
        cert = cert_value if isinstance(cert_value, CheckpointCertificate) else \
            CheckpointCertificate.from_value(cert_value)
        for h in self.held:
            if h.height == height and not h.retired:
                if h.block_hash != block_hash or h.snap.root != state_root or cert.height != height:
                    self.log.error("sync_checkpoint_mismatch", height=height)
                    return
                h.checkpoint = cert
                h.commit = self.env.store.blocks.get_certificate(height)
                self._trim()
                return

    def _trim(self) -> None:
        best = self.servable()
        candidates = sorted((h for h in self.held if h is not best and not h.retired and h.checkpoint is None),
                            key=lambda h: -h.height)
        now = time.monotonic()
        # a superseded snapshot that was offered stays a while, so downloads in progress can finish
        grace = sorted((h for h in self.held if h is not best and not h.retired and h.checkpoint is not None
                        and h.manifest is not None), key=lambda h: -h.height)[:SUPERSEDED_KEPT]
        for h in grace:
            if h.superseded_at is None:
                h.superseded_at = now
        for h in self.held:
            if h is best or h.retired:
                continue
            if h in grace and h.superseded_at is not None and now - h.superseded_at < SUPERSEDED_GRACE_S:
                continue
            if h.checkpoint is not None or h not in candidates[: self.settings.snapshots_kept] or \
                    (best is not None and h.height < best.height):
                h.retired = True
                self._closing.append(h)
        self.held = [h for h in self.held if not h.retired]
        self._close_retired()

    def _close_retired(self) -> None:
        keep: deque[Held] = deque()
        while self._closing:
            h = self._closing.popleft()
            if h is self._in_use:
                keep.append(h)
            elif not h.closed:
                h.snap.close()
                h.closed = True
        self._closing = keep

    async def close(self) -> None:
        """After the worker is cancelled: wait for its thread, then close every snapshot."""
        job = self._thread_job
        if job is not None:
            await asyncio.wait([job], timeout=5.0)
        self._in_use = None
        for h in self.held:
            h.retired = True
            self._closing.append(h)
        self.held = []
        self._close_retired()
