"""Block sync, fetching side: ranges from several peers at once, verified, delivered in height order.

[next, target] is cut into ranges of `batch_blocks`; each idle peer gets one range (one request in flight
per peer). A response is checked as a whole before anything is kept: strict block decoding, chain id,
contiguous heights from the asked start, parent hashes within the batch, and for every block a commit
certificate for exactly that height and hash signed by a quorum of the genesis validators. A peer whose
answer fails any check is penalised and its range goes to another peer; a timeout or `busy` only backs
it off. Verified batches wait in a buffer bounded by `lookahead_blocks` and `max_buffer_bytes`.

Rule: this module never writes blocks or state. `deliver(block, cert)` (the consensus driver) is awaited
in strict height order; the parent of each delivered block is checked against the one before it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from node.sync.common import (
    PeerBook,
    Requests,
    SyncEnv,
    SyncMetrics,
    SyncSettings,
    release_all,
    retry_expired,
    wait_for_answer,
)
from protocol import codec
from protocol.block import Block
from protocol.consensus.certs import CommitCertificate, plain_verifier
from protocol.errors import ProtocolError
from protocol.messages import T_SYNC_REQ
from protocol.syncmsg import MAX_SYNC_BLOCKS, STATUS_BUSY, STATUS_OK, SyncRequest, SyncResponse

CERT_LIMITS = codec.Limits(max_bytes=256 * 1024, max_depth=4, max_str=64, max_bin=64, max_array=2048, max_map=8)
Deliver = Callable[[Block, CommitCertificate], Awaitable[None]]

DONE = "done"  # reached the target
STALLED = "stalled"  # no progress for stall_timeout (no usable peer, or every answer failed)
NEED_SNAPSHOT = "need_snapshot"  # every peer that answered has pruned the next height away
STOPPED = "stopped"  # the local height went down (cannot happen unless the store was replaced)


class BadBatch(Exception):
    """A response that fails verification; the peer that sent it is penalised."""

    def __init__(self, reason: str, height: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.height = height


def decode_certificate(raw: bytes) -> CommitCertificate:
    return CommitCertificate.from_value(codec.decode(raw, CERT_LIMITS))


def verify_batch(resp: SyncResponse, start: int, chain_id: str, validators: Sequence[bytes],
                 ) -> list[tuple[Block, CommitCertificate, int]]:
    """Decode and check one `ok` response that should start at `start`; raises BadBatch."""
    out: list[tuple[Block, CommitCertificate, int]] = []
    verifier = plain_verifier(validators)
    prev: Block | None = None
    for i, (raw, raw_cert) in enumerate(resp.blocks):
        h = start + i
        try:
            block = Block.decode(raw)
            cert = decode_certificate(raw_cert)
        except ProtocolError as exc:
            raise BadBatch("undecodable_block", h) from exc
        if block.height != h or block.header.chain != chain_id:
            raise BadBatch("wrong_height", h)
        if cert.height != h or cert.block_hash != block.hash:
            raise BadBatch("certificate_mismatch", h)
        if prev is not None and block.header.parent != prev.hash:
            raise BadBatch("wrong_parent", h)
        if not cert.verify(validators, chain_id, verifier):
            raise BadBatch("bad_certificate", h)
        out.append((block, cert, len(raw) + len(raw_cert)))
        prev = block
    return out


@dataclass
class _Batch:
    peer: bytes
    items: list[tuple[Block, CommitCertificate, int]]

    @property
    def size(self) -> int:
        return sum(n for _b, _c, n in self.items)


def _skip_to(nxt: int, todo: list[tuple[int, int]], done: dict[int, _Batch]) -> None:
    """Forget ranges and buffered blocks below `nxt` (committed meanwhile by the driver itself)."""
    kept = [(max(a, nxt), b) for a, b in todo if b >= nxt]
    todo[:] = sorted(kept)
    for start in [s for s in done if s < nxt]:
        batch = done.pop(start)
        rest = [it for it in batch.items if it[0].height >= nxt]
        if rest:
            done[rest[0][0].height] = _Batch(batch.peer, rest)


class BlockFetcher:
    """One block-sync round from the local height to a target that may rise while it runs."""

    def __init__(self, env: SyncEnv, settings: SyncSettings, metrics: SyncMetrics, peers: PeerBook,
                 requests: Requests, deliver: Deliver, target: Callable[[], int],
                 preferred: Callable[[], Sequence[bytes]], wake: asyncio.Event, log: Any) -> None:
        self.env, self.s, self.metrics, self.book = env, settings, metrics, peers
        self.requests, self.deliver, self.target, self.preferred = requests, deliver, target, preferred
        self.wake, self.log = wake, log
        self.validators = list(env.validators)
        self.chain_id = env.chain_id

    async def run(self) -> str:
        store, p2p = self.env.store, self.env.p2p
        nxt = store.head.height + 1
        last_hash = store.head.block_hash
        todo: list[tuple[int, int]] = []  # [start, end] ranges not requested yet, sorted
        frontier = nxt  # lowest height not yet in todo, in flight or done
        done: dict[int, _Batch] = {}
        last_progress = time.monotonic()
        try:
            while True:
                local = store.head.height
                if local != nxt - 1:  # the driver committed on its own (consensus caught up): skip ahead
                    if local < nxt - 1:
                        return STOPPED
                    nxt, last_hash = local + 1, store.head.block_hash
                    frontier = max(frontier, nxt)
                _skip_to(nxt, todo, done)  # also trims late answers to ranges that were skipped
                target = self.target()
                if nxt > target:
                    return DONE
                limit = min(target, nxt + self.s.lookahead_blocks - 1)
                while frontier <= limit:
                    end = min(frontier + self.s.batch_blocks - 1, limit)
                    todo.append((frontier, end))
                    frontier = end + 1
                todo.sort()
                self._assign(todo, nxt, sum(b.size for b in done.values()))
                # deliver what is ready, in order
                while nxt in done and store.head.height == nxt - 1:
                    batch = done.pop(nxt)
                    for k, (block, cert, _n) in enumerate(batch.items):
                        if block.header.parent != last_hash:
                            self.book.misbehaved(batch.peer, "wrong_parent", height=block.height)
                            todo.append((block.height, block.height + len(batch.items) - k - 1))
                            todo.sort()
                            break
                        if store.head.height != block.height - 1:
                            done[block.height] = _Batch(batch.peer, batch.items[k:])
                            break
                        await self.deliver(block, cert)
                        last_hash = block.hash
                        nxt = block.height + 1
                        last_progress = time.monotonic()
                        self._progress(nxt - 1, target)
                if nxt > self.target() or store.head.height != nxt - 1:
                    continue
                if time.monotonic() - last_progress > self.s.stall_timeout:
                    return STALLED
                if self._everyone_pruned(p2p.connected(), nxt):
                    return NEED_SNAPSHOT
                await self._wait()
                for _rid, pend in self.requests.take_done():
                    self.book.get(pend.peer).busy = False
                    await self._on_response(pend.peer, pend.what, pend.result, todo, done)
                retry_expired(self.requests, self.book, todo)
                todo.sort()
        finally:
            release_all(self.requests, self.book)

    def _assign(self, todo: list[tuple[int, int]], nxt: int, buffered: int) -> None:
        p2p = self.env.p2p
        if not todo:
            return
        budget_full = buffered + len(self.requests.open) * self.s.max_response_bytes > self.s.max_buffer_bytes
        for peer in self.book.idle(p2p.connected(), self.preferred()):
            pick = next((i for i, (a, _b) in enumerate(todo) if self.book.can_serve(peer, a)
                         and (a == nxt or not budget_full)), None)
            if pick is None:
                continue
            start, end = todo.pop(pick)
            count = min(end - start + 1, MAX_SYNC_BLOCKS)
            if count < end - start + 1:
                todo.append((start + count, end))
                todo.sort()
            rid = self.requests.add(peer, (start, start + count - 1), self.s.request_timeout)
            if not p2p.send(peer, T_SYNC_REQ, SyncRequest(rid, start, count).to_value()):
                self.requests.drop(rid)
                self.book.back_off(peer, "send_failed")
                todo.append((start, start + count - 1))
                todo.sort()
                continue
            self.book.get(peer).busy = True
            if not todo:
                return

    async def _on_response(self, peer: bytes, rng: tuple[int, int], resp: SyncResponse,
                     todo: list[tuple[int, int]], done: dict[int, _Batch]) -> None:
        start, end = rng
        if resp.status == STATUS_BUSY:
            self.book.back_off(peer, "busy")
            todo.append(rng)
            return
        self.book.report(peer, resp.height, resp.first)
        if resp.status != STATUS_OK:
            todo.append(rng)
            return
        try:
            if resp.start != start or len(resp.blocks) > end - start + 1:
                raise BadBatch("wrong_range", start)
            # decoding and signature checks run off the event loop (consensus and gossip share it)
            items = await asyncio.to_thread(verify_batch, resp, start, self.chain_id, self.validators)
        except BadBatch as exc:
            self.book.misbehaved(peer, exc.reason, height=exc.height)
            todo.append(rng)
            return
        got = len(items)
        self.metrics.blocks.inc(got)
        self.metrics.bytes.inc(sum(n for _b, _c, n in items))
        done[start] = _Batch(peer, items)
        if start + got <= end:
            todo.append((start + got, end))

    def _everyone_pruned(self, connected: Sequence[bytes], nxt: int) -> bool:
        known = [self.book.get(p) for p in connected]
        return bool(known) and all(st.first is not None and st.first > nxt for st in known)

    async def _wait(self) -> None:
        await wait_for_answer(self.requests, self.wake)

    def _progress(self, height: int, target: int) -> None:
        ch = self.env.status
        ch.sync_progress = height
        ch.sync_target = target
        if height % 100 == 0 or height == target:
            self.log.info("sync_progress", height=height, target=target)
