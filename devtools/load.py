"""`smeledger load`: open-loop signed-transfer load at a steady rate, with commit tracking.

Transfers of one minor unit among the demo wallets of a testnet, signed ahead of time in a thread (so
signing never limits the rate), released by a `Pacer` every `tick` and POSTed in msgpack batches to one
or several nodes. Each sender's nonces are tracked locally from `GET /accounts`; a sender never has more
than `max_inflight` txs admitted but not yet committed (the mempool's per-sender bound), and txs the node
asks us to retry (full pool, sender limit, unreachable node) go back to their sender in nonce order. A
follower reads every new block (`GET /blocks/{h}?wait_ms=`, a long poll: the node answers as soon as the
block is stored) and matches its tx hashes. At the end every accepted
tx is followed to its final status with `GET /txs/{hash}` (DESIGN section 7): `committed`, `failed`
(with its receipt), `dropped` (with a reason), still `pending` somewhere, or `lost` — accepted, but
neither final nor pending on any node. `--record` writes every accepted hash with that status; a run with
lost txs exits non-zero. Progress is live: a bar on a terminal, JSON lines on stderr otherwise.

Rule: the run is bounded in count (rate x duration, at most `MAX_TXS`) and in time (duration + settle +
confirm); every failure is one line on stderr, never a traceback. Pure bookkeeping (`Pacer`,
`SenderBook`, `Tally`) lives in `devtools/load_book.py`, without I/O.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

from client import discovery
from client.errors import ClientError, UsageError
from client.wallet import Wallet, keystore_info, read_password
from devtools.load_book import (
    DONE_DUPLICATE,
    MAX_TXS,
    NODE_BACKOFF_S,
    RETRYABLE,
    Pacer,
    PendingTx,
    SenderBook,
    Tally,
    batch_body,
    block_tx_hashes,
    sign_transfer,
)
from devtools.progress import Reporter
from protocol.api import FINAL_STATES
from protocol.ledger.kinds.money import MAX_MEMO

FOLLOW_WAIT_MS = 1000  # how long one block request waits at the node (its stop is noticed within this)


# ---- setup --------------------------------------------------------------------------------------

def load_wallets(directory: str | Path, limit: int | None = None) -> list[Wallet]:
    d = Path(directory)
    if not d.is_dir():
        raise UsageError(f"wallets directory {d} does not exist")
    files = sorted(p for p in d.glob("*.json"))
    if not files:
        raise UsageError(f"no wallet files (*.json) in {d}")
    password = read_password(d / "PASSWORD")
    skip = {"REGULATOR"}
    chosen = [p for p in files if not skip & set(keystore_info(p)["roles"])]
    users = [p for p in chosen if p.stem.startswith("user")]  # funded in both assets: first choice
    chosen = users + [p for p in chosen if p not in users]
    if limit:
        chosen = chosen[:limit]
    with ThreadPoolExecutor(2) as ex:  # argon2id releases the GIL: decrypt two keystores at a time
        return list(ex.map(lambda p: Wallet.load(p, password), chosen))


# ---- the run ------------------------------------------------------------------------------------

def _found(r: Any, url: str) -> bool:
    """False for a 404 (not there yet); raises `http_error` for any other answer but 200."""
    if r.status == 404:
        return False
    if r.status != 200:
        raise ClientError(f"GET {url}: HTTP {r.status}", code="http_error")
    return True


class LoadRun:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        given = [u if u.startswith("http") else "http://" + u for u in args.nodes]
        self.preferred = len(given)  # the nodes asked for; the rest are failover only
        self.nodes = given + [u for u in getattr(args, "fallback", []) if u not in given]
        self.tally = Tally()
        self.by_hash: dict[bytes, PendingTx] = {}
        self.done: dict[bytes, float] = {}  # hash -> latency, found in a block
        self.final: dict[bytes, str] = {}  # accepted hash -> final status (or pending / lost / unconfirmed)
        self.stop_signing = threading.Event()
        self.block_times: list[tuple[int, int, int]] = []  # (height, header time ms, tx count)
        self.down_until = [0.0] * len(self.nodes)
        self.signed = 0

    async def _get(self, session: Any, url: str) -> Any:
        async with session.get(url) as r:
            return await r.json() if _found(r, url) else None

    async def setup(self, session: Any) -> None:
        loop = asyncio.get_running_loop()
        self.wallets = await loop.run_in_executor(None, load_wallets, self.a.wallets, self.a.senders)
        st, home, errors = None, "", []
        for url in self.nodes:  # the first node that answers is asked for chain, height and nonces
            try:
                st, home = await self._get(session, url + "/status"), url
                break
            except (TimeoutError, OSError, aiohttp.ClientError, ClientError) as exc:
                errors.append(f"{url}: {exc}")
        if not isinstance(st, dict):
            raise ClientError("cannot reach any node: " + "; ".join(errors), code="unreachable")
        self.chain, self.start_height = st["chain_id"], st["height"]
        self.nonces, keep = [], []
        for w in self.wallets:
            acc = await self._get(session, f"{home}/accounts/{w.account}")
            bal = int(((acc or {}).get("balances") or {}).get(self.a.asset, 0))
            if acc is not None and bal >= self.a.amount * self.a.rate * self.a.duration / max(1, len(self.wallets)):
                keep.append(w)
                self.nonces.append(int(acc.get("nonce", 0)))
        if len(keep) < 2:
            raise UsageError(f"need at least 2 wallets funded in {self.a.asset} under {self.a.wallets}")
        self.wallets = keep
        self.book = SenderBook(len(keep), self.a.max_inflight)

    def sign_all(self, total: int) -> None:
        """Signer thread: round-robin over senders, appending to the book (deque appends are atomic)."""
        w, n = self.wallets, len(self.wallets)
        nonces = list(self.nonces)
        memo = bytes((i * 7 + 3) % 256 for i in range(self.a.memo_bytes))  # opaque to the ledger
        for i in range(total):
            if self.stop_signing.is_set():
                return
            s = i % n
            h, raw = sign_transfer(w[s], self.chain, nonces[s], w[(s + 1 + i // n % (n - 1)) % n].public_key,
                                   self.a.asset, self.a.amount, memo)
            tx = PendingTx(s, nonces[s], h, raw)
            nonces[s] += 1
            self.by_hash[h] = tx
            self.book.add_signed(tx)
            self.signed = i + 1

    async def post(self, session: Any, sem: asyncio.Semaphore, node: int, txs: list[PendingTx]) -> None:
        t = self.tally
        url = self.nodes[node] + "/txs"
        async with sem:
            now, wall = time.monotonic(), time.time()
            for tx in txs:
                if tx.tries == 0:
                    t.submitted += 1
                    tx.sent_at, tx.sent_wall = now, wall
                else:
                    t.retried += 1
                tx.tries += 1
            t.first_sent = t.first_sent or now
            t.last_sent = now
            try:
                async with session.post(url, data=batch_body([x.raw for x in txs]),
                                        headers={"Content-Type": "application/msgpack"}) as r:
                    doc = await r.json(content_type=None)
            except (TimeoutError, OSError, aiohttp.ClientError, ValueError) as exc:
                doc = None
                self.last_error = f"{url}: {exc or type(exc).__name__}"
                self.down_until[node] = time.monotonic() + NODE_BACKOFF_S
        answered = time.monotonic() - now
        rows = doc.get("results") if isinstance(doc, dict) else None
        if not isinstance(rows, list) or len(rows) != len(txs):
            code = "unreachable" if doc is None else str(doc.get("error", "http_error"))
            rows = [{"accepted": False, "code": code}] * len(txs)
        for tx, row in zip(txs, rows, strict=True):
            code = row.get("code") or "unknown"
            if row.get("accepted") or code in DONE_DUPLICATE:
                if not tx.accepted:  # a retry answered `duplicate` is the same accepted tx
                    tx.accepted = True
                    t.accepted += 1
                    if tx.tries == 1:
                        t.accept_latencies.append(answered)
            elif code in RETRYABLE and tx.tries < self.a.max_tries:
                self.book.give_back(tx)
            else:
                t.rejected[code] += 1
                self.book.rejected(tx, code)

    def pick_node(self, k: int) -> int:
        """Round-robin over the nodes asked for, skipping those that failed in the last NODE_BACKOFF_S
        seconds; when all of them are down, the failover nodes (the rest of the testnet) take over; all
        failing: plain round-robin, so the retries find the first one back."""
        now = time.monotonic()
        for lo, n in ((0, self.preferred), (self.preferred, len(self.nodes) - self.preferred)):
            for j in range(n):
                i = lo + (k + j) % n
                if self.down_until[i] <= now:
                    return i
        return k % self.preferred

    async def submit_loop(self, session: Any) -> None:
        a = self.a
        sem = asyncio.Semaphore(a.max_requests)
        pacer = Pacer(a.rate, a.duration, time.monotonic())
        self.pacer = pacer
        tasks: set[asyncio.Task[None]] = set()
        k = 0
        end = pacer.start + a.duration
        while time.monotonic() < end + a.settle:
            if pacer.finished and not self.book.retries() and not tasks:
                break
            txs, fresh = self.book.take(pacer.due(time.monotonic()))
            pacer.release(fresh)
            for i in range(0, len(txs), a.batch):
                task = asyncio.create_task(self.post(session, sem, self.pick_node(k), txs[i:i + a.batch]))
                k += 1
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            self.report()
            await asyncio.sleep(a.tick)
        self.stop_signing.set()
        if tasks:
            await asyncio.gather(*tasks)

    async def _block(self, session: Any, url: str) -> tuple[int, list[bytes]] | None:
        async with session.get(url) as r:
            return block_tx_hashes(await r.read()) if _found(r, url) else None

    async def follow(self, session: Any, stop: asyncio.Event) -> None:
        """Read every block after the start height (raw msgpack: the node does not decode its txs for us)
        and match our tx hashes. Each request waits at the node for the block (FOLLOW_WAIT_MS); only an
        answer that did not wait (an error, or the node's waiters are full) is followed by a `poll` pause."""
        h = self.start_height + 1
        node = 0
        while not stop.is_set():
            asked = time.monotonic()
            try:
                blk = await self._block(session, f"{self.nodes[node % len(self.nodes)]}/blocks/{h}"
                                                 f"?format=msgpack&wait_ms={FOLLOW_WAIT_MS}")
            except (TimeoutError, OSError, aiohttp.ClientError, ClientError, ValueError):
                node += 1
                blk = None
            if blk is None:
                if time.monotonic() - asked < self.a.poll:
                    await asyncio.sleep(self.a.poll)
                continue
            now = time.monotonic()
            block_time, hashes = blk
            self.block_times.append((h, block_time, len(hashes)))
            for th in hashes:
                tx = self.by_hash.get(th)
                if tx is not None and th not in self.done:
                    self.done[th] = now - tx.sent_at
                    if tx.tries == 1:
                        self.tally.proposed_latencies.append(block_time / 1000 - tx.sent_wall)
                    self.book.committed(tx.sender)
            h += 1

    def report(self) -> None:
        t = self.tally
        self.progress.update(self.pacer.released, submitted=t.submitted, accepted=t.accepted,
                             committed=len(self.done), rejected=sum(t.rejected.values()), retried=t.retried,
                             backlog=self.book.backlog())

    async def _status_at(self, session: Any, url: str, h: bytes) -> str:
        async with session.get(f"{url}/txs/{h.hex()}") as r:
            if r.status not in (200, 404):
                raise ClientError(f"GET {url}/txs: HTTP {r.status}", code="http_error")
            doc = await r.json(content_type=None)
        return str(doc.get("status", "unknown")) if isinstance(doc, dict) else "unknown"

    async def status_anywhere(self, session: Any, h: bytes, first: int) -> str:
        """The tx's final status on the first node that has one; else `pending` if some node holds it,
        `lost` if every node that answered does not know it, `unconfirmed` if none answered."""
        seen: list[str] = []
        for j in range(len(self.nodes)):
            url = self.nodes[(first + j) % len(self.nodes)]
            try:
                st = await self._status_at(session, url, h)
            except (TimeoutError, OSError, aiohttp.ClientError, ClientError, ValueError):
                continue
            if st in FINAL_STATES:
                return st
            seen.append(st)
        if "pending" in seen:
            return "pending"
        return "lost" if seen else "unconfirmed"

    async def confirm(self, session: Any) -> None:
        """The final status of every accepted tx (bounded by `confirm_timeout`)."""
        q: deque[bytes] = deque(h for h, tx in self.by_hash.items() if tx.accepted)
        deadline = time.monotonic() + self.a.confirm_timeout

        async def worker(i: int) -> None:
            while q and time.monotonic() < deadline:
                h = q.popleft()
                self.final[h] = await self.status_anywhere(session, h, i)
        await asyncio.gather(*(worker(i) for i in range(16)))
        for h in q:
            self.final[h] = "unconfirmed"

    def tally_final(self) -> None:
        counts = Counter(self.final.values())
        t = self.tally
        t.failed, t.dropped, t.pending, t.lost = counts["failed"], counts["dropped"], counts["pending"], counts["lost"]
        t.unconfirmed = counts["unconfirmed"]

    async def main(self) -> dict[str, Any]:
        t0 = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=self.a.request_timeout)
        conn = aiohttp.TCPConnector(limit=64)
        self.last_error = ""
        async with aiohttp.ClientSession(timeout=timeout, connector=conn) as session:
            try:
                await self.setup(session)
            except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                raise ClientError(f"lost the node during setup: {exc}", code="unreachable") from None
            total = min(MAX_TXS, math.floor(self.a.rate * self.a.duration))
            self.signed = 0
            signer = threading.Thread(target=self.sign_all, args=(total,), name="load-signer", daemon=True)
            signer.start()
            lead = min(total, max(1, int(self.a.rate * self.a.lead)))
            while self.signed < lead and signer.is_alive():
                await asyncio.sleep(0.01)
            self.progress = Reporter("load", total, self.a.progress)
            stop = asyncio.Event()
            follower = asyncio.create_task(self.follow(session, stop))
            run_t0, run_cpu0 = time.monotonic(), time.process_time()
            await self.submit_loop(session)
            settle_end = time.monotonic() + self.a.settle
            while time.monotonic() < settle_end and len(self.done) < self.tally.accepted:
                self.report()
                await asyncio.sleep(0.05)
            stop.set()
            run_s, run_cpu = time.monotonic() - run_t0, time.process_time() - run_cpu0
            await follower
            signer.join(timeout=5)
            self.tally.committed = len(self.done)
            self.tally.latencies = list(self.done.values())
            self.progress.close()
            if self.a.confirm:
                await self.confirm(session)
                self.tally.committed = sum(1 for v in self.final.values() if v == "committed")
            else:
                self.final = {h: "committed" if h in self.done else "unconfirmed"
                              for h, tx in self.by_hash.items() if tx.accepted}
            self.tally_final()
        out = self.tally.summary(time.monotonic() - t0)
        out.update(run_s=round(run_s, 2), cpu_cores_during_run=round(run_cpu / run_s, 3) if run_s > 0 else None,
                   senders=len(self.wallets), stalled_senders=self.book.stalled(),
                   final_checked=self.a.confirm,
                   start_height=self.start_height, blocks=len(self.block_times), nodes=self.nodes,
                   offered_rate=self.a.rate, duration_s=self.a.duration)
        if self.last_error:
            out["last_error"] = self.last_error
        return out


