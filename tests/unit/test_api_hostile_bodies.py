"""Hostile request bodies get a JSON 4xx at once and cost the node's event loop only bounded work: bombs,
announced and streamed oversize, nesting, huge integers, broken and slow bodies. "At once" is checked
only as "not stalled": the node answers, and /health answers, within generous bounds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devtools.hostile import gzip_bomb, nested_msgpack
from node.api.bodies import BODIES, SMALL_BODY, check_msgpack_shape, loads_json
from node.errors import ApiError
from node.service import Node
from protocol.limits import SizeLimits
from tests import rawhttp
from tests.conftest import ephemeral, load_home

BODY_LIMIT = SizeLimits.derive(2000, 4 * 1024 * 1024, 1).api_body_min_bytes  # the smallest allowed
MSG = {"Content-Type": "application/msgpack"}
JSON = {"Content-Type": "application/json"}
NOT_STALLED_S = 1.0  # /health answers within this while a hostile request is in flight


@pytest.fixture
async def node(single_home: Path, start_node: Any) -> Node:
    n: Node = await start_node(ephemeral(load_home(single_home / "banka"), body_timeout_s=1))
    return n


@pytest.fixture
async def small(single_home: Path, start_node: Any) -> Node:
    n: Node = await start_node(ephemeral(load_home(single_home / "banka"), max_body_bytes=BODY_LIMIT))
    return n


def port(node: Node) -> int:
    assert node.api is not None and node.api.port is not None
    return node.api.port


async def health_ms(node: Node) -> float:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port(node)}/health") as r:
        assert r.status == 200
    return (loop.time() - t0) * 1000


def log_events(node: Node) -> list[dict[str, Any]]:
    return [json.loads(line) for line in node._log_stream.getvalue().splitlines()]  # type: ignore[attr-defined]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZIP, identity"])
async def test_a_compressed_body_is_refused_415_before_it_is_read_and_health_is_unaffected(
        node: Node, encoding: str) -> None:
    bomb = gzip_bomb(1024)  # 1 MiB that would inflate to 1 GiB
    req = rawhttp.request("POST", "/txs", {**MSG, "Content-Encoding": encoding}, bomb)
    answer, ms = await asyncio.gather(rawhttp.exchange(port(node), req, wait=5), health_ms(node))
    assert answer.status == 415 and answer.json()["error"] == "unsupported_encoding"
    assert answer.headers["connection"] == "close"
    assert ms < NOT_STALLED_S * 1000
    assert not [e for e in log_events(node) if e["event"] == "api_internal_error"]


async def test_a_body_announced_over_the_limit_is_refused_413_without_waiting_for_it(small: Node) -> None:
    head = rawhttp.request("POST", "/txs", {**MSG, "Content-Length": str(10**9)})
    answer = await rawhttp.exchange(port(small), head, wait=5)
    assert answer.status == 413 and answer.json()["error"] == "body_too_large"
    assert answer.headers["connection"] == "close"


async def _chunked(body: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(body), 16 * 1024):
        yield body[i:i + 16 * 1024]


async def test_a_chunked_body_is_counted_while_it_streams_413_one_byte_over_the_limit(small: Node) -> None:
    url = f"http://127.0.0.1:{port(small)}/txs"
    async with aiohttp.ClientSession() as s:
        async with s.post(url, data=_chunked(b"\x91" * (BODY_LIMIT + 1)), headers=MSG) as r:
            assert r.request_info.headers.get("Transfer-Encoding") == "chunked"
            assert (r.status, (await r.json())["error"]) == (413, "body_too_large")
        async with s.post(url, data=_chunked(b"\x91" * BODY_LIMIT), headers=MSG) as r:  # at the limit: read, decoded
            assert (r.status, (await r.json())["error"]) == (400, "bad_msgpack")


async def test_an_8_mb_nested_msgpack_body_is_a_400_and_health_answers_meanwhile(node: Node) -> None:
    body = nested_msgpack(8 * 1024 * 1024 - 64)
    deep = b"\x91" * (8 * 1024 * 1024 - 64) + b"\xc0"
    url = f"http://127.0.0.1:{port(node)}/txs"
    async with aiohttp.ClientSession() as s:

        async def post(data: bytes) -> tuple[int, str]:
            async with s.post(url, data=data, headers=MSG) as r:
                return r.status, (await r.json())["error"]

        results = await asyncio.gather(post(body), post(deep), post(body), post(deep), health_ms(node))
    assert results[:4] == [(400, "bad_msgpack")] * 4
    assert results[4] < NOT_STALLED_S * 1000


@pytest.mark.parametrize(("body", "why"), [
    (b'{"txs": [' + b"1" * 5000 + b"]}", "a 5,000-digit integer"),
    (b"[" * 100_000 + b"]" * 100_000, "nesting 100,000 deep"),
    (b'{"txs": [' + b"[]," * 100_000 + b"[]]}", "100,000 empty arrays"),
    (b'{"txs": ["\xff\xfe"]}', "invalid UTF-8"),
    (b'{"txs": [' + b'"00",' * 20_000 + b'"00"]}', "more items than a batch"),
])
async def test_hostile_json_is_a_400_bad_json_never_a_500(node: Node, body: bytes, why: str) -> None:
    answer = await rawhttp.exchange(port(node), rawhttp.request("POST", "/txs", JSON, body), wait=5)
    assert (answer.status, answer.json()["error"]) == (400, "bad_json"), why


async def test_a_nested_body_on_the_time_offset_route_is_a_400(node: Node, single_home: Path) -> None:
    token = (single_home / "banka" / "admin.token").read_text().strip()
    headers = {**JSON, "Authorization": f"Bearer {token}"}
    for body in (b'{"offset_ms": [[[[1]]]]}', b'{"offset_ms": ' + b"9" * 5000 + b"}", b"[" * 50_000):
        answer = await rawhttp.exchange(port(node), rawhttp.request("POST", "/admin/time-offset", headers, body))
        assert (answer.status, answer.json()["error"]) == (400, "bad_json")


async def test_a_body_that_stops_arriving_is_a_408_after_the_body_timeout(node: Node) -> None:
    head = rawhttp.request("POST", "/txs", {**MSG, "Content-Length": "1000"})
    answer = await rawhttp.exchange(port(node), head + b"\x91" * 10, wait=5)
    assert (answer.status, answer.json()["error"]) == (408, "body_timeout")
    assert answer.headers["connection"] == "close"


async def test_a_large_body_that_stops_arriving_is_a_408_and_frees_its_slot(node: Node) -> None:
    head = rawhttp.request("POST", "/txs", {**MSG, "Content-Length": str(4 * SMALL_BODY)})
    assert node.api is not None
    slots = node.api.app[BODIES].large_slots
    answers = await asyncio.gather(*(rawhttp.exchange(port(node), head + b"\x91" * 10, wait=5)
                                     for _ in range(slots + 2)))
    assert {(a.status, a.json()["error"]) for a in answers} <= {(408, "body_timeout"), (503, "busy")}
    body = b"\x90" * (2 * SMALL_BODY)  # every slot was given back: a whole large body is read and decoded
    answer = await rawhttp.exchange(port(node), rawhttp.request("POST", "/txs", MSG, body), wait=5)
    assert (answer.status, answer.json()["error"]) == (400, "bad_msgpack")


def test_the_msgpack_walk_bounds_depth_and_items_at_their_edges() -> None:
    one_tx = b"\x82\xa3sig\xc4\x01x\xa2tx\xc4\x01y"  # {sig: b"x", tx: b"y"}
    batch = b"\x92" + one_tx * 2
    check_msgpack_shape(batch, max_depth=3, max_items=10, max_str=16, max_bin=16)  # 2 x (the map + 2 keys + 2 values)
    with pytest.raises(ApiError, match="more than 9 values"):
        check_msgpack_shape(batch, max_depth=3, max_items=9, max_str=16, max_bin=16)
    check_msgpack_shape(b"\x91\x91\x91\xc0", max_depth=3, max_items=9, max_str=16, max_bin=16)
    with pytest.raises(ApiError, match="deeper than 3"):
        check_msgpack_shape(b"\x91\x91\x91\x91\xc0", max_depth=3, max_items=9, max_str=16, max_bin=16)
    for bad, why in ((b"\x92\xc0", "truncated"), (b"\xc0\xc0", "trailing"), (b"\xc1", "msgpack")):
        with pytest.raises(ApiError, match=why) as err:
            check_msgpack_shape(bad, max_depth=3, max_items=9, max_str=16, max_bin=16)
        assert err.value.code == "bad_msgpack"


def test_the_json_counts_bound_containers_items_and_digits_at_their_edges() -> None:
    assert loads_json(b'{"a": [1, 2]}', max_containers=2, max_items=2) == {"a": [1, 2]}
    with pytest.raises(ApiError, match="more than 1 arrays"):
        loads_json(b'{"a": [1]}', max_containers=1, max_items=9)
    with pytest.raises(ApiError, match="more than 2 items"):
        loads_json(b"[1, 2, 3]", max_containers=1, max_items=2)
    assert loads_json(b"-" + b"9" * 40, max_containers=0, max_items=1) == -int("9" * 40)
    with pytest.raises(ApiError, match="more than 40 digits"):
        loads_json(b"9" * 41, max_containers=0, max_items=1)


async def test_clients_that_hang_up_in_the_middle_of_a_body_leave_no_error_in_the_log(node: Node) -> None:
    async def hang_up(size: int, pause: float) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port(node))
        writer.write(rawhttp.request("POST", "/txs", {**MSG, "Content-Length": str(2 * size)}) + b"\x91" * size)
        if pause:
            await asyncio.sleep(pause)  # while the handler reads; without a pause: before it starts
        writer.transport.abort()

    await asyncio.gather(*(hang_up(size, i * 0.002) for i in range(25) for size in (1000, 4 * SMALL_BODY)))
    await asyncio.sleep(0.3)
    assert await health_ms(node) < NOT_STALLED_S * 1000
    assert not [e for e in log_events(node) if e["level"] == "error"]
