"""History backfill: a node that joined by state sync at height H fetches blocks H, H-1, ..., 1 with their
receipts and events from its peers, verifies them BACK along the hash chain, and stores them below its
history, until it holds everything from genesis on (docs/sync.md, "History backfill").

The anchor is the highest height h not yet in history (`history_from - 1`) with what is certified about
it: its hash, named by the stored (certified) block h+1 as its parent, or, while nothing was committed
since the snapshot, the head hash the snapshot's commit certificate names; and the results roots of h
and h-1 (a header carries the state and results roots of the height two below it): recorded when the
snapshot was installed (its certified state holds them, `m/results`) or taken from the verified headers
of the blocks two above. Going down, each block must have exactly the expected hash and a valid commit
certificate, and the Merkle root over the receipts and events served for it must be the expected
results root; its own header then names its parent's hash and the roots of the height two below. Blocks come by `sync_req` and results by
`res_req` (paged: a block's receipts may span several answers), in ranges of `history_batch_blocks`,
one request in flight per peer; a piece that fails a check penalises the peer(s) that sent it and is
asked for again elsewhere. Verified heights are written by `storage.history.add_history` on the store's
execution thread, the one that writes blocks (so never racing a commit), together with the lowered
`history_from`. At height 1 the genesis events
are rebuilt from the genesis file and history is complete (`history_from` 0).

Rule: backfill never touches the head, the state or consensus; it only adds verified old history.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from node.chain import ChainHead
from node.sync.blocks import decode_certificate
from node.sync.common import (
    PeerBook,
    Requests,
    SyncEnv,
    SyncMetrics,
    SyncSettings,
    release_all,
    wait_for_answer,
)
from protocol.block import Block, state_root_height
from protocol.consensus.certs import plain_verifier
from protocol.errors import ProtocolError
from protocol.ledger.results import index_entries
from protocol.messages import T_RES_REQ, T_SYNC_REQ
from protocol.results import results_root
from protocol.syncmsg import (
    MAX_SYNC_BLOCKS,
    STATUS_BUSY,
    STATUS_OK,
    ResultsRequest,
    ResultsResponse,
    SyncRequest,
    SyncResponse,
)
from storage import schema
from storage.blocks import BlockStore
from storage.errors import DatabaseCorrupt, HeightMismatch
from storage.history import HistoryBlock, add_history

Entry = tuple[bytes, bytes]
RID_BASE = 1 << 62  # history requests answer as sync_resp too: their rids never meet block sync's
MAX_RETRY_S = 30.0

DONE, STALLED, RESTART = "done", "stalled", "restart"


@dataclass(frozen=True, slots=True)
class Anchor:
    height: int  # the highest height not yet in history
    block_hash: bytes  # its certified hash
    results: dict[int, bytes]  # certified results roots of `height` and `height - 1` (none below 0)


def anchor_of(blocks: BlockStore, head: ChainHead) -> Anchor | None:
    """Where backfill goes on (reader thread): None when history is complete."""
    hf = blocks.history_from()
    if hf == 0:
        return None
    above = blocks.get_block(hf) if hf <= head.height else None
    if above is not None:
        block_hash = above.header.parent
    elif hf == head.height + 1:
        block_hash = head.block_hash
    else:
        raise DatabaseCorrupt(f"history starts at {hf} but block {hf} is missing (head {head.height})",
                              key=schema.block_key(hf), path=blocks.db.path)
    results: dict[int, bytes] = {}
    for k in (hf - 1, hf - 2):
        if k >= 0:
            root = blocks.results_root_at(k)
            if root is None:  # a snapshot install or the block two above recorded it
                raise DatabaseCorrupt(f"history starts at {hf} but the results root of height {k} is missing",
                                      key=schema.results_root_at_key(k), path=blocks.db.path)
            results[k] = root
    return Anchor(hf - 1, block_hash, results)


@dataclass
class _Results:
    receipts: list[bytes]
    events: bytes
    total: int
    peers: set[bytes] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        return len(self.receipts) == self.total


@dataclass(frozen=True, slots=True)
class Verified:
    blocks: list[HistoryBlock]
    index: list[Entry]
    roots: dict[int, tuple[bytes, bytes]]  # (state root, results root) the verified headers carry
    anchor: Anchor  # what is certified about the height below the last verified one
    failure: tuple[str, int, str] | None  # (piece "block" | "results", height, reason)


def verify_run(run: Sequence[tuple[bytes, bytes, tuple[bytes, ...], bytes]], anchor: Anchor, chain_id: str,
               validators: Sequence[bytes]) -> Verified:
    """Check consecutive heights anchor.height, anchor.height-1, ... (block, certificate, receipts,
    events each) top-down; stops at the first failure and says which piece failed. A header carries the
    state and results roots of the height two below it, so each verified block certifies what that
    height's results must be."""
    verifier = plain_verifier(validators)
    out: list[HistoryBlock] = []
    index: list[Entry] = []
    roots: dict[int, tuple[bytes, bytes]] = {}
    known = dict(anchor.results)
    h, expect = anchor.height, anchor.block_hash

    def stop(piece: str, reason: str) -> Verified:
        return Verified(out, index, roots, Anchor(h, expect, {k: known[k] for k in (h, h - 1) if k in known}),
                        (piece, h, reason))

    for raw, raw_cert, receipts, events in run:
        try:
            block = Block.decode(raw)
            cert = decode_certificate(raw_cert)
        except ProtocolError:
            return stop("block", "undecodable_block")
        if block.height != h or block.header.chain != chain_id or block.hash != expect:
            return stop("block", "not_chained")
        if cert.height != h or cert.block_hash != block.hash or not cert.verify(validators, chain_id, verifier):
            return stop("block", "bad_certificate")
        if len(receipts) != len(block.txs) or results_root(receipts, events) != known[h]:
            return stop("results", "bad_results")
        try:
            entries = index_entries(h, receipts, events)
        except ProtocolError:  # certified yet unreadable: the chain's own results are malformed
            return stop("results", "bad_results")
        out.append(HistoryBlock(block, raw, raw_cert, receipts, events))
        index.extend(entries)
        base = state_root_height(h)
        if h >= 2:  # blocks 1 and 2 both carry the genesis roots: take them from block 2
            roots[base] = (block.header.state_root, block.header.results_root)
            known[base] = block.header.results_root
        h, expect = h - 1, block.header.parent
    return Verified(out, index, roots, Anchor(h, expect, {k: known[k] for k in (h, h - 1) if k in known}), None)