def _defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options; nodes from `--nodes`, else the node `client.discovery` finds (`--node`,
    `SMELEDGER_NODE`, the testnet directory). When the nodes are part of the testnet (`--testnet`, or
    `.testnet`), its other nodes are the failover."""
    d = {"senders": None, "batch": 200, "tick": 0.015, "max_inflight": 400, "max_requests": 8, "settle": 15.0,
         "confirm": True, "confirm_timeout": 60.0, "request_timeout": 15.0, "poll": 0.05, "asset": "CNY.BANKA",
         "amount": 1, "lead": 1.0, "max_tries": 50, "nodes": None, "record": None, "json": False,
         "node": None, "testnet": None, "wallets": None, "progress": "auto", "memo_bytes": 0}
    for k, v in d.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    target = discovery.resolve(args.node, args.testnet)
    if isinstance(args.nodes, str):
        args.nodes = [u.strip() for u in args.nodes.split(",") if u.strip()]
    if not args.nodes:
        args.nodes = [target.url]
    testnet = target.testnet or discovery.find_testnet(args.testnet)
    urls = [str(n["admin_url"]).rstrip("/") for n in discovery.load_nodes(testnet)] if testnet else []
    args.fallback = [u for u in urls if u not in args.nodes] if set(args.nodes) & set(urls) else []
    if args.wallets is None:
        args.wallets = str((testnet or Path(discovery.DEFAULT_TESTNET)) / "wallets")
    return args


def write_record(path: str, final: dict[bytes, str]) -> None:
    """`<hash> <final status>` per accepted tx, in hash order."""
    Path(path).write_text("".join(f"{h.hex()} {st}\n" for h, st in sorted(final.items())))


def run(args: argparse.Namespace) -> int:
    args = _defaults(args)
    if args.rate <= 0 or args.duration <= 0 or args.batch < 1 or args.max_inflight < 1:
        raise UsageError("--rate, --duration, --batch and --max-inflight must be positive")
    if not 0 <= args.memo_bytes <= MAX_MEMO:
        raise UsageError(f"--memo-bytes must be in 0..{MAX_MEMO}")
    if not 0 < args.poll <= 1:
        raise UsageError("--poll must be in (0, 1] seconds")
    if args.record:
        Path(args.record).parent.mkdir(parents=True, exist_ok=True)
        Path(args.record).write_text("")  # fail early on an unwritable path
    lr = LoadRun(args)
    res = asyncio.run(lr.main())
    if args.record:
        write_record(args.record, lr.final)
        res["record"] = str(args.record)
    if args.json:
        print(json.dumps(res))
    else:
        rej = ", ".join(f"{k}={v}" for k, v in res["rejected_by_code"].items()) or "none"
        print(f"submitted {res['submitted']}  accepted {res['accepted']}  committed {res['committed']}  "
              f"failed {res['failed']}  dropped {res['dropped']}  pending {res['pending']}  lost {res['lost']}  "
              f"rejected {res['rejected']} ({rej})  retried {res['retried']}")
        print(f"offered {args.rate:g} tx/s for {args.duration:g} s; submit rate {res['submit_rate']} tx/s; "
              f"commit latency p50 {res['latency_p50_ms']} ms, p95 {res['latency_p95_ms']} ms, "
              f"p99 {res['latency_p99_ms']} ms; "
              f"{res['senders']} senders ({res['stalled_senders']} stalled); {res['blocks']} blocks")
        if args.record:
            print(f"{res['accepted']} accepted tx hashes with their final status written to {args.record}")
        if res.get("last_error"):
            print(f"last submit error: {res['last_error']}")
    if res["lost"]:
        raise ClientError(f"{res['lost']} accepted txs were lost (neither final nor pending on any node)",
                          code="lost")
    if res["submitted"] and not res["committed"]:
        raise ClientError(f"none of the {res['submitted']} submitted txs was committed within the run",
                          code="none_committed")
    return 0
