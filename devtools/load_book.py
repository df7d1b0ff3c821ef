"""The load generator's bookkeeping, without I/O: rate pacing, per-sender queues and in-flight bounds,
result accounting, and the wire helpers (signed transfers, batch bodies, block tx hashes).

Rule: nothing here touches a socket, a file or the clock; `devtools/load.py` owns the run and feeds these
objects times and answers, so the unit tests drive them directly.
"""

from __future__ import annotations

import math
import struct
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from client.errors import UsageError
from client.wallet import Wallet
from protocol import codec
from protocol.crypto import DOMAIN_TX, sha256

MAX_TXS = 2_000_000
RETRYABLE = frozenset({"mempool_full", "sender_limit", "nonce_too_high", "unreachable", "http_error"})
NODE_BACKOFF_S = 1.0
DONE_DUPLICATE = frozenset({"duplicate", "already_committed"})  # a retry of a tx the pool already holds


class Pacer:
    """How many txs are due at time `now` for a steady `rate` over `duration` seconds (open loop)."""

    def __init__(self, rate: float, duration: float, start: float) -> None:
        if rate <= 0 or duration <= 0:
            raise UsageError("--rate and --duration must be positive")
        self.rate, self.start = rate, start
        self.total = min(MAX_TXS, math.floor(rate * duration))
        self.released = 0

    def due(self, now: float) -> int:
        target = min(self.total, math.floor(self.rate * max(0.0, now - self.start)))
        return max(0, target - self.released)

    def release(self, n: int) -> None:
        self.released += n

    @property
    def finished(self) -> bool:
        return self.released >= self.total


@dataclass(slots=True)
class PendingTx:
    sender: int
    nonce: int
    hash: bytes
    raw: bytes
    sent_at: float = 0.0
    sent_wall: float = 0.0  # the same moment on the wall clock (compared with block header times)
    tries: int = 0
    accepted: bool = False  # some node answered accepted (or duplicate: it already had it)


@dataclass(slots=True)
class _Sender:
    ready: deque[PendingTx] = field(default_factory=deque)  # signed, never sent, nonce order
    retry: list[PendingTx] = field(default_factory=list)  # to resend before `ready`, kept sorted
    inflight: int = 0
    stalled: str | None = None  # rejection code that broke this sender's nonce sequence


class SenderBook:
    """Per-sender queues of signed txs and in-flight counts; `take` picks round-robin."""

    def __init__(self, senders: int, max_inflight: int) -> None:
        self.s = [_Sender() for _ in range(senders)]
        self.max_inflight = max_inflight
        self._rr = 0

    def add_signed(self, tx: PendingTx) -> None:
        self.s[tx.sender].ready.append(tx)

    def take(self, n: int) -> tuple[list[PendingTx], int]:
        """Every retry that may go now, plus up to n fresh txs, one per eligible sender per round, each
        sender's in lowest-nonce-first order. Returns (txs, how many of them are fresh)."""
        out: list[PendingTx] = []
        for st in self.s:
            while st.retry and st.stalled is None and st.inflight < self.max_inflight:
                out.append(st.retry.pop(0))
                st.inflight += 1
        fresh = 0
        k = len(self.s)
        idle = 0
        while fresh < n and idle < k:
            st = self.s[self._rr]
            self._rr = (self._rr + 1) % k
            if st.stalled is None and st.inflight < self.max_inflight and not st.retry and st.ready:
                out.append(st.ready.popleft())
                st.inflight += 1
                fresh += 1
                idle = 0
            else:
                idle += 1
        return out, fresh

    def retries(self) -> int:
        return sum(len(st.retry) for st in self.s if st.stalled is None)

    def give_back(self, tx: PendingTx) -> None:
        """The node asked to retry: the tx goes back to its sender, before any higher nonce."""
        st = self.s[tx.sender]
        st.inflight -= 1
        st.retry.append(tx)
        st.retry.sort(key=lambda t: t.nonce)

    def rejected(self, tx: PendingTx, code: str) -> None:
        """A final rejection: later nonces of this sender can never commit, so it stops sending."""
        st = self.s[tx.sender]
        st.inflight -= 1
        st.stalled = st.stalled or code

    def committed(self, sender: int) -> None:
        self.s[sender].inflight -= 1

    def backlog(self) -> int:
        return sum(len(st.ready) + len(st.retry) for st in self.s if st.stalled is None)

    def stalled(self) -> int:
        return sum(1 for st in self.s if st.stalled is not None)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of a list; None when empty."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(p / 100 * len(v)) - 1))]


