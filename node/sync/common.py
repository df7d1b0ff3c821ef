"""Shared pieces of block and state sync: limits, the plan handed to the driver, metrics, peers, requests.

Rule: every bound sync enforces is a named `SyncSettings` field; peers are judged only here (`PeerBook`),
and a response is accepted only when it answers an open request (`Requests`) from the peer it was sent to.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from node.chain import ChainStatus, ChainStore
from node.config import DEFAULT_BLOCK_SYNC_MAX_GAP, DEFAULT_SNAPSHOT_DISK_BYTES, DEFAULT_SNAPSHOTS_ON_DISK
from node.p2p import P2P
from protocol.consensus.certs import CheckpointCertificate, CommitCertificate
from storage.snapshot import SnapshotImporter, SnapshotManifest


@dataclass(frozen=True, slots=True)
class SyncSettings:
    # fetching blocks
    batch_blocks: int = 64  # blocks asked for per sync_req
    request_timeout: float = 5.0  # a sync_req/snap_req chunk unanswered this long is retried elsewhere
    lookahead_blocks: int = 1024  # ranges are requested at most this far past the next height to deliver
    max_buffer_bytes: int = 64 * 1024 * 1024  # fetched, verified, not yet delivered blocks
    stall_timeout: float = 20.0  # a round with no progress for this long ends (and is retried)
    retry_interval: float = 1.0  # pause between a failed round and the next one
    probe_interval: float = 2.0  # with no local commit for this long, ask validators for their heads
    # judging peers
    busy_backoff: float = 0.5  # a peer that answered busy is left alone this long
    timeout_penalty: float = 3.0  # ...one that did not answer in time
    misbehave_penalty: float = 30.0  # ...one that sent an invalid block, certificate or chunk
    peer_info_ttl: float = 1.0  # a peer's reported head/lowest block is trusted for ranges this long
    # state sync: an empty node, or one behind by more than this many blocks (node/config.py says why)
    block_sync_max_gap: int = DEFAULT_BLOCK_SYNC_MAX_GAP
    manifest_timeout: float = 3.0  # how long offers are collected
    chunk_bytes: int = 1024 * 1024  # key+value payload per served chunk
    max_buffered_chunks: int = 16  # fetched chunks waiting for their turn in the importer
    # serving
    max_response_bytes: int = 3 * 1024 * 1024  # also capped by the P2P frame size
    serve_queue: int = 64  # requests waiting for the serving worker; beyond: busy
    serve_rate: float = 50.0  # requests per second served per peer; beyond: busy
    serve_burst: int = 100
    snapshots_kept: int = 2  # candidate snapshots held besides the latest servable one
    snapshot_dir: Path | None = None  # stable snapshots written here and served after a restart (None: off)
    snapshots_on_disk: int = DEFAULT_SNAPSHOTS_ON_DISK  # newest kept on disk
    snapshot_disk_bytes: int = DEFAULT_SNAPSHOT_DISK_BYTES  # all of them together
    # history backfill (after a state sync)
    history_batch_blocks: int = 128  # blocks asked for per hist_req (fewer come back when they are large)
    history_parallel: int = 4  # hist_reqs in flight, one per peer
    history_buffer_bytes: int = 64 * 1024 * 1024  # fetched, not yet verified and written


@dataclass(frozen=True, slots=True)
class SyncEnv:
    """What sync uses of the node, each typed: the chain store (read only: sync never writes), the P2P
    service, the chain's id and validator keys, and the progress fields it keeps for /status."""

    store: ChainStore
    p2p: P2P
    chain_id: str
    validators: tuple[bytes, ...]
    status: ChainStatus


@dataclass(frozen=True, slots=True)
class SnapshotPlan:
    """A fully imported, not yet installed snapshot: the driver calls
    `importer.finish(extra_ops=blocks.head_ops(height, block_hash, state_root))` on its writer thread
    (which checks the rebuilt root against `state_root`), then resets its replica at `height` with `cert`."""

    height: int
    block_hash: bytes
    state_root: bytes
    cert: CommitCertificate
    checkpoint: CheckpointCertificate
    importer: SnapshotImporter
    manifest: SnapshotManifest


class SyncMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.blocks = Counter("smeledger_sync_blocks_fetched", "Verified blocks fetched by block sync",
                              registry=registry)
        self.bytes = Counter("smeledger_sync_bytes_fetched", "Block and chunk bytes fetched by sync",
                             registry=registry)
        self.peer_failures = Counter("smeledger_sync_peer_failures", "Sync requests that failed, by reason",
                                     ["reason"], registry=registry)
        self.chunks = Counter("smeledger_sync_snapshot_chunks", "Verified snapshot chunks fetched",
                              registry=registry)
        self.served = Counter("smeledger_sync_served", "Sync requests answered, by type and status",
                              ["type", "status"], registry=registry)
        self.snapshots_installed = Counter("smeledger_sync_snapshots_installed", "State syncs installed",
                                           registry=registry)
        self.history = Counter("smeledger_history_blocks_backfilled", "Old blocks (with receipts and events) "
                               "fetched, verified along the hash chain and stored by history backfill",
                               registry=registry)


