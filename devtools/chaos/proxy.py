"""A fault-injecting TCP proxy for peer links: delay, jitter, loss, reordering, one-way cuts, resets.

Every peer link of a chaos testnet runs through one `Link`: node A dials the proxy's port for "A->B" and
the proxy connects on to B's P2P port. Each direction of a link ("fwd": dialer to listener, "back": the
answers) has its own `Faults`:

- `delay_ms` and `jitter_ms`: each chunk leaves at arrival + delay + uniform(0, jitter), never before the
  chunk ahead of it (a TCP stream keeps its order; jitter only changes the spacing);
- `kbps`: a bandwidth cap (kilobytes per second; 0 = none): a chunk leaves no sooner than its size allows
  after the one ahead of it;
- `loss`: the chance that a chunk is "lost" on the wire: as under TCP, it is not gone but retransmitted,
  so it and everything behind it wait a retransmission timeout (`RTO_MS`, doubling on repeated losses);
- `reorder`: the chance that a P2P frame (4-byte length + payload, the framing is visible even though the
  payload is sealed) is held back and sent after the next one, as a broken middlebox or an attacker in the
  path would; the receiving node must detect it (counter nonces) and drop the link, never accept it;
- `cut`: a black hole as TCP sees one: nothing gets through and nothing is closed; bytes wait (bounded,
  then back-pressure) and flow again when the cut heals, as retransmissions would, unless a node gave the
  link up first. With one direction cut the link is one-way. A connection made during a cut is accepted
  and connected on, and stays mute in the cut direction (a dialer sees its handshake time out).

`reset(link)` aborts the link's live connections (RST), as a NAT timeout or a rebooted router would.

The proxy runs as its own process (`python -m devtools.chaos.proxy`), driven by JSON lines on stdin, one
answer line per command on stdout, so the orchestrator's threads never share its event loop:
`{"op": "link", "name", "listen": [host, port], "upstream": [host, port]}`,
`{"op": "set", "name", "dir": "fwd"|"back"|"both", ...faults}`, `{"op": "clear"}` (every link back to no
faults), `{"op": "reset", "name"}`, `{"op": "stats"}`, `{"op": "quit"}`.

Rule: buffering is bounded per direction (`MAX_BUFFER` bytes waiting to leave; past it the proxy stops
reading that side, which is TCP's own back-pressure); randomness comes from one generator seeded by the
caller, so a schedule replays the same draws as far as the kernel's chunking allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

RTO_MS = 200  # first retransmission timeout of a "lost" chunk; doubles while losses repeat, capped
RTO_CAP_MS = 3_200
MAX_BUFFER = 8 * 1024 * 1024  # bytes waiting to leave, per direction of a connection
READ_CHUNK = 64 * 1024
FRAME_HEADER = 4
MAX_FRAME = 64 * 1024 * 1024  # a length above this is not a P2P frame: the stream is passed on unparsed
DIRECTIONS = ("fwd", "back")
CUT_POLL_S = 0.05  # how often a held direction looks whether its cut healed


@dataclass
class Faults:
    delay_ms: int = 0
    jitter_ms: int = 0
    loss: float = 0.0
    reorder: float = 0.0
    cut: bool = False
    kbps: int = 0

    def update(self, values: dict[str, Any]) -> None:
        for f in dataclasses.fields(self):
            if f.name in values:
                setattr(self, f.name, type(getattr(self, f.name))(values[f.name]))

    def clean(self) -> bool:
        return self == Faults()


@dataclass
class Link:
    name: str
    listen: tuple[str, int]
    upstream: tuple[str, int]
    faults: dict[str, Faults] = field(default_factory=lambda: {d: Faults() for d in DIRECTIONS})
    conns: set[Conn] = field(default_factory=set)
    server: asyncio.Server | None = None
    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, 0))
    reordered: int = 0
    delayed_by_loss: int = 0


class Pump:
    """One direction of one connection: reads chunks, schedules them, writes them in order."""

    def __init__(self, link: Link, direction: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 rng: random.Random) -> None:
        self.link = link
        self.direction = direction
        self.reader = reader
        self.writer = writer
        self.rng = rng
        self.queue: deque[tuple[float, bytes]] = deque()
        self.buffered = 0
        self.last_departure = 0.0
        self.losses = 0
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.header = bytearray()  # the part of a frame header read so far
        self.need = 0  # body bytes of the current frame still to come
        self.held: bytes | None = None
        self.parse = True

    @property
    def faults(self) -> Faults:
        return self.link.faults[self.direction]

    def _pieces(self, chunk: bytes) -> list[tuple[bytes, bool]]:
        """Cut the chunk at frame ends: (piece, True) for a whole frame (header and body), (piece, False)
        for a part of one. Nothing is held back to complete a frame, so a big frame on a slow link
        still arrives byte by byte."""
        if not self.parse:
            return [(chunk, False)]
        out: list[tuple[bytes, bool]] = []
        start = pos = 0
        whole = not self.header and self.need == 0  # the chunk starts on a frame boundary
        while pos < len(chunk):
            if self.need == 0:
                take = min(FRAME_HEADER - len(self.header), len(chunk) - pos)
                self.header += chunk[pos:pos + take]
                pos += take
                if len(self.header) < FRAME_HEADER:
                    break
                self.need = int.from_bytes(self.header, "big")
                self.header.clear()
                if self.need > MAX_FRAME:
                    self.parse = False
                    break
                if self.need == 0:
                    out.append((chunk[start:pos], whole))
                    start, whole = pos, True
                continue
            take = min(self.need, len(chunk) - pos)
            pos += take
            self.need -= take
            if self.need == 0:
                out.append((chunk[start:pos], whole))
                start, whole = pos, True
        if start < len(chunk):
            out.append((chunk[start:], False))
        return out

    def _schedule(self, data: bytes, now: float) -> None:
        f = self.faults
        at = now + (f.delay_ms + (self.rng.uniform(0, f.jitter_ms) if f.jitter_ms else 0)) / 1000
        if f.loss and self.rng.random() < f.loss:
            self.losses += 1
            self.link.delayed_by_loss += 1
            at += min(RTO_MS * 2 ** (self.losses - 1), RTO_CAP_MS) / 1000
        else:
            self.losses = 0
        at = max(at, self.last_departure + (len(data) / (f.kbps * 1000) if f.kbps else 0.0))
        self.last_departure = at
        self.queue.append((at, data))
        self.buffered += len(data)
        self.link.bytes[self.direction] += len(data)
        if self.buffered >= MAX_BUFFER:
            self.room.clear()
        self.wake.set()

    async def read_side(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.room.wait()
            chunk = await self.reader.read(READ_CHUNK)
            if not chunk:
                return
            now = loop.time()
            for piece, whole in self._pieces(chunk):
                if self.held is not None:
                    if whole:  # the held frame goes out after this one
                        self._schedule(piece, now)
                        self._schedule(self.held, now)
                        self.link.reordered += 1
                    else:
                        self._schedule(self.held, now)
                        self._schedule(piece, now)
                    self.held = None
                elif whole and self.faults.reorder and self.rng.random() < self.faults.reorder:
                    self.held = piece
                else:
                    self._schedule(piece, now)

    async def write_side(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            at, data = self.queue[0]
            wait = at - loop.time()
            if wait > 0 or self.faults.cut:
                await asyncio.sleep(CUT_POLL_S if wait <= 0 else min(wait, CUT_POLL_S))
                continue
            self.queue.popleft()
            self.buffered -= len(data)
            if self.buffered < MAX_BUFFER:
                self.room.set()
            self.writer.write(data)
            await self.writer.drain()


class Conn:
    """One proxied TCP connection: two pumps; ends when either side ends (or on `abort`)."""

    def __init__(self, link: Link, client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter], rng: random.Random) -> None:
        self.link = link
        self.client_w = client[1]
        self.upstream_w = upstream[1]
        self.pumps = [Pump(link, "fwd", client[0], upstream[1], rng), Pump(link, "back", upstream[0], client[1], rng)]

    async def run(self) -> None:
        tasks = [asyncio.ensure_future(c) for p in self.pumps for c in (p.read_side(), p.write_side())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            # the first side that ended: let the other direction drain what it already holds
            await asyncio.wait([t for t in tasks if not t.done()], timeout=0.2)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.abort()

    def abort(self) -> None:
        for w in (self.client_w, self.upstream_w):
            if not w.transport.is_closing():
                w.transport.abort()


class Proxy:
    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.links: dict[str, Link] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def add_link(self, name: str, listen: tuple[str, int], upstream: tuple[str, int]) -> Link:
        link = Link(name, listen, upstream)
        link.server = await asyncio.start_server(lambda r, w: self._accept(link, r, w), listen[0], listen[1])
        self.links[name] = link
        return link

    def port(self, name: str) -> int:
        server = self.links[name].server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])

    def _accept(self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(link, reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                up = await asyncio.open_connection(*link.upstream)
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        conn = Conn(link, (reader, writer), up, self.rng)
        link.conns.add(conn)
        try:
            await conn.run()
        except (ConnectionError, OSError):
            conn.abort()
        finally:
            link.conns.discard(conn)

    def set(self, name: str, direction: str, values: dict[str, Any]) -> None:
        for d in DIRECTIONS if direction == "both" else (direction,):
            self.links[name].faults[d].update(values)

    def clear(self) -> None:
        for link in self.links.values():
            for d in DIRECTIONS:
                link.faults[d] = Faults()

    def reset(self, name: str) -> int:
        conns = list(self.links[name].conns)
        for c in conns:
            c.abort()
        return len(conns)

    def stats(self) -> dict[str, Any]:
        return {n: {"conns": len(lk.conns), "bytes": dict(lk.bytes), "reordered": lk.reordered,
                    "delayed_by_loss": lk.delayed_by_loss,
                    "faults": {d: dataclasses.asdict(f) for d, f in lk.faults.items() if not f.clean()}}
                for n, lk in sorted(self.links.items())}

    async def close(self) -> None:
        for link in self.links.values():
            if link.server is not None:
                link.server.close()
            for c in list(link.conns):
                c.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _handle(proxy: Proxy, cmd: dict[str, Any]) -> dict[str, Any]:
    op = cmd.get("op")
    if op == "link":
        await proxy.add_link(cmd["name"], tuple(cmd["listen"]), tuple(cmd["upstream"]))
        return {"ok": True, "port": proxy.port(cmd["name"])}
    if op == "set":
        values = {k: v for k, v in cmd.items() if k not in ("op", "name", "dir")}
        proxy.set(cmd["name"], cmd.get("dir", "both"), values)
        return {"ok": True}
    if op == "clear":
        proxy.clear()
        return {"ok": True}
    if op == "reset":
        return {"ok": True, "aborted": proxy.reset(cmd["name"])}
    if op == "stats":
        return {"ok": True, "links": proxy.stats()}
    return {"ok": False, "error": f"unknown op {op!r}"}


async def serve_stdio(seed: int) -> None:
    """Read commands from stdin until EOF or `quit`; answer each on stdout."""
    proxy = Proxy(seed)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            try:
                cmd = json.loads(line)
                if cmd.get("op") == "quit":
                    return
                answer = await _handle(proxy, cmd)
            except (ValueError, KeyError, TypeError, OSError) as exc:
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        await proxy.close()


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_stdio(seed))


if __name__ == "__main__":
    main()