@dataclass(slots=True)
class Tally:
    submitted: int = 0  # first submissions (a retried tx counts once)
    accepted: int = 0
    retried: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    committed: int = 0
    failed: int = 0  # in a block, but the receipt says failed
    dropped: int = 0  # a node says it can never commit
    pending: int = 0  # still pending on some node at the end
    lost: int = 0  # accepted, but neither final nor pending on any node at the end
    unconfirmed: int = 0  # no node answered for it at the end (or the final check was skipped)
    latencies: list[float] = field(default_factory=list)
    # stages of the latency, per tx: submit -> `accepted` answered (admission and the journal's sync), and
    # submit -> the header time of its block (also gossip to the primary and the wait for a proposal;
    # meaningful only when the nodes run on this machine's clock)
    accept_latencies: list[float] = field(default_factory=list)
    proposed_latencies: list[float] = field(default_factory=list)
    first_sent: float | None = None
    last_sent: float | None = None

    def summary(self, elapsed: float) -> dict[str, Any]:
        span = (self.last_sent - self.first_sent) if self.first_sent and self.last_sent else 0.0
        p50, p95, p99 = (percentile(self.latencies, q) for q in (50, 95, 99))
        return {"submitted": self.submitted, "accepted": self.accepted, "retried": self.retried,
                "rejected": sum(self.rejected.values()), "rejected_by_code": dict(sorted(self.rejected.items())),
                "committed": self.committed, "failed": self.failed, "dropped": self.dropped,
                "pending": self.pending, "lost": self.lost, "unconfirmed": self.unconfirmed,
                "submit_rate": round(self.submitted / span, 1) if span > 0 else None,
                "latency_p50_ms": round(p50 * 1000, 1) if p50 is not None else None,
                "latency_p95_ms": round(p95 * 1000, 1) if p95 is not None else None,
                "latency_p99_ms": round(p99 * 1000, 1) if p99 is not None else None,
                "accept_p50_ms": _ms(percentile(self.accept_latencies, 50)),
                "proposed_p50_ms": _ms(percentile(self.proposed_latencies, 50)),
                "elapsed_s": round(elapsed, 2)}


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def batch_body(raws: Sequence[bytes]) -> bytes:
    """A canonical msgpack array of already-canonical signed txs, without re-encoding them."""
    n = len(raws)
    head = bytes([0x90 | n]) if n < 16 else (b"\xdc" + struct.pack(">H", n) if n < 65536
                                              else b"\xdd" + struct.pack(">I", n))
    return head + b"".join(raws)


def block_tx_hashes(body: bytes) -> tuple[int, list[bytes]]:
    """(header time ms, tx hashes) of a `GET /blocks/{h}?format=msgpack` answer; ValueError if malformed."""
    try:
        outer = msgpack.unpackb(body, raw=False)
        block = msgpack.unpackb(outer["block"], raw=False)
        when = int(block["header"]["time"])
        return when, [sha256(msgpack.unpackb(raw, raw=False)["tx"]) for raw in block["txs"]]
    except (KeyError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"malformed block answer: {exc}") from None


def sign_transfer(wallet: Wallet, chain: str, nonce: int, to: bytes, asset: str, amount: int,
                  memo: bytes = b"") -> tuple[bytes, bytes]:
    """(hash, raw signed tx) of a transfer (with `memo` when not empty), encoded once."""
    fields: dict[str, Any] = {"chain": chain, "kind": "transfer", "from": wallet.public_key, "nonce": nonce,
                              "to": to, "asset": asset, "amount": amount}
    if memo:
        fields["memo"] = memo
    body = codec.encode(fields)
    sig = wallet.key.sign(DOMAIN_TX, body)
    return sha256(body), codec.encode({"sig": sig, "tx": body})
