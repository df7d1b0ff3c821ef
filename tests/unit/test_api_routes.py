"""The API's happy paths against an in-process node: status, tx submission and lookup, mempool-full
backpressure, account proofs, blocks, metrics, OpenAPI coverage and the web page."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.errors import ProofError
from client.light import verify_account
from client.txbuild import build_body, sign
from client.wallet import Wallet, read_password
from devtools.load_book import block_tx_hashes
from node.api import openapi
from node.chain import HEIGHT_WAITERS
from node.service import Node
from protocol import codec
from tests.conftest import ephemeral, load_home


async def _call(node: Node, method: str, path: str, **kw: Any) -> tuple[int, Any, Any]:
    assert node.api is not None
    async with aiohttp.ClientSession() as s, s.request(method, node.api.url + path, **kw) as r:
        body = await r.read()
        doc = json.loads(body) if r.content_type == "application/json" else body
        return r.status, doc, r.headers


def _wallets(home: Path) -> tuple[Wallet, Wallet]:
    pw = read_password(home.parent / "wallets" / "PASSWORD")
    return (Wallet.load(home.parent / "wallets" / "user01.json", pw),
            Wallet.load(home.parent / "wallets" / "user02.json", pw))


def _transfer(w: Wallet, to: Wallet, nonce: int, amount: int = 100) -> Any:
    return sign(w, build_body("transfer", {"to": to.account, "asset": "CNY.BANKA", "amount": str(amount)},
                              chain="smeledger-testnet", sender=w.public_key, nonce=nonce))


@pytest.fixture
async def node(single_home: Path, start_node: Any) -> Node:
    n: Node = await start_node(ephemeral(load_home(single_home / "banka")))
    return n


async def test_status_has_every_field_design_section_6_names(node: Node) -> None:
    status, doc, _ = await _call(node, "GET", "/status")
    assert status == 200
    for k in ("node_id", "chain_id", "height", "view", "primary", "last_block_hash", "state_root", "peers",
              "mempool_size", "syncing"):
        assert k in doc
    assert doc["chain_id"] == "smeledger-testnet" and doc["height"] >= 0 and doc["peers"] == 0


async def test_a_signed_tx_posted_as_msgpack_is_accepted_and_then_pending(node: Node, single_home: Path) -> None:
    a, b = _wallets(single_home / "banka")
    tx = _transfer(a, b, 0)
    status, doc, _ = await _call(node, "POST", "/txs", data=tx.raw, headers={"Content-Type": "application/msgpack"})
    assert status == 200 and doc["results"][0] == {"hash": tx.hash_hex, "status": "accepted", "accepted": True,
                                                   "code": "accepted", "message": ""}
    status, doc, _ = await _call(node, "GET", f"/txs/{tx.hash_hex}")
    assert status == 200 and doc["status"] in ("pending", "committed")  # one validator may commit at once


async def test_a_json_batch_answers_each_tx_in_order(node: Node, single_home: Path) -> None:
    a, b = _wallets(single_home / "banka")
    good, dup = _transfer(a, b, 0), _transfer(a, b, 0, amount=5)
    forged = codec.encode({"sig": b"\x01" * 64, "tx": _transfer(a, b, 1).body_bytes})
    body = json.dumps({"txs": [good.raw.hex(), dup.raw.hex(), forged.hex()]})
    status, doc, _ = await _call(node, "POST", "/txs", data=body, headers={"Content-Type": "application/json"})
    assert status == 200
    assert [r["code"] for r in doc["results"]] == ["accepted", "nonce_conflict", "bad_signature"]
    assert (doc["accepted"], doc["rejected"]) == (1, 2)


async def test_a_msgpack_list_is_a_batch(node: Node, single_home: Path) -> None:
    a, b = _wallets(single_home / "banka")
    txs = [_transfer(a, b, n) for n in range(3)]
    body = codec.encode([codec.decode(t.raw) for t in txs])
    status, doc, _ = await _call(node, "POST", "/txs", data=body, headers={"Content-Type": "application/msgpack"})
    assert status == 200 and doc["accepted"] == 3
    assert [r["hash"] for r in doc["results"]] == [t.hash_hex for t in txs]


async def _committed(node: Node, tx_hash: str) -> dict[str, Any]:
    """The tx's status once it is committed or failed (bounded: 200 polls of 50 ms)."""
    for _ in range(200):
        _s, doc, _h = await _call(node, "GET", f"/txs/{tx_hash}")
        if doc.get("status") in ("committed", "failed"):
            return doc
        await asyncio.sleep(0.05)
    raise AssertionError(f"tx {tx_hash} was not committed: {doc}")


