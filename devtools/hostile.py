"""Hostile-client drills against a running node's API, measured: what issue 15's acceptance asks for.

    python -m devtools.hostile --node http://127.0.0.1:8701 --pid 1234 --nodes URL,URL,... \\
        --gzip-bombs 3 --nested-clients 4 --slow-headers 2000 --duration 60

While the drill runs, /health is probed every 100 ms on a kept-alive connection (as a monitor would) and
every second on a fresh one; the node's RSS (`--pid`) is sampled; every node in `--nodes` is asked for
its view before and after. Drills, all at once: gzip bombs (1 MiB inflating to 1 GiB, one after the
other), clients posting 8 MB of nested msgpack (in a loop, or `--nested-posts` times each), and
connections that send a request head one byte per second and never finish it (when the node closed each
one, and what it answered, is recorded).
Prints one JSON report. Rule: every loop here ends by `--duration`; every socket is closed on return.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gzip
import json
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

MSGPACK = {"Content-Type": "application/msgpack"}


@functools.cache
def gzip_bomb(mib: int) -> bytes:
    """About `mib` KiB of gzip that inflates to `mib` MiB of zeros (gzip members may be concatenated)."""
    return gzip.compress(bytes(1024 * 1024), 9) * mib


def nested_msgpack(total: int) -> bytes:
    """A msgpack list of lists of empty lists, about `total` bytes: what stalled nodes in issue 15."""
    inner = b"\xdc" + struct.pack(">H", 800) + b"\x90" * 800
    n = total // len(inner)
    return b"\xdd" + struct.pack(">I", n) + inner * n


@dataclass
class SlowClients:
    """Connections that send a request head one byte at a time and never finish it; each one's end (the
    node closing it, or answering and closing) is recorded when it happens."""

    host: str
    port: int
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    ends: list[asyncio.Task[tuple[float, bytes]]] = field(default_factory=list)
    failed_to_connect: int = 0

    async def open(self, n: int) -> None:
        for _ in range(n):
            try:
                reader, w = await asyncio.open_connection(self.host, self.port)
            except OSError:
                self.failed_to_connect += 1
                continue
            w.write(b"GET /health HTTP/1.1\r\nX-Slow: ")
            self.writers.append(w)
            self.ends.append(asyncio.ensure_future(_until_closed(reader)))

    def drip(self) -> None:
        """One more header byte on every connection still open."""
        for w, end in zip(self.writers, self.ends, strict=True):
            if not end.done() and not w.transport.is_closing():
                w.write(b"a")

    def still_open(self) -> int:
        return sum(1 for end in self.ends if not end.done())

    def answers(self) -> list[bytes]:
        """What the node sent on the connections it ended (empty bytes: closed without an answer)."""
        return [end.result()[1] for end in self.ends if end.done() and not end.cancelled()]

    def closed_after(self) -> list[float]:
        """Seconds from opening to the node closing, for each connection the node ended."""
        return [end.result()[0] for end in self.ends if end.done() and not end.cancelled()]

    def close(self) -> None:
        for w, end in zip(self.writers, self.ends, strict=True):
            w.transport.abort()
            end.cancel()
        self.writers.clear()
        self.ends.clear()


async def _until_closed(reader: asyncio.StreamReader) -> tuple[float, bytes]:
    t0 = time.monotonic()
    try:
        data = await reader.read(-1)
    except ConnectionError:
        data = b""
    return time.monotonic() - t0, data


def _summary(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"n": 0}
    s = sorted(xs)
    return {"n": len(s), "max": round(s[-1], 3), "p50": round(s[len(s) // 2], 3),
            "p99": round(s[min(len(s) - 1, int(len(s) * 0.99))], 3)}


def _rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Drill:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.url = args.node.rstrip("/")
        self.deadline = 0.0
        self.health: dict[str, list[float]] = {"keepalive": [], "fresh": []}
        self.health_bad: Counter[str] = Counter()
        self.posts: dict[str, list[float]] = {"gzip_bomb": [], "nested_msgpack": []}
        self.answers: dict[str, Counter[str]] = {"gzip_bomb": Counter(), "nested_msgpack": Counter()}
        self.rss: list[float] = []

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    async def _probe(self, session: aiohttp.ClientSession, kind: str) -> None:
        t0 = time.monotonic()
        try:
            async with session.get(self.url + "/health", timeout=aiohttp.ClientTimeout(total=5)) as r:
                await r.read()
                if r.status != 200:
                    self.health_bad[f"{kind}:{r.status}"] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.health_bad[f"{kind}:{type(exc).__name__}"] += 1
        self.health[kind].append(time.monotonic() - t0)

    async def probe_health(self) -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as kept, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
            n = 0
            while self.running():
                await self._probe(kept, "keepalive")
                if n % 10 == 0:
                    await self._probe(fresh, "fresh")
                n += 1
                await asyncio.sleep(0.1)

    async def _post(self, session: aiohttp.ClientSession, kind: str, body: bytes, headers: dict[str, str]) -> None:
        t0 = time.monotonic()
        try:
            async with session.post(self.url + "/txs", data=body, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=30)) as r:
                doc = await r.json(content_type=None)
                self.answers[kind][f"{r.status} {doc.get('error') if isinstance(doc, dict) else '?'}"] += 1
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.answers[kind][type(exc).__name__] += 1
        self.posts[kind].append(time.monotonic() - t0)

    async def gzip_bombs(self, count: int) -> None:
        bomb = gzip_bomb(1024)
        async with aiohttp.ClientSession() as s:
            for _ in range(count):
                if not self.running():
                    break
                await self._post(s, "gzip_bomb", bomb, {**MSGPACK, "Content-Encoding": "gzip"})
                await asyncio.sleep(1.0)

    async def nested(self, count: int) -> None:
        body = nested_msgpack(8 * 1024 * 1024 - 64)
        async with aiohttp.ClientSession() as s:
            n = 0
            while self.running() and (not count or n < count):
                await self._post(s, "nested_msgpack", body, MSGPACK)
                n += 1

    async def slow_headers(self, n: int, report: dict[str, Any]) -> None:
        u = urlsplit(self.url)
        slow = SlowClients(u.hostname or "127.0.0.1", u.port or 80)
        try:
            await slow.open(n)
            while self.running() and slow.still_open():
                slow.drip()
                await asyncio.sleep(1.0)
            answers = slow.answers()
            refused = [a for a in answers if a.startswith((b"HTTP/1.1 429", b"HTTP/1.1 503"))]
            report.update(opened=len(slow.writers), failed_to_connect=slow.failed_to_connect,
                          still_open_at_end=slow.still_open(), refused=len(refused),
                          closed_without_answer=sum(1 for a in answers if not a),
                          other_answers=len(answers) - len(refused) - sum(1 for a in answers if not a),
                          closed_after_s=_summary(slow.closed_after()))
        finally:
            slow.close()

    async def sample_rss(self) -> None:
        while self.running():
            v = _rss_mib(self.args.pid)
            if v is not None:
                self.rss.append(v)
            await asyncio.sleep(0.5)

    async def views(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with aiohttp.ClientSession() as s:
            for url in self.args.nodes:
                try:
                    async with s.get(url.rstrip("/") + "/status", timeout=aiohttp.ClientTimeout(total=5)) as r:
                        doc = await r.json()
                        out[url] = {"view": doc.get("view"), "height": doc.get("height")}
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    out[url] = {"error": type(exc).__name__}
        return out

    async def run(self) -> dict[str, Any]:
        a = self.args
        before = await self.views()
        self.deadline = time.monotonic() + a.duration
        slow: dict[str, Any] = {}
        jobs = [self.probe_health(), self.sample_rss() if a.pid else asyncio.sleep(0),
                self.gzip_bombs(a.gzip_bombs), *(self.nested(a.nested_posts) for _ in range(a.nested_clients))]
        if a.slow_headers:
            jobs.append(self.slow_headers(a.slow_headers, slow))
        await asyncio.gather(*jobs)
        after = await self.views()
        return {"duration_s": a.duration, "views_before": before, "views_after": after,
                "view_changed": any(before[u].get("view") != after[u].get("view") for u in before),
                "health_s": {k: _summary(v) for k, v in self.health.items()}, "health_bad": dict(self.health_bad),
                "posts_s": {k: _summary(v) for k, v in self.posts.items()},
                "answers": {k: dict(v) for k, v in self.answers.items()}, "slow_headers": slow,
                "rss_mib": {"max": round(max(self.rss), 1), "first": round(self.rss[0], 1)} if self.rss else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.hostile", description=__doc__.split("\n\n")[0])
    p.add_argument("--node", required=True, help="API URL of the node under attack")
    p.add_argument("--nodes", default="", help="comma-separated API URLs whose view is compared before/after")
    p.add_argument("--pid", type=int, default=0, help="the attacked node's process id (RSS sampling)")
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--gzip-bombs", type=int, default=3)
    p.add_argument("--nested-clients", type=int, default=4)
    p.add_argument("--nested-posts", type=int, default=0, help="per client; 0: post in a loop until the end")
    p.add_argument("--slow-headers", type=int, default=2000)
    args = p.parse_args(argv)
    args.nodes = [u for u in args.nodes.split(",") if u] or [args.node]
    with contextlib.suppress(KeyboardInterrupt):
        report = asyncio.run(Drill(args).run())
        json.dump(report, sys.stdout, indent=1)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
