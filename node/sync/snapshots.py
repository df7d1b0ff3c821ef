"""The snapshots a node serves for state sync: taken at checkpoint heights, servable once stable, kept on
disk so a restarted node serves one at once.

The driver calls `note_committed` right after committing a multiple of K, in its task, so a LevelDB
snapshot taken there is the state of exactly that height; `note_stable_checkpoint` makes it servable and
has it written to disk (node/sync/snapfiles.py) in a worker thread; once written it is served from the
files and the LevelDB snapshot is released. At start, `run()` loads the snapshots on disk (the newest
becomes servable). At most `snapshots_kept` candidates plus the latest servable one are held, and up to
`SUPERSEDED_KEPT` superseded ones that were already offered, for `SUPERSEDED_GRACE_S`, so downloads in
progress finish.

Rule: a held snapshot is closed only when no thread reads it (`readers`), and every read runs in a
worker thread through `read()`, which `close()` waits for; a save in progress stops at the next chunk
when the node stops.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from node.sync.common import SyncEnv, SyncSettings
from node.sync.snapfiles import DiskSnapshot, SnapshotFileError, SnapshotFiles
from protocol.consensus.certs import CheckpointCertificate
from storage.snapshot import SnapshotManifest, StateSnapshot

SUPERSEDED_GRACE_S = 30.0  # an offered snapshot stays servable this long after a newer one appears...
SUPERSEDED_KEPT = 2  # ...for at most this many superseded snapshots


@dataclass
class Held:
    """One snapshot the node may serve: a LevelDB snapshot of the live database, or files on disk."""

    height: int
    block_hash: bytes
    root: bytes
    snap: StateSnapshot | None  # None once it is served from disk
    disk: DiskSnapshot | None = None
    checkpoint: CheckpointCertificate | None = None
    commit: bytes | None = None
    manifest: SnapshotManifest | None = None
    manifest_bytes: bytes | None = None
    retired: bool = False
    closed: bool = False
    superseded_at: float | None = None  # monotonic time a newer snapshot became servable
    readers: int = 0  # worker threads reading it now

    def read_manifest(self, chunk_bytes: int) -> SnapshotManifest:
        """Worker thread: the manifest (one pass over the LevelDB snapshot, or the one on disk)."""
        if self.disk is not None:
            return self.disk.manifest
        assert self.snap is not None
        return self.snap.manifest(chunk_bytes)

    def read_chunk(self, index: int, chunk_bytes: int) -> bytes | None:
        """Worker thread: chunk `index`; raises SnapshotFileError when the file on disk is damaged."""
        if self.disk is not None:
            return self.disk.chunk(index)
        assert self.snap is not None
        return self.snap.chunk(index, chunk_bytes)


@dataclass
class Snapshots:
    env: SyncEnv
    settings: SyncSettings
    log: Any
    interval: int  # K: snapshots are taken at multiples of this height
    chunk_bytes: int
    files: SnapshotFiles | None
    held: list[Held] = field(default_factory=list)
    _closing: deque[Held] = field(default_factory=deque)
    _jobs: set[asyncio.Future[Any]] = field(default_factory=set)
    _save: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False

    # ---- reads (worker threads) ----------------------------------------------------------------------

    async def read(self, held: Held | None, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` in a worker thread; `held` is not closed before it returns."""
        if held is not None:
            held.readers += 1
        job = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        self._jobs.add(job)
        try:
            return await asyncio.shield(job)
        finally:
            self._jobs.discard(job)
            if held is not None:
                held.readers -= 1
            self._close_retired()

    # ---- disk ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Load the snapshots on disk, then write each newly servable snapshot to disk."""
        if self.files is None:
            return
        for disk in await self.read(None, self.files.load):
            if disk.manifest.max_chunk_bytes != self.chunk_bytes or any(h.height == disk.height for h in self.held):
                continue  # cut for another frame size: not servable as it is
            self.held.append(Held(disk.height, disk.block_hash, disk.root, None, disk, disk.checkpoint, disk.commit,
                                  disk.manifest, disk.manifest_bytes))
            self.log.info("snapshot_loaded", height=disk.height, bytes=disk.size,
                          chunks=len(disk.manifest.chunk_hashes))
        self._trim()
        while True:
            await self._save.wait()
            self._save.clear()
            best = self.servable()
            if best is not None and best.disk is None and best.snap is not None:
                await self._save_one(best)

    async def _save_one(self, held: Held) -> None:
        try:
            disk: DiskSnapshot | None = await self.read(held, self._write, held)
        except SnapshotFileError as exc:  # disk full, too large, stopping: it is still served from memory
            self.log.warning("snapshot_save_failed", height=held.height, error=str(exc))
            return
        if disk is None:
            return
        held.disk, held.manifest, held.manifest_bytes = disk, disk.manifest, disk.manifest_bytes
        self.log.info("snapshot_saved", height=held.height, bytes=disk.size, chunks=len(disk.manifest.chunk_hashes))
        self._close_retired()  # releases the LevelDB snapshot once no reader holds it

    def _write(self, held: Held) -> DiskSnapshot | None:
        assert self.files is not None and held.snap is not None
        assert held.checkpoint is not None and held.commit is not None
        return self.files.write(held.height, held.block_hash, held.root, held.checkpoint, held.commit,
                                self._chunks(held.snap), self.chunk_bytes)

    def _chunks(self, snap: StateSnapshot) -> Iterator[bytes]:
        for data in snap.chunks(self.chunk_bytes):
            if self._stopping:
                raise SnapshotFileError("the node is stopping")
            yield data

    async def drop_damaged(self, held: Held, exc: SnapshotFileError) -> None:
        """A chunk file failed its hash: stop serving that snapshot and delete it."""
        self.log.error("snapshot_file_damaged", height=held.height, error=str(exc))
        held.retired = True
        self.held = [h for h in self.held if h is not held]
        if self.files is not None and held.disk is not None:
            await self.read(None, self.files.delete, held.disk)

    # ---- the driver's calls --------------------------------------------------------------------------

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
        self.held.append(Held(height, block_hash, snap.root, snap))
        self._trim()

    def note_stable_checkpoint(self, height: int, block_hash: bytes, state_root: bytes, cert_value: Any) -> None:
        cert = cert_value if isinstance(cert_value, CheckpointCertificate) else \
            CheckpointCertificate.from_value(cert_value)
        for h in self.held:
            if h.height == height and not h.retired and h.checkpoint is None:
                if h.block_hash != block_hash or h.root != state_root or cert.height != height:
                    self.log.error("sync_checkpoint_mismatch", height=height)
                    return
                h.checkpoint = cert
                h.commit = self.env.store.blocks.get_certificate(height)
                self._trim()
                self._save.set()
                return

    # ---- bounds --------------------------------------------------------------------------------------

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
        """Close retired snapshots, and release the LevelDB snapshot of saved ones, once nobody reads them."""
        keep: deque[Held] = deque()
        while self._closing:
            h = self._closing.popleft()
            if h.readers:
                keep.append(h)
            elif not h.closed:
                if h.snap is not None:
                    h.snap.close()
                    h.snap = None
                h.closed = True
        self._closing = keep
        for h in self.held:
            if h.disk is not None and h.snap is not None and not h.readers:
                h.snap.close()
                h.snap = None

    async def close(self) -> None:
        """After the serving tasks are cancelled: stop a save, wait for every thread, close everything."""
        self._stopping = True
        if self._jobs:
            await asyncio.wait(list(self._jobs), timeout=5.0)
        for h in self.held:
            h.retired = True
            h.readers = 0
            self._closing.append(h)
        self.held = []
        self._close_retired()
