"""State sync, fetching side: pick a certified snapshot offer, download its chunks from several peers.

Offers are collected from every usable peer for `manifest_timeout`. An offer counts only if its
checkpoint certificate (height, block hash, state root) and the commit certificate of that block are
signed by a quorum of the genesis validators and its manifest names the same height and root; peers
sending anything else are penalised. The highest height wins (ties: the manifest offered by most peers);
chunks are then fetched from the peers that offered byte-identical manifests, each checked against the
manifest's hash on arrival (a mismatch penalises the sender and the chunk is asked elsewhere), and fed in
order to a `SnapshotImporter` through a bounded reorder buffer.

Rule: nothing here touches the live state. The importer only stages; the consensus driver installs the
resulting `SnapshotPlan` (importer.finish checks the rebuilt root against the certified one).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from node.sync.blocks import decode_certificate
from node.sync.common import (
    PeerBook,
    Requests,
    SnapshotPlan,
    SyncEnv,
    SyncMetrics,
    SyncSettings,
    release_all,
    retry_expired,
    wait_for_answer,
)
from protocol.consensus.certs import CommitCertificate
from protocol.crypto import sha256
from protocol.errors import ProtocolError
from protocol.messages import T_SNAP_REQ
from protocol.syncmsg import KIND_CHUNK, KIND_MANIFEST, STATUS_BUSY, SnapChunk, SnapOffer, SnapRequest
from storage.errors import StorageError
from storage.snapshot import SnapshotImporter, SnapshotManifest

CHUNK_SLACK = 64 * 1024  # chunk framing (index, root, item headers) beyond its payload limit


@dataclass(frozen=True, slots=True)
class Choice:
    offer: SnapOffer
    manifest: SnapshotManifest
    cert: CommitCertificate
    peers: tuple[bytes, ...]


class SnapshotFetcher:
    def __init__(self, env: SyncEnv, settings: SyncSettings, metrics: SyncMetrics, peers: PeerBook,
                 requests: Requests, wake: asyncio.Event, log: Any, frame_budget: int) -> None:
        self.env, self.s, self.metrics, self.book, self.requests = env, settings, metrics, peers, requests
        self.wake, self.log, self.frame_budget = wake, log, frame_budget
        self.validators = list(env.validators)
        self.chain_id = env.chain_id

    # ---- offers --------------------------------------------------------------------------------------

    def check_offer(self, peer: bytes, offer: SnapOffer) -> tuple[SnapshotManifest, CommitCertificate] | None:
        """The offer's manifest and commit certificate if everything in it is certified, else None."""
        try:
            manifest = SnapshotManifest.decode(offer.manifest)
            cert = decode_certificate(offer.commit)
        except ProtocolError:
            self.book.misbehaved(peer, "bad_offer", height=offer.height)
            return None
        cp = offer.checkpoint
        if (manifest.height != offer.height or manifest.root != offer.state_root or cp.height != offer.height
                or cp.block_hash != offer.block_hash or cp.state_root != offer.state_root
                or cert.height != offer.height or cert.block_hash != offer.block_hash
                or not cp.verify(self.validators, self.chain_id)
                or not cert.verify(self.validators, self.chain_id)):
            self.book.misbehaved(peer, "bad_offer", height=offer.height)
            return None
        if manifest.max_chunk_bytes + CHUNK_SLACK > self.frame_budget:
            self.log.info("state_sync_offer_skipped", peer=peer.hex()[:16], reason="chunks_exceed_frame")
            return None
        return manifest, cert

    async def collect(self) -> list[Choice]:
        """Verified offers grouped by identical manifest, best first."""
        p2p = self.env.p2p
        for peer in self.book.idle(p2p.connected()):
            rid = self.requests.add(peer, KIND_MANIFEST, self.s.manifest_timeout)
            if p2p.send(peer, T_SNAP_REQ, SnapRequest(rid, KIND_MANIFEST).to_value()):
                self.book.get(peer).busy = True
            else:
                self.requests.drop(rid)
        groups: dict[tuple[int, bytes], list[tuple[bytes, SnapOffer, SnapshotManifest, CommitCertificate]]] = {}
        while self.requests.open:
            await self._wait()
            for _rid, pend in self.requests.take_done():
                self.book.get(pend.peer).busy = False
                if isinstance(pend.result, SnapOffer):
                    checked = self.check_offer(pend.peer, pend.result)
                    if checked is not None:
                        key = (pend.result.height, sha256(pend.result.manifest))
                        groups.setdefault(key, []).append((pend.peer, pend.result, *checked))
            for _rid, pend in self.requests.take_expired():
                self.book.get(pend.peer).busy = False
        out = [Choice(g[0][1], g[0][2], g[0][3], tuple(p for p, *_ in g)) for g in groups.values()]
        out.sort(key=lambda c: (-c.offer.height, -len(c.peers), c.peers))
        return out

    # ---- chunks --------------------------------------------------------------------------------------

    async def fetch(self, choice: Choice) -> SnapshotPlan | None:
        """Download and stage every chunk; None (import aborted) when it cannot be completed."""
        p2p, state = self.env.p2p, self.env.store.state
        offer, manifest = choice.offer, choice.manifest
        importer = await asyncio.to_thread(SnapshotImporter, state, offer.state_root, manifest=manifest)
        hashes = manifest.chunk_hashes
        n = len(hashes)
        peers = list(choice.peers)
        todo = list(range(n))
        buffer: dict[int, bytes] = {}
        feed = 0
        last_progress = time.monotonic()
        ok = False
        try:
            while feed < n:
                if not peers:
                    self.log.warning("state_sync_failed", height=offer.height, reason="no_peers")
                    return None
                if time.monotonic() - last_progress > self.s.stall_timeout:
                    self.log.warning("state_sync_failed", height=offer.height, reason="stalled")
                    return None
                for peer in self.book.idle(p2p.connected(), peers):
                    if peer not in peers or not todo or todo[0] >= feed + self.s.max_buffered_chunks:
                        continue
                    index = todo.pop(0)
                    rid = self.requests.add(peer, index, self.s.request_timeout)
                    req = SnapRequest(rid, KIND_CHUNK, offer.height, index)
                    if p2p.send(peer, T_SNAP_REQ, req.to_value()):
                        self.book.get(peer).busy = True
                    else:
                        self.requests.drop(rid)
                        todo.insert(0, index)
                        self.book.back_off(peer, "send_failed")
                await self._wait()
                for _rid, pend in self.requests.take_done():
                    self.book.get(pend.peer).busy = False
                    index, res = pend.what, pend.result
                    if isinstance(res, SnapChunk) and res.height == offer.height and res.index == index:
                        if sha256(res.data) == hashes[index]:
                            buffer[index] = res.data
                            self.metrics.bytes.inc(len(res.data))
                            continue
                        self.book.misbehaved(pend.peer, "bad_chunk", index=index, height=offer.height)
                    elif isinstance(res, SnapChunk):
                        self.book.misbehaved(pend.peer, "wrong_chunk", index=index, height=offer.height)
                    elif getattr(res, "status", None) == STATUS_BUSY:
                        self.book.back_off(pend.peer, "busy")
                    elif pend.peer in peers:  # the peer no longer serves this snapshot
                        peers.remove(pend.peer)
                    todo.append(index)
                retry_expired(self.requests, self.book, todo)
                todo.sort()
                while feed in buffer:
                    await asyncio.to_thread(importer.add_chunk, buffer.pop(feed))
                    feed += 1
                    last_progress = time.monotonic()
                    self.metrics.chunks.inc()
                    if feed == n or feed % 50 == 0:
                        self.log.info("state_sync_progress", height=offer.height, chunks=feed, of=n)
            ok = True
            return SnapshotPlan(offer.height, offer.block_hash, offer.state_root, choice.cert, offer.checkpoint,
                                importer, manifest)
        except StorageError as exc:  # SnapshotError: chunks matched the manifest yet do not import
            for p in choice.peers:
                self.book.misbehaved(p, "bad_snapshot", height=offer.height, error=str(exc))
            return None
        finally:
            release_all(self.requests, self.book)
            if not ok:
                await asyncio.to_thread(importer.abort)  # wiping the staged state can take long

    async def _wait(self) -> None:
        await wait_for_answer(self.requests, self.wake)
