"""Batched transaction gossip with de-duplication.

The mempool announces newly admitted txs; every `gossip_flush_interval` (or sooner when a batch is full)
the gossiper sends each connected peer one `txs` batch with the txs that peer is not known to have. A
peer is known to have a tx when we received it from them, sent it to them, or another peer told us it
sent the same batch to them (the batch's `also` list names the other peers the sender is sending it to
in the same flush). So in a full mesh a tx crosses each link once; in other topologies it is relayed.
A newly connected peer is offered the whole mempool once. Gossip is lossy under overload (a full
intake queue or mempool drops a batch), so txs still pending after a few seconds are re-offered, to the
current primary when `primary()` names it: an accepted tx always reaches a proposer. `run()` is the
component's task (flush, re-offer and intake loops as its children); an unexpected error in any of them
ends it, and with it the node (fail-stop): a node that silently stopped gossiping would look healthy.

Rule: bounded everywhere: pending announcements, the per-peer known set (LRU), the intake queue of
received batches (full -> the batch is dropped and counted), the batch size. Gossip is best effort:
a full send queue skips that peer for that batch; it never blocks consensus traffic.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog

from node.p2p.channel import OVERHEAD
from node.p2p.errors import P2PError
from node.p2p.node import P2P
from node.p2p.types import P2PSettings
from protocol.crypto import PUBLIC_KEY_SIZE
from protocol.messages import MAX_ALSO, MAX_TXS_PER_BATCH, T_TXS, Txs
from protocol.tx import SignedTx

# (gossip id, raw, excluded source peer or None, only-this-peer or None)
_Pending = tuple[bytes, bytes, bytes | None, bytes | None]


class TxSink(Protocol):
    """What the gossiper needs from the mempool."""

    async def add_many(self, raw_txs: list[bytes], source: bytes | None = None) -> Any: ...

    def set_gossip(self, callback: Any) -> None: ...

    def pending_raw(self, limit: int) -> list[bytes]: ...

    def stale_raw(self, older_than_s: float, limit: int) -> list[bytes]: ...


def gossip_id(raw: bytes) -> bytes:
    """Identity of a raw signed tx for de-duplication (the envelope is canonical, so this is stable)."""
    return hashlib.sha256(raw).digest()


class TxGossip:
    def __init__(self, p2p: P2P, mempool: TxSink, settings: P2PSettings | None = None, log: Any = None, *,
                 primary: Callable[[], bytes | None] | None = None) -> None:
        self.p2p = p2p
        self.mempool = mempool
        self.s = settings or p2p.settings
        self.stats = p2p.stats
        self.log = log if log is not None else structlog.get_logger("smeledger.gossip")
        self._known: dict[bytes, OrderedDict[bytes, None]] = {}
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._intake: asyncio.Queue[tuple[bytes, tuple[bytes, ...]]] = asyncio.Queue(self.s.gossip_intake_batches)
        self.primary = primary  # who proposes now (stale txs are re-offered there), when known
        # a batch must fit one frame: envelope, map keys and the `also` list take the rest
        room = p2p.settings.max_frame - OVERHEAD - 64 - MAX_ALSO * (PUBLIC_KEY_SIZE + 2)
        self._batch_bytes = max(1, min(self.s.gossip_batch_bytes, room))
        self._batch_txs = max(1, min(self.s.gossip_batch_txs, MAX_TXS_PER_BATCH))
        p2p.register(T_TXS, self._on_txs)
        p2p.add_peer_listener(self._on_peer)
        mempool.set_gossip(self.announce)

    async def run(self) -> None:
        """Flush, re-offer and admit received batches until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._flush_loop(), name="gossip-flush")
            tg.create_task(self._reoffer_loop(), name="gossip-reoffer")
            for i in range(self.s.gossip_intake_workers):
                tg.create_task(self._intake_loop(), name=f"gossip-intake-{i}")

    # ---- outbound --------------------------------------------------------------------------------

    def announce(self, txs: Sequence[SignedTx], source: bytes | None) -> None:
        """Called by the mempool with newly admitted txs; `source` is the peer they came from (or None)."""
        for tx in txs:
            self._add_pending(tx.raw, source, None)

    def _add_pending(self, raw: bytes, exclude: bytes | None, only: bytes | None) -> None:
        if len(self._pending) >= self.s.gossip_pending_txs:
            self.stats.gossip_dropped_txs += 1
            return
        self._pending.append((gossip_id(raw), raw, exclude, only))
        self._pending_bytes += len(raw)
        if len(self._pending) == 1 or self._pending_bytes >= self.s.gossip_batch_bytes:
            self._wake.set()

    def _known_set(self, peer: bytes) -> OrderedDict[bytes, None]:
        k = self._known.get(peer)
        if k is None:
            k = self._known[peer] = OrderedDict()
        return k

    def _mark(self, known: OrderedDict[bytes, None], ids: Sequence[bytes]) -> None:
        cap = self.s.gossip_known_per_peer
        for gid in ids:
            known[gid] = None
        while len(known) > cap:
            known.popitem(last=False)

    async def _reoffer_loop(self) -> None:
        while True:
            await asyncio.sleep(self.s.gossip_reoffer_interval)
            self.reoffer()

    def reoffer(self) -> int:
        """Queue txs pending longer than the re-offer age again, ignoring what peers are known to have."""
        raws = self.mempool.stale_raw(self.s.gossip_reoffer_age, self.s.gossip_reoffer_max)
        if not raws:
            return 0
        target = self.primary() if self.primary is not None else None
        if target == self.p2p.public_key:
            return 0  # we propose: our own pending txs reach a block without help
        peers = [target] if target is not None and self.p2p.is_connected(target) else self.p2p.connected()
        for p in peers:
            known = self._known_set(p)
            for raw in raws:
                known.pop(gossip_id(raw), None)
                self._add_pending(raw, None, p)
        self.stats.gossip_reoffered_txs += len(raws) * len(peers)
        return len(raws)

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            if self._pending_bytes < self.s.gossip_batch_bytes:
                await asyncio.sleep(self.s.gossip_flush_interval)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Send every pending tx to each connected peer not known to have it, in batches."""
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        peers = [p for p in self.p2p.connected()]
        if not pending or not peers:
            return
        known = {p: self._known_set(p) for p in peers}
        groups: dict[tuple[bytes, ...], list[tuple[bytes, bytes]]] = {}
        for gid, raw, exclude, only in pending:
            cands = (only,) if only is not None else peers
            targets = tuple(p for p in cands if p != exclude and p in known and gid not in known[p])
            if targets:
                groups.setdefault(targets, []).append((gid, raw))
        for targets, items in groups.items():
            for chunk in self._chunks(items):
                self._send_chunk(targets, chunk, known)

    def _chunks(self, items: list[tuple[bytes, bytes]]) -> list[list[tuple[bytes, bytes]]]:
        out: list[list[tuple[bytes, bytes]]] = []
        cur: list[tuple[bytes, bytes]] = []
        size = 0
        for item in items:
            cost = len(item[1]) + 5  # bin header
            if cur and (len(cur) >= self._batch_txs or size + cost > self._batch_bytes):
                out.append(cur)
                cur, size = [], 0
            cur.append(item)
            size += cost
        if cur:
            out.append(cur)
        return out

    def _send_chunk(self, targets: tuple[bytes, ...], chunk: list[tuple[bytes, bytes]],
                    known: dict[bytes, OrderedDict[bytes, None]]) -> None:
        nbytes = sum(len(r) for _, r in chunk) + 64 * len(chunk)
        sendable = [p for p in targets if self.p2p.has_room(p, nbytes)]
        raws = tuple(r for _, r in chunk)
        ids = [g for g, _ in chunk]
        for p in sendable:
            also = tuple(q for q in sendable if q != p)[:MAX_ALSO]  # naming fewer is always safe
            try:
                queued = self.p2p.send(p, T_TXS, Txs(txs=raws, also=also).to_value())
            except P2PError as exc:  # a single tx larger than the configured frame limit
                self.log.warning("gossip_batch_too_large", txs=len(raws), error=str(exc))
                return
            if queued:
                self._mark(known[p], ids)
                self.stats.gossip_batches_out += 1
                self.stats.gossip_txs_out += len(raws)

    # ---- inbound ---------------------------------------------------------------------------------

    def _on_txs(self, peer: bytes, body: Any) -> None:
        msg = Txs.from_value(body)  # ProtocolError closes the connection
        if not msg.txs:
            return
        ids = [gossip_id(r) for r in msg.txs]
        self._mark(self._known_set(peer), ids)
        for q in msg.also:
            if q != self.p2p.public_key and self.p2p.is_connected(q):
                self._mark(self._known_set(q), ids)
        self.stats.gossip_batches_in += 1
        self.stats.gossip_txs_in += len(msg.txs)
        try:
            self._intake.put_nowait((peer, msg.txs))
        except asyncio.QueueFull:
            self.stats.gossip_dropped_batches += 1

    async def _intake_loop(self) -> None:
        while True:
            peer, raws = await self._intake.get()
            await self.mempool.add_many(list(raws), source=peer)

    def _on_peer(self, peer: bytes, connected: bool) -> None:
        if not connected:
            self._known.pop(peer, None)
            return
        self._known[peer] = OrderedDict()
        for raw in self.mempool.pending_raw(self.s.gossip_pending_txs // 2):
            self._add_pending(raw, None, peer)