async def test_a_correctly_signed_tx_failing_its_static_checks_is_refused_at_post_and_costs_no_nonce(
        node: Node, single_home: Path) -> None:
    a, b = _wallets(single_home / "banka")
    base = {"chain": "smeledger-testnet", "kind": "transfer", "from": a.public_key, "nonce": 0,
            "to": bytes.fromhex(b.account), "asset": "CNY.BANKA", "amount": 5}
    malformed = [sign(a, {**base, "amount": 0}), sign(a, {**base, "memo": b"m" * 1025}),
                 sign(a, {**base, "asset": "cny"}), sign(a, {**base, "extra": 1})]
    good = _transfer(a, b, 0, amount=5)
    batch = codec.encode([codec.decode(t.raw) for t in [*malformed, good]])
    status, doc, _ = await _call(node, "POST", "/txs", data=batch, headers={"Content-Type": "application/msgpack"})
    assert status == 200
    assert [r["code"] for r in doc["results"]] == ["bad_field", "bad_field", "bad_asset", "bad_field", "accepted"]
    assert all("field" in r["message"] or "asset" in r["message"] for r in doc["results"][:4])
    assert (await _committed(node, good.hash_hex))["status"] == "committed"
    status, acct, _ = await _call(node, "GET", f"/accounts/{a.account}")
    assert status == 200 and acct["nonce"] == 1
    for tx in malformed:
        status, got, _ = await _call(node, "GET", f"/txs/{tx.hash_hex}")
        assert status == 404 and got["status"] == "unknown"


async def test_a_full_mempool_answers_503_with_retry_after(single_home: Path, start_node: Any) -> None:
    cfg = ephemeral(load_home(single_home / "banka"))
    cfg = dataclasses.replace(cfg, mempool=dataclasses.replace(cfg.mempool, max_txs=1))
    node = await start_node(cfg)
    a, b = _wallets(single_home / "banka")
    body = codec.encode([codec.decode(_transfer(a, b, n).raw) for n in range(2)])
    status, doc, headers = await _call(node, "POST", "/txs", data=body, headers={"Content-Type": "application/msgpack"})
    assert status == 503 and headers["Retry-After"] == "1"
    assert doc["error"] == "mempool_full"
    assert [r["code"] for r in doc["results"]] == ["accepted", "mempool_full"]


async def test_an_account_proof_verifies_against_the_named_state_root(node: Node, single_home: Path) -> None:
    a, _b = _wallets(single_home / "banka")
    status, doc, _ = await _call(node, "GET", f"/accounts/{a.account}?proof=1")
    assert status == 200 and doc["balances"]["CNY.BANKA"] > 0
    root = bytes.fromhex(doc["proof"]["state_root"])
    proven = verify_account(doc, bytes.fromhex(a.account), root)  # every field has a proof under the named root
    assert proven["balances"] == doc["balances"] and proven["roles"] == doc["roles"]
    _s, st, _h = await _call(node, "GET", "/status")
    assert doc["proof"]["state_root"] == st["state_root"] and doc["proof"]["height"] == st["height"]
    assert doc["proof"]["header_height"] == doc["proof"]["height"] + 2  # pipelined: block h+2 certifies it
    with pytest.raises(ProofError):
        verify_account(doc, bytes.fromhex(a.account), b"\x00" * 32)


async def test_block_zero_is_the_genesis_and_lists_show_it(node: Node) -> None:
    status, doc, _ = await _call(node, "GET", "/blocks/0")
    assert status == 200 and doc["genesis"] is True and doc["hash"] == node.parts.genesis.hash.hex()  # type: ignore[union-attr]
    status, doc, _ = await _call(node, "GET", "/blocks?limit=5")
    assert status == 200 and doc["blocks"][0]["height"] == doc["head"]
    if doc["head"] < 5:
        assert doc["blocks"][-1]["genesis"] is True


