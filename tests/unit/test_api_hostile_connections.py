"""What aiohttp answers before any handler runs is the JSON error format too, and connections are held
within bounds: slow heads are closed after the idle timeout, at a connection cap the connection waiting
longest for its client makes room (all busy: a JSON 429/503 refusal), and keep-alive ends after a
request limit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from devtools.hostile import SlowClients
from node.service import Node
from tests import rawhttp
from tests.conftest import ephemeral, load_home
from tests.unit.test_api_hostile_bodies import MSG, NOT_STALLED_S, health_ms, log_events, port

CHUNKED = {**MSG, "Transfer-Encoding": "chunked"}


@pytest.fixture
async def node(single_home: Path, start_node: Any) -> Node:
    cfg = ephemeral(load_home(single_home / "banka"), idle_timeout_s=1, max_connections_per_address=50,
                    max_requests_per_connection=3)
    n: Node = await start_node(cfg)
    return n


@pytest.mark.parametrize(("raw", "code"), [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "line_too_long"),
    (b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", "line_too_long"),
    (b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(40)) + b"\r\n", "bad_http_message"),
    (b"G@T /health HTTP/1.1\r\nHost: x\r\n\r\n", "bad_method"),
    (b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", "bad_request_line"),
    (b"POST /txs HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n", "bad_http_message"),
    (b"POST /txs HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", "bad_http_message"),
    (b"POST /txs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "bad_http_message"),
    (rawhttp.request("POST", "/txs", CHUNKED) + b"5\r\n\x90\x90\x90\x90\x90\r\nZZ\r\n", "bad_http_message"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), "bad_method"),  # a TLS hello on the HTTP port
])
async def test_errors_aiohttp_answers_before_a_handler_are_json_with_a_stable_code(
        node: Node, raw: bytes, code: str) -> None:
    answer = await rawhttp.exchange(port(node), raw, wait=5, until_close=True)
    assert answer.status == 400, answer.raw[:200]
    doc = answer.json()
    assert doc["error"] == code and doc["message"] and "Traceback" not in doc["message"]
    assert answer.closed_by_node
    events = log_events(node)  # the node's log: JSON lines only, the client's fault at info level
    assert any(e["event"] == "api_bad_http" and e["level"] == "info" for e in events)
    assert not [e for e in events if e["level"] == "error"]


async def test_chunked_framing_that_breaks_while_a_handler_reads_the_body_is_a_400_at_once(node: Node) -> None:
    parts = [rawhttp.request("POST", "/txs", CHUNKED) + b"5\r\n\x90\x90\x90\x90\x90\r\n", b"ZZ\r\n"]
    answer = await rawhttp.exchange(port(node), parts, gap=0.2, wait=5)  # far below the 30 s body timeout
    assert (answer.status, answer.json()["error"]) == (400, "bad_body")
    assert "chunk" in answer.json()["message"]


async def test_slow_heads_are_closed_by_the_node_and_health_stays_fast(node: Node) -> None:
    slow = SlowClients("127.0.0.1", port(node))
    try:
        await slow.open(200)  # 50 fit under the per-address cap: each one more pushes out the stalest
        assert await health_ms(node) < NOT_STALLED_S * 1000  # as does the health probe, from the same address
        for _ in range(40):  # ~2 s: the idle timeout (1 s) closes every connection still dripping its head
            slow.drip()
            await asyncio.sleep(0.05)
            if not slow.still_open():
                break
        assert slow.still_open() == 0
        ends = slow.answers()
    finally:
        slow.close()
    assert len(ends) == 200
    for raw in (a for a in ends if a):  # most made room by pushing out the stalest: closed without an answer;
        answer = rawhttp.Answer(raw, True, 0)  # one that found only fresh connections was refused
        assert (answer.status, answer.json()["error"]) == (429, "too_many_connections")
    assert node.api is not None and len(node.api.guard.slots) == 0
    events = log_events(node)
    assert not [e for e in events if e["level"] == "error"]


async def test_a_connection_is_closed_after_its_last_allowed_request(node: Node) -> None:
    four = rawhttp.request("GET", "/health") * 4
    answer = await rawhttp.exchange(port(node), four, wait=5, until_close=True)
    heads = [h for h in answer.raw.split(b"HTTP/1.1 ")[1:]]
    assert len(heads) == 3 and all(h.startswith(b"200") for h in heads)
    assert b"Connection: close" in heads[2] and answer.closed_by_node


@pytest.mark.parametrize(("caps", "sources", "status"), [
    ({"max_connections": 2}, ("127.0.0.2", "127.0.0.3", "127.0.0.1"), 503),  # the node's cap
    ({"max_connections_per_address": 2}, ("127.0.0.1", "127.0.0.1", "127.0.0.1"), 429),  # the address's cap
])
async def test_when_every_connection_is_busy_a_newcomer_gets_a_json_refusal_and_the_node_keeps_serving(
        single_home: Path, start_node: Any, monkeypatch: pytest.MonkeyPatch, caps: dict[str, int],
        sources: tuple[str, str, str], status: int) -> None:
    node = await start_node(ephemeral(load_home(single_home / "banka"), **caps))
    assert node.parts is not None
    release = asyncio.Event()

    async def busy_mempool(raws: list[bytes], source: object, **_: object) -> list[object]:
        await release.wait()
        return []

    monkeypatch.setattr(node.parts.mempool, "add_many", busy_mempool)
    post = rawhttp.request("POST", "/txs", {"Content-Type": "application/json"}, b'{"txs": ["00"]}')
    busy = [asyncio.ensure_future(rawhttp.exchange(port(node), post, wait=5, source=src)) for src in sources[:2]]
    await asyncio.sleep(0.3)  # both in their handler: nothing idle to make room
    refused = await rawhttp.exchange(port(node), rawhttp.request("GET", "/health"), wait=5, source=sources[2])
    assert (refused.status, refused.json()["error"]) == (status, "too_many_connections")
    assert refused.headers["retry-after"] == "1" and refused.headers["connection"] == "close"
    release.set()
    assert [a.status for a in await asyncio.gather(*busy)] == [200, 200]
    assert await health_ms(node) < NOT_STALLED_S * 1000
    assert any(e["event"] == "api_connection_refused" for e in log_events(node))


async def test_a_body_streaming_in_is_not_pushed_out_by_a_flood_of_slow_heads_from_its_address(
        single_home: Path, start_node: Any) -> None:
    node = await start_node(ephemeral(load_home(single_home / "banka"), max_connections_per_address=5))
    parts = [rawhttp.request("POST", "/txs", CHUNKED)] + [b"4000\r\n" + b"\x90" * 0x4000 + b"\r\n"] * 20 + [b"0\r\n\r\n"]
    upload = asyncio.ensure_future(rawhttp.exchange(port(node), parts, gap=0.05, wait=10))
    slow = SlowClients("127.0.0.1", port(node))
    try:
        for _ in range(10):  # 50 slow heads while the body streams in: each pushes out the stalest one
            await slow.open(5)
            await asyncio.sleep(0.1)
        answer = await upload
    finally:
        slow.close()
    assert (answer.status, answer.json()["error"]) == (400, "bad_msgpack")  # read to its end and decoded
