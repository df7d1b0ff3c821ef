"""Raw HTTP/1.1 over asyncio streams, for tests that must send what no HTTP client library would.

Rule: every call is bounded by its `wait`; every socket opened here is closed before the call returns.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    raw: bytes
    closed_by_node: bool  # the node closed (or reset) the connection within the wait
    seconds: float  # from the last byte sent to the end of the answer (or of the wait)

    @property
    def status(self) -> int:
        line = self.raw.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 and line[1].isdigit() else 0

    @property
    def headers(self) -> dict[str, str]:
        head = self.raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head)}

    @property
    def body(self) -> bytes:
        return self.raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in self.raw else b""

    def json(self) -> Any:
        assert self.headers.get("content-type", "").startswith("application/json"), self.raw[:300]
        n = int(self.headers.get("content-length", len(self.body)))
        return json.loads(self.body[:n])


async def exchange(port: int, parts: bytes | list[bytes], *, gap: float = 0.0, wait: float = 5.0,
                   until_close: bool = False, source: str = "127.0.0.1") -> Answer:
    """Send `parts` (pausing `gap` between them), then read one answer (or, with `until_close`, until
    the node closes the connection); stop after `wait` seconds. `source`: the local address to connect
    from (any of 127.0.0.0/8 on Linux), so a test can be several clients."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        for i, part in enumerate([parts] if isinstance(parts, bytes) else parts):
            if i and gap:
                await asyncio.sleep(gap)
            writer.write(part)
            try:
                await writer.drain()
            except ConnectionError:
                break
        return await _read(reader, wait, until_close)
    finally:
        writer.transport.abort()


async def _read(reader: asyncio.StreamReader, wait: float, until_close: bool) -> Answer:
    t0 = time.monotonic()
    raw = b""
    closed = False
    try:
        async with asyncio.timeout(wait):
            while True:
                try:
                    chunk = await reader.read(65536)
                except ConnectionError:
                    chunk = b""
                if not chunk:
                    closed = True
                    break
                raw += chunk
                if not until_close and _complete(raw):
                    break
    except TimeoutError:
        pass
    return Answer(raw, closed, time.monotonic() - t0)


def _complete(raw: bytes) -> bool:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return len(body) >= int(v.strip())
    return False


def request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    h = {"Host": "node", **(headers or {})}
    if body and "Transfer-Encoding" not in h:
        h.setdefault("Content-Length", str(len(body)))
    return (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n").encode() + body
