"""The mempool: admission of signed txs, bounded pending queues in per-sender nonce order.

Admission decodes strictly (`SignedTx.from_wire`), then checks size, chain id, duplicates (pending and
recently committed), the sender's nonce window relative to its committed next nonce, the bounds, and
last the signature: verified once, in batches, on a small thread pool, and cached (node/sigcheck.py).
Admitted txs go to the gossiper.

Ready work: a tx is *ready* when it and every tx before it from the same sender can execute next (its
nonce is the sender's committed next nonce, or follows a ready tx). The pool keeps the ready count and
bytes exact on every change; consensus is told only of those (`ready_txs`), so a tx waiting behind a nonce
gap is neither work nor a reason for view timers.

Rule: every collection is bounded (`MempoolLimits`); a full pool answers `mempool_full` (the API turns
it into 503 + Retry-After) and never grows. The pool only reads account nonces through the supplied
callable and never executes txs. Event-loop only: the executor sees plain tuples, never the pool's state.

Nothing accepted just disappears: every way a tx leaves the pool tells the removal listeners why, in one
call per group: `committed` (it is in a block: its receipt says committed or failed), `nonce_used` (another
tx of the same sender and nonce was committed: `remove_committed` after a block, `resync_nonces` after a
snapshot), `expired` (pending longer than `ttl_s`, e.g. behind a nonce gap nobody filled). The accepted-tx
journal (node/acceptance.py) keeps those reasons as each tx's final status.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from itertools import count, islice

from node.p2p.metrics import MempoolCollector, MempoolStats
from node.sigcheck import SigChecks
from protocol.errors import ProtocolError
from protocol.tx import MAX_TX_BYTES, SignedTx

GossipCallback = Callable[[list[SignedTx], bytes | None], None]
ChangeListener = Callable[[int, int], None]  # (pending txs, pending bytes) after a change
RemovalListener = Callable[[Sequence[SignedTx], str], None]  # (txs that left the pool, why)

ACCEPTED = "accepted"
COMMITTED = "committed"  # removal: the tx is in a committed block
NONCE_USED = "nonce_used"  # removal: another tx with the same sender and nonce was committed
EXPIRED = "expired"  # removal: pending longer than ttl_s


@dataclass(frozen=True, slots=True)
class MempoolLimits:
    max_txs: int = 50_000
    max_bytes: int = 64 * 1024 * 1024
    per_sender_max: int = 512
    nonce_window: int = 1024  # admit nonces in [committed_next, committed_next + nonce_window)
    max_tx_bytes: int = MAX_TX_BYTES
    max_batch: int = 10_000  # raw txs per add_many call
    recent_committed: int = 200_000  # LRU of committed hashes rejected as duplicates
    ttl_s: float = 900.0  # a tx pending this long (e.g. behind a nonce gap) is dropped
    verified_cache: int = 200_000  # LRU of (hash -> signature) already verified
    verify_chunk: int = 256  # signatures per executor job


@dataclass(frozen=True, slots=True)
class Room:
    """A caller's own bound on one batch (the journal's free room): candidates past it are refused with
    `code`, checked after the pool's own checks, so `mempool_full` still wins when both are full."""

    txs: int
    bytes: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class AdmitResult:
    hash: bytes | None  # None when the bytes did not decode
    accepted: bool
    code: str  # "accepted" or a stable rejection code
    message: str = ""
    tx: SignedTx | None = None  # the admitted tx, when accepted

    @property
    def hash_hex(self) -> str | None:
        return self.hash.hex() if self.hash is not None else None


@dataclass(slots=True)
class _Sender:
    next_nonce: int  # committed next nonce, as last learned
    txs: dict[int, SignedTx] = field(default_factory=dict)
    ready: int = 0  # txs at next_nonce, next_nonce + 1, ... without a gap
    ready_bytes: int = 0