class HistoryBackfill:
    """Fills history downward while the node runs; `wake()` after a state sync installed a snapshot."""

    def __init__(self, env: SyncEnv, settings: SyncSettings, metrics: SyncMetrics, log: Any,
                 genesis_index: Callable[[], Sequence[Entry]]) -> None:
        self.env, self.s, self.metrics, self.log = env, settings, metrics, log
        self.genesis_index = genesis_index
        self._wake = asyncio.Event()
        self._restart = False  # a snapshot was installed: history restarts above the round's anchor
        self.book = PeerBook(settings, metrics, log)
        self.requests = Requests(on_answer=self._wake.set, rid_base=RID_BASE)
        self.validators = list(env.validators)

    def wake(self) -> None:
        """History moved (a state sync installed a snapshot): start again from the new anchor."""
        self._restart = True
        self._wake.set()

    def on_blocks(self, peer: bytes, resp: SyncResponse) -> bool:
        return self.requests.answer(peer, resp.rid, resp)

    def on_results(self, peer: bytes, resp: ResultsResponse) -> bool:
        return self.requests.answer(peer, resp.rid, resp)

    # ---- the loop ------------------------------------------------------------------------------------

    async def run(self) -> None:
        store, st = self.env.store, self.env.status
        delay = self.s.retry_interval
        while True:
            anchor = await store.read(anchor_of, store.blocks, store.head)
            st.history_from = 0 if anchor is None else anchor.height + 1
            st.backfilling = anchor is not None
            if anchor is None:
                await self._wake.wait()
                self._wake.clear()
                continue
            self._restart = False
            self.log.info("history_backfill_started", history_from=anchor.height + 1)
            result = await self._round(anchor)
            after = await store.read(anchor_of, store.blocks, store.head)
            if after is None:
                self.log.info("history_backfill_finished", blocks=anchor.height)
                continue
            delay = self.s.retry_interval if after.height < anchor.height else min(delay * 2, MAX_RETRY_S)
            self.log.info("history_backfill_retry_scheduled", result=result, history_from=after.height + 1,
                          delay_s=delay)
            await asyncio.sleep(delay)

    async def _round(self, anchor: Anchor) -> str:
        s = self.s
        want_blocks: list[tuple[int, int]] = []  # (lo, hi) not yet asked for
        want_results: list[tuple[int, int, int]] = []  # (lo, hi, first receipt of lo)
        blocks: dict[int, tuple[bytes, bytes, bytes]] = {}  # height -> (block, certificate, peer)
        results: dict[int, _Results] = {}
        frontier = anchor.height  # heights at or below it are not planned yet
        last_progress = time.monotonic()
        try:
            while anchor.height >= 1:
                if self._restart:
                    return RESTART
                low = max(1, anchor.height - s.history_batch_blocks * s.history_parallel * 2 + 1)
                while frontier >= low:
                    lo = max(low, frontier - s.history_batch_blocks + 1)
                    want_blocks.append((lo, frontier))
                    want_results.append((lo, frontier, 0))
                    frontier = lo - 1
                buffered = sum(len(b) for b, _c, _p in blocks.values()) + \
                    sum(len(r) for part in results.values() for r in part.receipts)
                self._assign(want_blocks, want_results, anchor.height, buffered)
                run: list[tuple[bytes, bytes, tuple[bytes, ...], bytes]] = []
                h = anchor.height
                while h >= 1 and h in blocks and h in results and results[h].complete:
                    run.append((blocks[h][0], blocks[h][1], tuple(results[h].receipts), results[h].events))
                    h -= 1
                if run:
                    settled = await self._settle(run, anchor, blocks, results, want_blocks, want_results)
                    if settled is None:
                        return RESTART
                    anchor, last_progress = settled, time.monotonic()
                    continue
                if time.monotonic() - last_progress > s.stall_timeout:
                    return STALLED
                await wait_for_answer(self.requests, self._wake)
                for _rid, pend in self.requests.take_done():
                    self.book.get(pend.peer).busy = False
                    if self._on_answer(pend.peer, pend.what, pend.result, blocks, results, want_blocks,
                                       want_results):
                        last_progress = time.monotonic()
                for _rid, pend in self.requests.take_expired():
                    self.book.get(pend.peer).busy = False
                    self.book.back_off(pend.peer, "timeout")
                    self._requeue(pend.what, want_blocks, want_results)
        finally:
            release_all(self.requests, self.book)
        entries = await asyncio.to_thread(self.genesis_index)
        try:
            await self.env.store.execute(add_history, self.env.store.blocks, [], entries, {}, 0)
        except HeightMismatch:
            return RESTART
        self.env.status.history_from = 0
        return DONE

    async def _settle(self, run: list[tuple[bytes, bytes, tuple[bytes, ...], bytes]], anchor: Anchor,
                      blocks: dict[int, tuple[bytes, bytes, bytes]], results: dict[int, _Results],
                      want_blocks: list[tuple[int, int]], want_results: list[tuple[int, int, int]]) -> Anchor | None:
        """Verify a run of complete heights from the anchor down, store what passed, re-ask what failed.
        None: the stored history moved meanwhile (a snapshot was installed), the round starts over."""
        v = await asyncio.to_thread(verify_run, run, anchor, self.env.chain_id, self.validators)
        if v.blocks:
            store = self.env.store
            try:
                await store.execute(add_history, store.blocks, v.blocks, v.index, v.roots, v.anchor.height + 1)
            except HeightMismatch:
                return None
            for hb in v.blocks:
                blocks.pop(hb.block.height, None)
                results.pop(hb.block.height, None)
            self.metrics.history.inc(len(v.blocks))
            self.env.status.history_from = v.anchor.height + 1
            if v.anchor.height // 1000 != anchor.height // 1000 or v.anchor.height == 0:
                self.log.info("history_backfill_progress", history_from=v.anchor.height + 1)
        if v.failure is not None:
            piece, h, reason = v.failure
            if piece == "block":
                _raw, _cert, peer = blocks.pop(h)
                self.book.misbehaved(peer, reason, height=h)
                want_blocks.append((h, h))
            else:
                part = results.pop(h)
                for peer in sorted(part.peers):
                    self.book.misbehaved(peer, reason, height=h)
                want_results.append((h, h, 0))
        return v.anchor

    # ---- requests and answers ------------------------------------------------------------------------

    def _assign(self, want_blocks: list[tuple[int, int]], want_results: list[tuple[int, int, int]], top: int,
                buffered: int) -> None:
        """Give each idle peer the wanted range nearest the anchor it can serve (one request per peer)."""
        p2p = self.env.p2p
        full = buffered + len(self.requests.open) * self.s.max_response_bytes > self.s.history_buffer_bytes
        for peer in self.book.idle(p2p.connected()):
            choices = [(hi, 1, i) for i, (lo, hi) in enumerate(want_blocks) if self.book.can_serve(peer, lo)]
            choices += [(hi, 0, i) for i, (lo, hi, _r) in enumerate(want_results) if self.book.can_serve(peer, lo)]
            choices = [c for c in choices if c[0] == top or not full]
            if not choices:
                continue
            _hi, is_blocks, i = max(choices)  # nearest the anchor first; of one range, its blocks first
            kind = 0 if is_blocks else 1
            what: tuple[Any, ...] = ("blocks", *want_blocks.pop(i)) if kind == 0 else ("results", *want_results.pop(i))
            lo, hi = what[1], what[2]
            count = min(hi - lo + 1, MAX_SYNC_BLOCKS)
            rid = self.requests.add(peer, what, self.s.request_timeout)
            if kind == 0:
                sent = p2p.send(peer, T_SYNC_REQ, SyncRequest(rid, lo, count).to_value())
            else:
                sent = p2p.send(peer, T_RES_REQ, ResultsRequest(rid, lo, count, what[3]).to_value())
            if not sent:
                self.requests.drop(rid)
                self.book.back_off(peer, "send_failed")
                self._requeue(what, want_blocks, want_results)
                continue
            self.book.get(peer).busy = True

    @staticmethod
    def _requeue(what: tuple[Any, ...], want_blocks: list[tuple[int, int]],
                 want_results: list[tuple[int, int, int]]) -> None:
        if what[0] == "blocks":
            want_blocks.append((what[1], what[2]))
        else:
            want_results.append((what[1], what[2], what[3]))

    def _on_answer(self, peer: bytes, what: tuple[Any, ...], resp: Any, blocks: dict[int, tuple[bytes, bytes, bytes]],
                   results: dict[int, _Results], want_blocks: list[tuple[int, int]],
                   want_results: list[tuple[int, int, int]]) -> bool:
        """Keep what an answer carries; requeue what it does not. True when it carried something."""
        if resp.status == STATUS_BUSY:
            self.book.back_off(peer, "busy")
            self._requeue(what, want_blocks, want_results)
            return False
        self.book.report(peer, resp.height, resp.first)
        if resp.status != STATUS_OK:
            self._requeue(what, want_blocks, want_results)
            return False
        if what[0] == "blocks":
            _k, lo, hi = what
            if not isinstance(resp, SyncResponse) or resp.start != lo or len(resp.blocks) > hi - lo + 1:
                self.book.misbehaved(peer, "wrong_range", height=lo)
                self._requeue(what, want_blocks, want_results)
                return False
            for i, (raw, cert) in enumerate(resp.blocks):
                blocks[lo + i] = (raw, cert, peer)
            if lo + len(resp.blocks) <= hi:
                want_blocks.append((lo + len(resp.blocks), hi))
            return True
        _k, lo, hi, receipt = what
        if not isinstance(resp, ResultsResponse) or resp.start != lo or resp.receipt != receipt \
                or len(resp.results) > hi - lo + 1:
            self.book.misbehaved(peer, "wrong_range", height=lo)
            self._requeue(what, want_blocks, want_results)
            return False
        h, skip = lo, receipt
        for entry in resp.results:
            part = results.get(h)
            if skip == 0 or part is None or len(part.receipts) != skip or part.total != entry.total:
                if skip != 0:  # a continuation that does not fit what came before: start this block over
                    want_results.append((h, hi, 0))
                    results.pop(h, None)
                    return True
                part = results[h] = _Results([], entry.events, entry.total)
            part.receipts.extend(entry.receipts)
            part.peers.add(peer)
            if len(part.receipts) > part.total:
                self.book.misbehaved(peer, "wrong_range", height=h)
                results.pop(h)
                want_results.append((h, hi, 0))
                return False
            if not part.complete:
                want_results.append((h, hi, len(part.receipts)))
                return True
            h, skip = h + 1, 0
        if h <= hi:
            want_results.append((h, hi, 0))
        return True