async def test_a_follower_waiting_for_the_next_block_gets_it_once_stored_and_a_404_when_none_comes(
        node: Node, single_home: Path) -> None:
    assert node.parts is not None
    store = node.parts.store
    nxt = store.head.height + 1
    status, _, _ = await _call(node, "GET", f"/blocks/{nxt + 5}?wait_ms=1")
    assert status == 404  # no block came within the wait
    waiting = asyncio.create_task(_call(node, "GET", f"/blocks/{nxt}?format=msgpack&wait_ms=5000"))
    for _ in range(1000):  # until the request waits for the block
        assert not waiting.done(), waiting.result()
        if store._height_waiters:
            break
        await asyncio.sleep(0.01)
    assert store._height_waiters == 1
    a, b = _wallets(single_home / "banka")
    tx = _transfer(a, b, 0)
    await _call(node, "POST", "/txs", data=tx.raw, headers={"Content-Type": "application/msgpack"})
    status, body, _ = await waiting
    assert status == 200 and block_tx_hashes(body)[1] == [tx.hash]
    for bad in ("-1", "5001", "soon"):
        status, doc, _ = await _call(node, "GET", f"/blocks/{nxt}?wait_ms={bad}")
        assert status == 400 and doc["error"] == "bad_wait_ms"


async def test_readers_past_the_waiter_bound_are_answered_at_once(node: Node) -> None:
    assert node.parts is not None
    store = node.parts.store
    far = store.head.height + 1000
    waiters = [asyncio.create_task(store.wait_for_height(far, 10)) for _ in range(HEIGHT_WAITERS)]
    await asyncio.sleep(0)
    assert store._height_waiters == HEIGHT_WAITERS
    assert await store.wait_for_height(far, 10) is False  # the bound is full: no wait
    assert await store.wait_for_height(store.head.height, 10) is True  # a stored height never waits
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert store._height_waiters == 0


async def test_metrics_are_prometheus_text_from_this_nodes_registry(node: Node) -> None:
    status, body, headers = await _call(node, "GET", "/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    for name in ("smeledger_height", "smeledger_peers", "smeledger_mempool_txs"):
        assert name in text
    assert 'node="banka"' in text


async def test_openapi_documents_every_route_with_an_error_schema(node: Node) -> None:
    status, doc, _ = await _call(node, "GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    assert node.api is not None
    served = {(r.method.lower(), r.resource.canonical) for r in node.api.app.router.routes()  # type: ignore[union-attr]
              if r.method != "HEAD"}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented
    assert documented == {(r.method, r.path) for r in openapi.ROUTES}
    for ops in doc["paths"].values():
        for op in ops.values():
            assert op["responses"]["500"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}


async def test_the_web_page_is_self_contained_html(node: Node) -> None:
    status, body, headers = await _call(node, "GET", "/")
    html = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "/status" in html and "/blocks" in html
    assert "http://" not in html and "https://" not in html  # no CDN


async def test_events_list_the_genesis_state_changes(node: Node, single_home: Path) -> None:
    a, _b = _wallets(single_home / "banka")
    status, doc, _ = await _call(node, "GET", f"/events?account={a.account}&limit=5")
    assert status == 200 and doc["events"]
    assert all(a.account in e["accounts"] for e in doc["events"])


async def test_every_metric_the_alert_rules_use_is_exported(node: Node) -> None:
    import re

    rules = (Path(__file__).resolve().parents[2] / "configs" / "prometheus" / "alerts.yml").read_text()
    used = {n.removesuffix("_total") for n in re.findall(r"\b(smeledger_[a-z0-9_]+)", rules)}
    _status, body, _h = await _call(node, "GET", "/metrics")
    exported = {n.removesuffix("_total") for n in re.findall(r"^# TYPE (smeledger_[a-z0-9_]+) ", body.decode(), re.M)}
    assert used <= exported, sorted(used - exported)