class Mempool:
    def __init__(self, chain_id: str, account_nonce: Callable[[bytes], int], *,
                 limits: MempoolLimits | None = None, verify_executor: Executor | None = None,
                 gossip: GossipCallback | None = None,
                 sender_check: Callable[[SignedTx], tuple[str, str] | None] | None = None) -> None:
        """`sender_check(tx)` returns (code, message) when the ledger would certainly fail the tx
        (unknown kind, unregistered or frozen sender, forbidden role, a body failing its kind's static
        checks): such txs are rejected here with the block's code and never cost a nonce."""
        self.chain_id = chain_id
        self._sender_check = sender_check
        self.limits = limits or MempoolLimits()
        self._account_nonce = account_nonce
        self._gossip = gossip
        self._by_hash: dict[bytes, SignedTx] = {}  # insertion order = arrival order
        self._by_raw: dict[bytes, SignedTx] = {}  # the same txs by their wire bytes (shared objects)
        self._arrival: dict[bytes, tuple[int, float]] = {}  # hash -> (sequence, monotonic admission time)
        self._clock: Callable[[], float] = time.monotonic
        self._next_prune = 0.0
        self._seq = count()
        self._senders: dict[bytes, _Sender] = {}
        self._bytes = 0
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self.stats = MempoolStats()
        self._sigs = SigChecks(self.stats, chunk=self.limits.verify_chunk, cache_size=self.limits.verified_cache,
                               executor=verify_executor)
        self._change_listeners: list[ChangeListener] = []
        self._removal_listeners: list[RemovalListener] = []
        self._ready_txs = 0
        self._ready_bytes = 0

    # ---- wiring ----------------------------------------------------------------------------------

    def set_gossip(self, callback: GossipCallback | None) -> None:
        self._gossip = callback

    def add_change_listener(self, listener: ChangeListener) -> None:
        """`listener(txs, bytes)` runs after every admission, removal or expiry that changed the pool
        (e.g. the consensus driver feeds WorkPending from it). It must not call back into the pool."""
        self._change_listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._change_listeners:
            listener(len(self._by_hash), self._bytes)

    def add_removal_listener(self, listener: RemovalListener) -> None:
        """`listener(txs, reason)` runs whenever txs leave the pool (see the module docstring for the
        reasons). It must not call back into the pool."""
        self._removal_listeners.append(listener)

    def _removed(self, txs: Sequence[SignedTx], reason: str) -> None:
        if txs:
            for listener in self._removal_listeners:
                listener(txs, reason)

    async def run(self) -> None:
        """The pool's component task: expires old txs once a second even when nothing arrives, and
        releases the verification threads when the node stops."""
        try:
            while True:
                await asyncio.sleep(1.0)
                self.prune_expired()
        finally:
            self.close()

    def collector(self) -> MempoolCollector:
        return MempoolCollector(self.stats, lambda: (len(self._by_hash), self._bytes))

    def close(self) -> None:
        self._sigs.close()

    # ---- queries ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_hash)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def ready_txs(self) -> int:
        """Pending txs that can execute next (see the module docstring)."""
        return self._ready_txs

    @property
    def ready_bytes(self) -> int:
        return self._ready_bytes

    def get(self, tx_hash: bytes) -> SignedTx | None:
        return self._by_hash.get(tx_hash)

    def status(self, tx_hash: bytes) -> str | None:
        return "pending" if tx_hash in self._by_hash else None

    def is_verified(self, tx_hash: bytes, sig: bytes) -> bool:
        """True when this exact (body hash, signature) pair was verified before; skip re-verifying it."""
        tx = self._by_hash.get(tx_hash)
        if tx is not None and tx.sig == sig:
            return True
        return self._sigs.known(tx_hash, sig)

    def arrived_at(self, tx_hash: bytes) -> float:
        """When a pending tx was admitted here (the pool's monotonic clock)."""
        return self._arrival[tx_hash][1]

    def by_raw(self, raw: bytes) -> SignedTx | None:
        """The pending, already verified tx with exactly these wire bytes (a proposed block's txs are
        looked up here so they are not decoded or verified a second time)."""
        return self._by_raw.get(raw)

    def stale_raw(self, older_than_s: float, limit: int) -> list[bytes]:
        """Raw bytes of up to `limit` txs pending for longer than `older_than_s`, oldest first."""
        cutoff = self._clock() - older_than_s
        out: list[bytes] = []
        for h, (_seq, t) in self._arrival.items():
            if t > cutoff or len(out) >= limit:
                break
            out.append(self._by_hash[h].raw)
        return out

    def pending_raw(self, limit: int) -> list[bytes]:
        """Raw bytes of up to `limit` pending txs, oldest first (offered to a newly connected peer)."""
        return [tx.raw for tx in islice(self._by_hash.values(), limit)]

    # ---- admission -------------------------------------------------------------------------------

    async def add_many(self, raw_txs: Sequence[bytes], source: bytes | None = None, *,
                       announce: bool = True, room: Room | None = None) -> list[AdmitResult]:
        """Admit a batch; one result per input, in order. `source` is the peer key, or None for clients.
        With `announce=False` the admitted txs are not gossiped: the caller calls `announce` once they
        are durable (the API's intake journals them first). `room` bounds what this batch may add."""
        lim = self.limits
        if len(raw_txs) > lim.max_batch:
            return [self._reject(None, "batch_too_large", f"at most {lim.max_batch} txs per batch")
                    for _ in raw_txs]
        self.prune_expired()
        if source is None and (len(self._by_hash) >= lim.max_txs or self._bytes >= lim.max_bytes):
            # backpressure before any decoding: a full pool answers clients at once (API: 503)
            return [self._reject(None, "mempool_full", "mempool is full; retry later") for _ in raw_txs]
        results: list[AdmitResult | None] = [None] * len(raw_txs)
        cands: list[tuple[int, SignedTx]] = []
        batch_hashes: set[bytes] = set()
        batch_nonces: set[tuple[bytes, int]] = set()
        per_sender: dict[bytes, int] = {}
        proj_n, proj_b = len(self._by_hash), self._bytes
        verification = self._sigs.batch()  # signature jobs start while later txs are still decoded
        memo: dict[bytes, int] = {}  # account nonces read once per sender per batch
        for i, raw in enumerate(raw_txs):
            r = self._precheck(raw, batch_hashes, batch_nonces, per_sender, proj_n, proj_b, memo)
            if isinstance(r, AdmitResult):
                results[i] = r
                continue
            if room is not None and (len(cands) >= room.txs or proj_b - self._bytes + len(raw) > room.bytes):
                results[i] = self._reject(r.hash, room.code, room.message)
                continue
            cands.append((i, r))
            verification.add(r)
            batch_hashes.add(r.hash)
            batch_nonces.add((r.sender, r.nonce))
            per_sender[r.sender] = per_sender.get(r.sender, 0) + 1
            proj_n += 1
            proj_b += len(r.raw)

        ok = await verification.results()
        admitted: list[SignedTx] = []
        for (i, tx), good in zip(cands, ok, strict=True):
            if not good:
                results[i] = self._reject(tx.hash, "bad_signature", "signature does not verify")
                continue
            res = self._insert(tx)
            results[i] = res
            if res.accepted:
                admitted.append(tx)
        if admitted:
            if announce:
                self.announce(admitted, source)
            self._changed()
        return [r for r in results if r is not None]

    def announce(self, txs: list[SignedTx], source: bytes | None = None) -> None:
        """Hand admitted txs to the gossiper."""
        if self._gossip is not None:
            self._gossip(txs, source)

    def _reject(self, tx_hash: bytes | None, code: str, message: str) -> AdmitResult:
        self.stats.rejected[code] += 1
        return AdmitResult(tx_hash, False, code, message)

    def _committed_next(self, sender: bytes, memo: dict[bytes, int]) -> int:
        s = self._senders.get(sender)
        if s is not None:
            return s.next_nonce
        n = memo.get(sender)
        if n is None:
            n = memo[sender] = self._account_nonce(sender)
        return n

    def _precheck(self, raw: bytes, batch_hashes: set[bytes], batch_nonces: set[tuple[bytes, int]],
                  per_sender: dict[bytes, int], proj_n: int, proj_b: int,
                  memo: dict[bytes, int]) -> AdmitResult | SignedTx:
        lim = self.limits
        if len(raw) > lim.max_tx_bytes:
            return self._reject(None, "too_large", f"tx of {len(raw)} bytes exceeds {lim.max_tx_bytes}")
        known = self._by_raw.get(raw)
        if known is not None:  # a re-offered or re-submitted pending tx: no need to decode it again
            return self._reject(known.hash, "duplicate", "tx is already pending")
        try:
            tx = SignedTx.from_wire(raw)
        except ProtocolError as exc:
            return self._reject(None, exc.code, exc.message)
        h = tx.hash
        if tx.chain != self.chain_id:
            return self._reject(h, "wrong_chain", f"tx is for chain '{tx.chain}'")
        if h in self._by_hash or h in batch_hashes:
            return self._reject(h, "duplicate", "tx is already pending")
        if h in self._recent:
            return self._reject(h, "already_committed", "tx was committed recently")
        if self._sender_check is not None:
            bad = self._sender_check(tx)
            if bad is not None:
                return self._reject(h, bad[0], bad[1])
        nxt = self._committed_next(tx.sender, memo)
        if tx.nonce < nxt:
            return self._reject(h, "nonce_too_low", f"nonce {tx.nonce} is below the next nonce {nxt}")
        if tx.nonce >= nxt + lim.nonce_window:
            return self._reject(h, "nonce_too_high", f"nonce {tx.nonce} is beyond the window {nxt}+{lim.nonce_window}")
        s = self._senders.get(tx.sender)
        if (s is not None and tx.nonce in s.txs) or (tx.sender, tx.nonce) in batch_nonces:
            return self._reject(h, "nonce_conflict", f"another tx with nonce {tx.nonce} is pending")
        held = (len(s.txs) if s is not None else 0) + per_sender.get(tx.sender, 0)
        if held >= lim.per_sender_max:
            return self._reject(h, "sender_limit", f"sender has {lim.per_sender_max} pending txs")
        if proj_n >= lim.max_txs or proj_b + len(raw) > lim.max_bytes:
            return self._reject(h, "mempool_full", "mempool is full; retry later")
        return tx

    async def verify_txs(self, txs: Sequence[SignedTx]) -> list[bool]:
        """Verify signatures not seen before (e.g. a proposed block's txs); cached like admission."""
        return await self._sigs.verify(list(txs))

    def _insert(self, tx: SignedTx) -> AdmitResult:
        """Re-check what may have changed while verifying, then add."""
        lim = self.limits
        h = tx.hash
        if h in self._by_hash:
            return self._reject(h, "duplicate", "tx is already pending")
        if h in self._recent:
            return self._reject(h, "already_committed", "tx was committed recently")
        s = self._senders.get(tx.sender)
        if s is None:
            s = _Sender(next_nonce=self._account_nonce(tx.sender))
        if tx.nonce < s.next_nonce:
            return self._reject(h, "nonce_too_low", f"nonce {tx.nonce} is below the next nonce {s.next_nonce}")
        if tx.nonce in s.txs:
            return self._reject(h, "nonce_conflict", f"another tx with nonce {tx.nonce} is pending")
        if len(s.txs) >= lim.per_sender_max:
            return self._reject(h, "sender_limit", f"sender has {lim.per_sender_max} pending txs")
        if len(self._by_hash) >= lim.max_txs or self._bytes + len(tx.raw) > lim.max_bytes:
            return self._reject(h, "mempool_full", "mempool is full; retry later")
        self._senders[tx.sender] = s
        s.txs[tx.nonce] = tx
        self._by_hash[h] = tx
        self._by_raw[tx.raw] = tx
        self._arrival[h] = (next(self._seq), self._clock())
        self._bytes += len(tx.raw)
        if tx.nonce == s.next_nonce + s.ready:
            self._extend_ready(s)
        self.stats.admitted += 1
        return AdmitResult(h, True, ACCEPTED, "", tx)

    # ---- proposer side ---------------------------------------------------------------------------

    def take_batch(self, max_txs: int, max_bytes: int, skip: Collection[bytes] = ()) -> list[SignedTx]:
        """Ready txs (consecutive nonces from each sender's committed next nonce) in nonce order per
        sender, one per sender per round; senders ordered by the arrival of their first ready tx.
        Nothing is removed. Hashes in `skip` (e.g. already proposed) count as included but are not
        returned, so the sender's later nonces can follow them."""
        heads: list[tuple[int, bytes]] = []
        for sender, s in self._senders.items():
            first = s.txs.get(s.next_nonce)
            if first is not None:
                heads.append((self._arrival[first.hash][0], sender))
        heads.sort()
        cursors = {sender: self._senders[sender].next_nonce for _, sender in heads}
        active = [sender for _, sender in heads]
        out: list[SignedTx] = []
        size = 0
        while active and len(out) < max_txs:
            still: list[bytes] = []
            for sender in active:
                if len(out) >= max_txs:
                    break
                txs = self._senders[sender].txs
                n = cursors[sender]
                tx = txs.get(n)
                while tx is not None and tx.hash in skip:
                    n += 1
                    tx = txs.get(n)
                if tx is None or size + len(tx.raw) > max_bytes:
                    continue
                out.append(tx)
                size += len(tx.raw)
                cursors[sender] = n + 1
                still.append(sender)
            active = still
        return out

    def remove_committed(self, committed: Iterable[SignedTx | bytes],
                         account_nonces: Mapping[bytes, int] | None = None) -> int:
        """Drop committed txs (SignedTx or hashes) and every pending tx whose nonce is now stale.
        Each committed tx advances its sender's next nonce past it (failed txs consume a nonce too);
        `account_nonces` (sender -> next nonce from the ledger) overrides. Returns how many were removed."""
        ready_before = (self._ready_txs, self._ready_bytes)
        touched: dict[bytes, int] = {}
        gone: list[SignedTx] = []
        stale_txs: list[SignedTx] = []
        for item in committed:
            h = item.hash if isinstance(item, SignedTx) else item
            if len(h) != 32:
                raise ValueError("remove_committed takes SignedTx or 32-byte tx hashes, not raw txs")
            self._recent[h] = None
            tx = self._by_hash.get(h)
            if tx is not None:
                self._drop(tx)
                gone.append(tx)
                self.stats.committed += 1
            ref = tx if tx is not None else (item if isinstance(item, SignedTx) else None)
            if ref is not None:
                touched[ref.sender] = max(touched.get(ref.sender, 0), ref.nonce + 1)
        while len(self._recent) > self.limits.recent_committed:
            self._recent.popitem(last=False)
        for sender, n in (account_nonces or {}).items():
            touched[sender] = n
        for sender, n in touched.items():
            s = self._senders.get(sender)
            if s is None:
                continue
            s.next_nonce = max(s.next_nonce, n) if account_nonces is None or sender not in account_nonces else n
            for stale in [tx for nonce, tx in s.txs.items() if nonce < s.next_nonce]:
                self._drop(stale)
                stale_txs.append(stale)
                self.stats.evicted_stale += 1  # _drop forgets the sender once it has no txs left
            self._recount(sender)
        self._removed(gone, COMMITTED)
        self._removed(stale_txs, NONCE_USED)
        if gone or stale_txs or (self._ready_txs, self._ready_bytes) != ready_before:
            self._changed()  # also when only the ready run moved: a tx a block's nonces made ready is work
        return len(gone) + len(stale_txs)

    def resync_nonces(self) -> int:
        """Re-read every pending sender's committed next nonce (after a state sync replaced the state under
        the pool): txs below it are dropped as `nonce_used`, ready runs recounted. Returns how many were
        removed."""
        ready_before = (self._ready_txs, self._ready_bytes)
        removed: list[SignedTx] = []
        for sender in list(self._senders):
            s = self._senders[sender]
            s.next_nonce = self._account_nonce(sender)
            for stale in [tx for nonce, tx in s.txs.items() if nonce < s.next_nonce]:
                self._drop(stale)
                removed.append(stale)
                self.stats.evicted_stale += 1
            self._recount(sender)
        self._removed(removed, NONCE_USED)
        if removed or (self._ready_txs, self._ready_bytes) != ready_before:
            self._changed()
        return len(removed)

    def prune_expired(self, *, force: bool = False) -> int:
        """Drop txs pending longer than `ttl_s` (checked at most once a second unless forced)."""
        now = self._clock()
        if not force and now < self._next_prune:
            return 0
        self._next_prune = now + 1.0
        cutoff = now - self.limits.ttl_s
        old: list[SignedTx] = []
        for h, (_, at) in self._arrival.items():  # insertion order = admission order
            if at > cutoff:
                break
            old.append(self._by_hash[h])
        for tx in old:
            self._drop(tx)
        for sender in {tx.sender for tx in old}:
            self._recount(sender)
        self.stats.expired += len(old)
        if old:
            self._removed(old, EXPIRED)
            self._changed()
        return len(old)

    def _drop(self, tx: SignedTx) -> None:
        """Remove one tx; the caller recounts the sender's ready run (`_recount`) after its drops."""
        del self._by_hash[tx.hash]
        self._by_raw.pop(tx.raw, None)
        del self._arrival[tx.hash]
        self._bytes -= len(tx.raw)
        s = self._senders.get(tx.sender)
        if s is not None:
            s.txs.pop(tx.nonce, None)
            if not s.txs:
                self._ready_txs -= s.ready
                self._ready_bytes -= s.ready_bytes
                del self._senders[tx.sender]

    def _extend_ready(self, s: _Sender) -> None:
        """Grow the sender's ready run over the txs that now follow it without a gap."""
        tx = s.txs.get(s.next_nonce + s.ready)
        while tx is not None:
            s.ready += 1
            s.ready_bytes += len(tx.raw)
            self._ready_txs += 1
            self._ready_bytes += len(tx.raw)
            tx = s.txs.get(s.next_nonce + s.ready)

    def _recount(self, sender: bytes) -> None:
        """Recompute a sender's ready run after its txs or its next nonce changed."""
        s = self._senders.get(sender)
        if s is None:
            return
        self._ready_txs -= s.ready
        self._ready_bytes -= s.ready_bytes
        s.ready = s.ready_bytes = 0
        self._extend_ready(s)
