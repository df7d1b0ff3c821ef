"""The chaos run's independent client: streams signed transfers and follows every accepted tx to the end.

It speaks to the nodes only through the SDK (`client.Client`, HTTP per DESIGN section 5) and never imports
`node/`. Transfers of one minor unit go round-robin among the load wallets, each sender's nonces tracked
locally; each POST goes to a node drawn from the seeded generator, failing over to the others when a node
does not answer (killed, paused, cut off). A tx whose POST got no answer is sent again, the same signed
bytes, to the next node (idempotent by hash) until some node answers for it; its sender waits meanwhile.

A tx counts as accepted when a node answers `accepted`, or, for a tx sent again after a lost answer,
`duplicate` / `already_committed` / `nonce_too_low` (some node took it: we never sign two txs with one
nonce). Accepted txs are then only followed, never re-submitted: the run exists to find accepted txs a node
loses, and re-sending them would hide exactly that. A follower thread reads each new block from whichever
node answers (`GET /blocks/{h}`) and marks its txs committed. At the end, an accepted tx its node reports
`dropped` (a final status: it will never commit) is not waited for; it is not in the chain, so it counts
as lost, with the node's reason.

Rule: bounded: at most `max_inflight` accepted-but-uncommitted txs per sender (a sender at the bound is
skipped, the rest keep the load going), one POST per tick, every request with a short timeout; both
threads stop on `stop()`.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from client.client import Client
from client.errors import ClientError
from client.wallet import Wallet
from protocol.tx import SignedTx

ASSET = "CNY.BANKA"
REQUEST_TIMEOUT_S = 2.0
NODE_BACKOFF_S = 1.0
TAKEN = ("duplicate", "already_committed", "nonce_too_low")  # a resent tx some node already holds
RETRY_LATER = ("mempool_full", "sender_limit", "nonce_too_high", "nonce_conflict")  # ordinary under faults
DROP_CHECK_S = 5.0  # while settling and stalled, ask this often whether the waited-for txs were dropped
DROP_CHECK_MAX = 200  # txs asked about per check


@dataclass
class Accepted:
    hash: str
    sender: str
    nonce: int
    node: str
    t: float  # seconds since the client started
    resent: bool  # accepted after a POST whose answer was lost


@dataclass
class Sender:
    wallet: Wallet
    next_nonce: int
    unanswered: SignedTx | None = None  # sent, no node answered for it yet: sent again before anything new
    inflight: int = 0


@dataclass
class Tally:
    posts: int = 0
    unanswered_posts: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # code -> count (unexpected rejections)
    retried: Counter[str] = field(default_factory=Counter)  # code -> count (asked to retry later)


class ChaosClient:
    def __init__(self, chain: str, wallets: list[Wallet], urls: dict[str, str], *, rate: float, seed: int,
                 max_inflight: int = 64) -> None:
        self.chain = chain
        self.urls = dict(urls)
        self.rate = rate
        self.max_inflight = max_inflight
        self.rng = random.Random(seed)
        self.wallets = wallets
        self.senders: list[Sender] = []
        self.accepted: dict[str, Accepted] = {}
        self.committed: dict[str, int] = {}  # tx hash -> height, as the follower saw it
        self.dropped: dict[str, str] = {}  # accepted tx hash -> "node:reason" where a node dropped it
        self.tally = Tally()
        self.lock = threading.Lock()
        self._down_until: dict[str, float] = {}
        self._stop = threading.Event()
        self._stop_follow = threading.Event()
        self._threads: list[threading.Thread] = []
        self._t0 = time.monotonic()
        self.followed_height = 0

    # ---- lifetime ----------------------------------------------------------------------------------

    def start(self) -> None:
        for w in self.wallets:
            self.senders.append(Sender(w, self._nonce_of(w)))
        self._t0 = time.monotonic()
        for name, fn in (("chaos-load", self._submit_loop), ("chaos-follow", self._follow_loop)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop_load(self) -> None:
        self._stop.set()
        self._threads[0].join(timeout=10)

    def stop(self) -> None:
        self._stop.set()
        self._stop_follow.set()
        for t in self._threads:
            t.join(timeout=10)

    def client(self, name: str, timeout: float = REQUEST_TIMEOUT_S) -> Client:
        return Client(self.urls[name], timeout=timeout)

    def _nonce_of(self, w: Wallet) -> int:
        for _ in range(30):
            for name in self.urls:
                try:
                    return self.client(name).account(w.account).nonce
                except ClientError:
                    continue
            time.sleep(1)
        raise ClientError("no node answers for account nonces", code="unreachable")

    # ---- submitting ----------------------------------------------------------------------------------

    def _order(self) -> list[str]:
        names = list(self.urls)
        self.rng.shuffle(names)
        now = time.monotonic()
        return sorted(names, key=lambda n: self._down_until.get(n, 0.0) > now)  # up nodes first

    def _next_sender(self, i: int) -> Sender | None:
        n = len(self.senders)
        for k in range(n):
            s = self.senders[(i + k) % n]
            if s.inflight < self.max_inflight:
                return s
        return None

    def _submit_loop(self) -> None:
        i = 0
        period = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += period
            s = self._next_sender(i)
            i += 1
            if s is not None:
                self._submit_one(s)
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()  # behind: do not burst to catch up

    def _sign(self, s: Sender) -> SignedTx:
        to = self.wallets[(self.wallets.index(s.wallet) + 1) % len(self.wallets)]
        return SignedTx.create(s.wallet.key, {"chain": self.chain, "kind": "transfer", "nonce": s.next_nonce,
                                              "to": to.public_key, "asset": ASSET, "amount": 1})

    def _submit_one(self, s: Sender) -> None:
        resent = s.unanswered is not None
        tx = s.unanswered or self._sign(s)
        for name in self._order():
            self.tally.posts += 1
            try:
                doc = self.client(name).submit([tx])
            except ClientError:
                self.tally.unanswered_posts += 1
                self._down_until[name] = time.monotonic() + NODE_BACKOFF_S
                s.unanswered = tx  # it may or may not have arrived: the same bytes go to the next node
                continue
            if not doc.results:  # e.g. intake closed while the node stops: the next node
                self._down_until[name] = time.monotonic() + NODE_BACKOFF_S
                continue
            code = doc.results[0].code
            if doc.results[0].accepted or (resent and code in TAKEN):
                self._accept(s, tx, name, resent)
            else:  # not taken: the same tx is offered again on the sender's next turn (a nonce is never
                # signed twice); a refusal no valid transfer should get is counted for the report
                (self.tally.retried if code in RETRY_LATER else self.tally.rejected)[str(code)] += 1
                s.unanswered = tx
            return

    def _accept(self, s: Sender, tx: SignedTx, node: str, resent: bool) -> None:
        h = tx.hash.hex()
        with self.lock:
            if h not in self.accepted:
                self.accepted[h] = Accepted(h, s.wallet.account, tx.nonce, node,
                                            round(time.monotonic() - self._t0, 3), resent)
                if h not in self.committed:
                    s.inflight += 1
        s.next_nonce = tx.nonce + 1
        s.unanswered = None

    def track(self, tx: SignedTx, node: str) -> None:
        """Count a tx submitted by someone else (the orchestrator's recovery probes) as accepted."""
        with self.lock:
            self.accepted.setdefault(tx.hash.hex(), Accepted(tx.hash.hex(), tx.sender.hex(), tx.nonce, node,
                                                             round(time.monotonic() - self._t0, 3), False))

    # ---- following -----------------------------------------------------------------------------------

    def _follow_loop(self) -> None:
        while not self._stop_follow.is_set():
            progressed = False
            for name in self._order():
                try:
                    c = self.client(name)
                    head = c.status().height
                    while self.followed_height < head and not self._stop_follow.is_set():
                        self._mark(c.block(self.followed_height + 1).txs, self.followed_height + 1)
                        self.followed_height += 1
                        progressed = True
                    break
                except ClientError:
                    continue
            if not progressed:
                self._stop_follow.wait(0.3)

    def _mark(self, hashes: list[str], height: int) -> None:
        by_sender = {s.wallet.account: s for s in self.senders}
        with self.lock:
            for h in hashes:
                if h in self.committed:
                    continue
                self.committed[h] = height
                acc = self.accepted.get(h)
                if acc is not None and acc.sender in by_sender:
                    by_sender[acc.sender].inflight -= 1

    # ---- the end -------------------------------------------------------------------------------------

    def uncommitted(self) -> list[str]:
        with self.lock:
            return [h for h in self.accepted if h not in self.committed]

    def settle(self, timeout_s: float) -> int:
        """Wait (load stopped) until every accepted tx is committed or dropped (a final answer: it will not
        commit), or nothing changes for `timeout_s`; returns how many are still neither."""
        last, since, asked = -1, time.monotonic(), time.monotonic()
        while True:
            left = [h for h in self.uncommitted() if h not in self.dropped]
            if not left:
                return 0
            if len(left) != last:
                last, since = len(left), time.monotonic()
            elif time.monotonic() - since > timeout_s:
                return len(left)
            if time.monotonic() - asked > DROP_CHECK_S:  # stalled a while: are they dropped?
                self._ask_dropped(left[:DROP_CHECK_MAX])
                asked = time.monotonic()
            time.sleep(0.5)

    def _ask_dropped(self, hashes: list[str]) -> None:
        """Record each of `hashes` that the node which accepted it now reports `dropped` (with its reason)."""
        for h in hashes:
            node = self.accepted[h].node
            try:
                doc = self.client(node).tx(h)
            except ClientError:
                continue
            if doc.status == "dropped":
                self.dropped[h] = f"{node}:{doc.reason}"

    def final_statuses(self, hashes: list[str]) -> dict[str, dict[str, str]]:
        """What every node says about each of `hashes` (`GET /txs/{hash}` status, or `unreachable`)."""
        out: dict[str, dict[str, str]] = {}
        for h in hashes:
            row: dict[str, str] = {}
            for name in self.urls:
                try:
                    doc = self.client(name, 5.0).tx(h)
                    row[name] = doc.status + (":" + doc.reason if doc.reason else "")
                except ClientError as exc:
                    row[name] = exc.code
            out[h] = row
        return out
