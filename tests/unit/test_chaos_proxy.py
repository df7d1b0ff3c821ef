"""The chaos link proxy (devtools/chaos/proxy.py): a TCP stream stays whole and in order under delay,
jitter, loss and bandwidth caps; a cut holds bytes until it heals; reordering swaps whole frames only;
frames are found whatever the chunking."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtools.chaos.proxy import Link, Proxy, Pump
from protocol import framing


@pytest.fixture
async def link() -> AsyncIterator[tuple[Proxy, asyncio.StreamReader, asyncio.StreamWriter, asyncio.Queue[bytes]]]:
    """client -> proxy 'x' -> sink; what the sink reads lands in the queue."""
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while chunk := await r.read(65536):
            got.put_nowait(chunk)
        w.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    proxy = Proxy(seed=3)
    await proxy.add_link("x", ("127.0.0.1", 0), ("127.0.0.1", server.sockets[0].getsockname()[1]))
    r, w = await asyncio.open_connection("127.0.0.1", proxy.port("x"))
    try:
        yield proxy, r, w, got
    finally:
        w.close()
        await proxy.close()
        server.close()


async def receive(got: asyncio.Queue[bytes], n: int, timeout: float = 20.0) -> bytes:
    out = b""
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out += await got.get()
    return out


async def test_delay_jitter_loss_and_a_bandwidth_cap_keep_the_stream_whole_and_in_order(link) -> None:  # type: ignore[no-untyped-def]
    proxy, _r, w, got = link
    proxy.set("x", "fwd", {"delay_ms": 20, "jitter_ms": 30, "loss": 0.3, "kbps": 4000})
    data = random.Random(1).randbytes(300_000)
    for i in range(0, len(data), 7_000):
        w.write(data[i:i + 7_000])
        await w.drain()
        await asyncio.sleep(0.001)
    assert await receive(got, len(data)) == data
    assert proxy.links["x"].delayed_by_loss > 0


async def test_a_cut_holds_the_bytes_and_they_flow_when_it_heals(link) -> None:  # type: ignore[no-untyped-def]
    proxy, _r, w, got = link
    proxy.set("x", "both", {"cut": True})
    w.write(b"held back")
    await w.drain()
    await asyncio.sleep(0.3)
    assert got.empty()
    proxy.set("x", "both", {"cut": False})
    assert await receive(got, 9) == b"held back"


async def test_reordering_swaps_whole_frames(link) -> None:  # type: ignore[no-untyped-def]
    proxy, _r, w, got = link
    proxy.set("x", "fwd", {"reorder": 1.0})
    frames = [framing.frame(bytes([i]) * (10 + i)) for i in range(4)]
    w.write(b"".join(frames))
    await w.drain()
    out = await receive(got, sum(map(len, frames)))
    assert out == frames[1] + frames[0] + frames[3] + frames[2]
    assert proxy.links["x"].reordered == 2


@given(st.lists(st.binary(max_size=40), max_size=8), st.lists(st.integers(1, 30), min_size=1, max_size=20))
def test_frames_are_found_whatever_the_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(framing.frame(p) for p in payloads)
    pump = Pump(Link("x", ("", 0), ("", 0)), "fwd", None, None, random.Random(0))  # type: ignore[arg-type]
    pieces: list[tuple[bytes, bool]] = []
    i = k = 0
    while i < len(stream):
        n = cuts[k % len(cuts)]
        pieces += pump._pieces(stream[i:i + n])
        i, k = i + n, k + 1
    assert b"".join(p for p, _ in pieces) == stream
    whole = [p for p, ok in pieces if ok]
    assert all(p in [framing.frame(x) for x in payloads] for p in whole)
