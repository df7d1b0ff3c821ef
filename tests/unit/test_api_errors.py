"""The API answers every known bad input with a 4xx JSON {"error": code, "message": text}, never a 500."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from node.service import Node
from protocol.limits import SizeLimits
from tests.conftest import ephemeral, load_home


async def _call(node: Node, method: str, path: str, **kw: Any) -> tuple[int, Any, Any]:
    assert node.api is not None
    async with aiohttp.ClientSession() as s, s.request(method, node.api.url + path, **kw) as r:
        body = await r.read()
        doc = json.loads(body) if r.content_type == "application/json" else body
        return r.status, doc, r.headers


@pytest.fixture
async def node(single_home: Path, start_node: Any) -> Node:
    n: Node = await start_node(ephemeral(load_home(single_home / "banka"), max_body_bytes=BODY_LIMIT))
    return n


BODY_LIMIT = SizeLimits.derive(2000, 4 * 1024 * 1024, 1).api_body_min_bytes  # the smallest allowed
MSG = {"headers": {"Content-Type": "application/msgpack"}}
JSON = {"headers": {"Content-Type": "application/json"}}


@pytest.mark.parametrize(("method", "path", "kw", "status", "code"), [
    ("POST", "/txs", {"data": b"{nope", **JSON}, 400, "bad_json"),
    ("POST", "/txs", {"data": b'{"txs": "abc"}', **JSON}, 400, "bad_json"),
    ("POST", "/txs", {"data": b'{"txs": ["zz"]}', **JSON}, 400, "bad_hex"),
    ("POST", "/txs", {"data": b'{"txs": []}', **JSON}, 400, "bad_batch"),
    ("POST", "/txs", {"data": b"\xc1\xc1", **MSG}, 400, "bad_msgpack"),
    ("POST", "/txs", {"data": msgpack.packb({"tx": b"x", "sig": b"y"}), **MSG}, 400, "bad_msgpack"),  # unsorted
    ("POST", "/txs", {"data": msgpack.packb(7), **MSG}, 400, "bad_msgpack"),
    ("POST", "/txs", {"data": msgpack.packb([1, 2]), **MSG}, 400, "bad_batch"),
    ("POST", "/txs", {"data": b"", **MSG}, 400, "empty_body"),
    ("POST", "/txs", {"data": b"abc", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
    ("POST", "/txs", {"data": b"\x00" * (BODY_LIMIT + 1), **MSG}, 413, "body_too_large"),
    ("GET", "/txs/xyz", {}, 400, "bad_hash"),
    ("GET", "/txs/" + "ab" * 32, {}, 404, "not_found"),
    ("GET", "/blocks/abc", {}, 400, "bad_height"),
    ("GET", "/blocks/-1", {}, 400, "bad_height"),
    ("GET", "/blocks/99999999999999999999999", {}, 400, "bad_height"),
    ("GET", "/blocks/9999999999999999999", {}, 400, "bad_height"),  # 19 digits, above 2^63-1
    ("GET", "/blocks/\u00b2", {}, 400, "bad_height"),  # a digit to str.isdigit, not to int(): was a 500
    ("GET", "/blocks/1?format=xml", {}, 400, "bad_format"),
    ("GET", "/blocks?limit=\u00b2", {}, 400, "bad_limit"),
    ("GET", "/events?from_height=\u00b2", {}, 400, "bad_from_height"),
    ("GET", "/events?limit=\u00b3", {}, 400, "bad_limit"),
    ("GET", "/blocks/7", {}, 404, "not_found"),
    ("GET", "/blocks?limit=0", {}, 400, "bad_limit"),
    ("GET", "/accounts/xyz", {}, 400, "bad_field"),
    ("GET", "/accounts/" + "cd" * 32, {}, 404, "not_found"),
    ("GET", "/receivables/" + "cd" * 32, {}, 404, "not_found"),
    ("GET", "/loans/nothex", {}, 400, "bad_field"),
    ("GET", "/trace/" + "cd" * 32, {}, 404, "not_found"),
    ("GET", "/events?limit=lots", {}, 400, "bad_limit"),
    ("GET", "/events?from_height=-3", {}, 400, "bad_from_height"),
    ("GET", "/events?kind=transfer", {}, 400, "bad_field"),
    ("GET", "/events?kind=no_such_event", {}, 400, "bad_field"),
    ("GET", "/events?account=" + "cd" * 32 + "&kind=%C3%A9v%C3%A9nement", {}, 400, "bad_field"),
    ("GET", "/assets/NOPE.X", {}, 404, "not_found"),
    ("GET", "/no/such/route", {}, 404, "not_found"),
    ("POST", "/status", {}, 405, "method_not_allowed"),
    ("POST", "/admin/time-offset", {"data": b'{"offset_ms": 5}', **JSON}, 401, "unauthorized"),
])
async def test_a_bad_request_gets_a_4xx_json_error_with_a_stable_code(
        node: Node, method: str, path: str, kw: dict[str, Any], status: int, code: str) -> None:
    got, doc, _ = await _call(node, method, path, **kw)
    assert (got, doc["error"]) == (status, code), doc
    assert isinstance(doc["message"], str) and doc["message"]


async def test_not_found_names_what_was_asked_for_and_a_tx_kind_as_event_kind_says_what_it_emits(
        node: Node) -> None:
    status, doc, _ = await _call(node, "GET", "/assets/NOPE.X")
    assert (status, doc["message"]) == (404, "no asset NOPE.X")
    status, doc, _ = await _call(node, "GET", "/loans/" + "cd" * 32)
    assert (status, doc["message"]) == (404, "no loan " + "cd" * 32)
    status, doc, _ = await _call(node, "GET", "/events?kind=transfer")
    assert status == 400 and "funds_moved" in doc["message"]
    status, doc, _ = await _call(node, "GET", "/events?kind=participant_registered&limit=1")
    assert status == 200 and doc["events"][0]["kind"] == "participant_registered"


async def test_an_unexpected_exception_is_a_500_json_internal_error_and_the_node_keeps_serving(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    assert node.parts is not None

    def boom() -> dict[str, Any]:
        raise RuntimeError("kaput")

    monkeypatch.setattr(node.parts.status, "document", boom)
    for _ in range(5):  # the catch-all's own logging must not fail, nor flood the log
        status, doc, _ = await _call(node, "GET", "/status")
        assert (status, doc["error"]) == (500, "internal")
        assert "kaput" not in doc["message"]
    status, doc, _ = await _call(node, "GET", "/health")
    assert status == 200 and doc["ok"] is True
    log = node._log_stream.getvalue().splitlines()  # type: ignore[attr-defined]
    failures = [json.loads(line) for line in log if '"api_internal_error"' in line]
    assert len(failures) == 1 and "kaput" in failures[0]["error"] and failures[0]["path"] == "/status"


async def test_a_closed_intake_answers_503_with_retry_after(node: Node) -> None:
    assert node.parts is not None
    node.parts.health.accepting = False
    status, doc, headers = await _call(node, "POST", "/txs", data=b'{"txs": ["00"]}', **JSON)
    assert (status, doc["error"]) == (503, "unavailable")
    assert headers["Retry-After"] == "1"


async def test_time_offset_needs_the_token_and_a_valid_body(node: Node, single_home: Path) -> None:
    token = (single_home / "banka" / "admin.token").read_text().strip()
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    status, doc, _ = await _call(node, "POST", "/admin/time-offset", data=b'{"offset_ms": "x"}', headers=auth)
    assert (status, doc["error"]) == (400, "bad_field")
    status, doc, _ = await _call(node, "POST", "/admin/time-offset", data=b"[", headers=auth)
    assert (status, doc["error"]) == (400, "bad_json")
    bad = {**auth, "Authorization": "Bearer " + "0" * 64}
    status, doc, _ = await _call(node, "POST", "/admin/time-offset", data=b'{"offset_ms": 5}', headers=bad)
    assert (status, doc["error"]) == (401, "unauthorized")
    status, doc, _ = await _call(node, "POST", "/admin/time-offset", data=b'{"offset_ms": 86400000}', headers=auth)
    assert status == 200 and doc["offset_ms"] == 86_400_000
    assert node.parts is not None and node.parts.time_offset.offset_ms == 86_400_000


async def test_time_offset_is_refused_on_a_non_testnet_config(single_home: Path, start_node: Any) -> None:
    import dataclasses

    cfg = ephemeral(load_home(single_home / "banka"))
    cfg = dataclasses.replace(cfg, testnet=dataclasses.replace(cfg.testnet, allow_time_offset=False))
    node = await start_node(cfg)
    token = (single_home / "banka" / "admin.token").read_text().strip()
    status, doc, _ = await _call(node, "POST", "/admin/time-offset", data=b'{"offset_ms": 5}',
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert (status, doc["error"]) == (403, "forbidden")