@dataclass
class PeerState:
    busy: bool = False  # one request in flight per peer
    until: float = 0.0  # not asked again before this (monotonic)
    height: int | None = None  # last head it reported
    first: int | None = None  # lowest block it reported holding
    reported: float = 0.0  # when (heads move: a report older than `peer_info_ttl` is ignored)


class PeerBook:
    """Who is asked next: connected, not penalised, not busy, and holding the height wanted."""

    def __init__(self, settings: SyncSettings, metrics: SyncMetrics, log: Any,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.metrics = metrics
        self.log = log
        self.clock = clock
        self.peers: dict[bytes, PeerState] = {}

    def get(self, peer: bytes) -> PeerState:
        st = self.peers.get(peer)
        if st is None:
            st = self.peers[peer] = PeerState()
        return st

    def idle(self, connected: Iterable[bytes], preferred: Iterable[bytes] = ()) -> list[bytes]:
        """Usable peers, preferred ones first (stable order)."""
        now = self.clock()
        conn = set(connected)
        pref = [p for p in preferred if p in conn]
        order = pref + sorted(conn - set(pref))
        for p in list(self.peers):  # forget peers that left (penalties kept), so the table stays bounded
            st = self.peers[p]
            if p not in conn and not st.busy and st.until <= now:
                del self.peers[p]
        return [p for p in order if not self.get(p).busy and self.get(p).until <= now]

    def can_serve(self, peer: bytes, height: int) -> bool:
        st = self.get(peer)
        if self.clock() - st.reported > self.settings.peer_info_ttl:
            return True
        return (st.height is None or st.height >= height) and (st.first is None or st.first <= height)

    def report(self, peer: bytes, height: int, first: int) -> None:
        st = self.get(peer)
        st.height, st.first, st.reported = height, (first or None), self.clock()

    def back_off(self, peer: bytes, reason: str) -> None:
        s = self.settings
        delay = {"busy": s.busy_backoff, "timeout": s.timeout_penalty}.get(reason, s.busy_backoff)
        self.get(peer).until = self.clock() + delay
        self.metrics.peer_failures.labels(reason).inc()

    def misbehaved(self, peer: bytes, reason: str, **kw: Any) -> None:
        self.get(peer).until = self.clock() + self.settings.misbehave_penalty
        self.metrics.peer_failures.labels(reason).inc()
        self.log.warning("sync_peer_misbehaved", peer=peer.hex()[:16], reason=reason, **kw)


@dataclass
class Pending:
    peer: bytes
    what: Any  # the fetcher's own tag (a block range, a chunk index, "manifest")
    deadline: float
    result: Any = None
    done: bool = False


@dataclass
class Requests:
    """Open requests by rid. A response is kept only if it answers an open rid from the same peer.

    Fetchers whose answers arrive as the same message type take disjoint rid ranges (`rid_base`), so an
    answer can never be taken for another fetcher's request."""

    clock: Callable[[], float] = time.monotonic
    open: dict[int, Pending] = field(default_factory=dict)
    _rids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    on_answer: Callable[[], None] | None = None
    rid_base: int = 0

    def add(self, peer: bytes, what: Any, timeout: float) -> int:
        rid = self.rid_base + next(self._rids)
        self.open[rid] = Pending(peer, what, self.clock() + timeout)
        return rid

    def answer(self, peer: bytes, rid: int, result: Any) -> bool:
        p = self.open.get(rid)
        if p is None or p.peer != peer or p.done:
            return False
        p.result, p.done = result, True
        if self.on_answer is not None:
            self.on_answer()
        return True

    def take_done(self) -> list[tuple[int, Pending]]:
        out = [(rid, p) for rid, p in self.open.items() if p.done]
        for rid, _p in out:
            del self.open[rid]
        return out

    def take_expired(self) -> list[tuple[int, Pending]]:
        now = self.clock()
        out = [(rid, p) for rid, p in self.open.items() if not p.done and p.deadline <= now]
        for rid, _p in out:
            del self.open[rid]
        return out

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self.open.values() if not p.done), default=None)

    def drop(self, rid: int) -> None:
        self.open.pop(rid, None)

    def clear(self) -> list[Pending]:
        out = list(self.open.values())
        self.open.clear()
        return out


def retry_expired(requests: Requests, book: PeerBook, todo: list[Any]) -> None:
    """Requests that timed out: free and penalise their peers, and put what they asked for back in `todo`."""
    for _rid, pend in requests.take_expired():
        book.get(pend.peer).busy = False
        book.back_off(pend.peer, "timeout")
        todo.append(pend.what)


def release_all(requests: Requests, book: PeerBook) -> None:
    """Forget every open request and free its peer (a fetch round ends)."""
    for pend in requests.clear():
        book.get(pend.peer).busy = False


async def wait_for_answer(requests: Requests, wake: asyncio.Event, poll: float = 0.2) -> None:
    """Return when a request was answered, the next one expires, `wake` is set, or after `poll` seconds.

    `asyncio.timeout`, not `asyncio.wait_for`: on Python 3.11 `wait_for` swallows a cancellation that
    arrives as the event is set, and the fetcher would then run on after its node stopped."""
    if any(p.done for p in requests.open.values()):
        return
    dl = requests.next_deadline()
    timeout = poll if dl is None else max(0.0, min(poll, dl - requests.clock()))
    wake.clear()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await wake.wait()
