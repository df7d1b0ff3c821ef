"""The SDK: typed builders generated from the kind registry, nonce tracking, following a tx to its final
status (re-submitting by hash where a node does not know it), failover between nodes, and errors that
carry stable codes. The operations are sans-I/O, so the edge cases are driven with scripted answers;
the happy paths run against an in-process node with both the blocking and the async client."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client import ops
from client.aio import AsyncClient
from client.client import Client
from client.codegen import main as codegen_main
from client.errors import (
    BadResponse,
    TxDropped,
    TxFailed,
    TxRejected,
    TxTimeout,
    Unreachable,
    UsageError,
)
from client.wallet import Wallet, read_password
from protocol import api
from protocol.crypto import PrivateKey
from tests.conftest import ephemeral, load_home

HASH = "ab" * 32


def _json(status: int, doc: Any) -> ops.Response:
    return ops.Response(status, "application/json", json.dumps(doc).encode(), "http://n1")


def drive(op: ops.Op[Any], answers: Iterator[Any]) -> tuple[Any, list[Any]]:
    """Run an operation against scripted answers (a Response, or an exception to throw, per Request;
    the clock advances 1 s per NOW). Returns (result, the requests and sleeps it made)."""
    seen: list[Any] = []
    clock = 0.0
    item = next(op)
    try:
        while True:
            seen.append(item)
            if isinstance(item, ops.Request):
                answer = next(answers)
                item = op.throw(answer) if isinstance(answer, Exception) else op.send(answer)
            elif isinstance(item, ops.Sleep):
                item = op.send(None)
            else:
                clock += 1.0
                item = op.send(clock)
    except StopIteration as stop:
        return stop.value, seen


# ---- generated builders and surface ---------------------------------------------------------------

def test_the_generated_builders_are_current_with_the_kind_registry() -> None:
    assert codegen_main(["--check"]) == 0, "client/kinds.py is stale: run `python -m client.codegen`"


def test_the_blocking_and_the_async_client_have_the_same_public_surface() -> None:
    def surface(cls: type) -> dict[str, list[str]]:
        return {n: list(inspect.signature(m).parameters) for n, m in inspect.getmembers(cls, inspect.isfunction)
                if not n.startswith("_")}
    sync, aio = surface(Client), surface(AsyncClient)
    assert sync == aio
    assert "transfer" in sync and sync["transfer"][:2] == ["self", "wallet"] and "loan_apply" in sync
    assert all(inspect.iscoroutinefunction(getattr(AsyncClient, n)) for n in aio if n not in ("reset_nonces",))


def test_a_bad_field_is_a_usage_error_before_any_request_or_nonce() -> None:
    session = ops.Session(chain="c")
    w = Wallet(PrivateKey(bytes(32)))
    op = ops.send(session, w, "transfer", {"to": "nope", "asset": "CNY.BANKA", "amount": 5}, None)
    with pytest.raises(UsageError) as e:
        next(op)
    assert e.value.code == "bad_field" and "to must be 32 bytes" in e.value.message
    with pytest.raises(UsageError, match="amount"):
        next(ops.send(session, w, "transfer", {"to": w, "asset": "CNY.BANKA", "amount": "5"}, None))
    with pytest.raises(UsageError, match="no field"):
        next(ops.send(session, w, "transfer", {"to": w, "asset": "X", "amount": 5, "colour": "red"}, None))
    assert session.nonces == {}


# ---- following a tx (scripted) ---------------------------------------------------------------------

def test_follow_resubmits_a_tx_the_node_does_not_know_and_stops_at_dropped() -> None:
    answers = iter([_json(404, {"hash": HASH, "status": "unknown", "error": "not_found", "message": "?"}),
                    _json(200, {"accepted": 1, "rejected": 0, "results": [
                        {"hash": HASH, "status": "accepted", "accepted": True, "code": "accepted"}]}),
                    _json(200, {"hash": HASH, "status": "pending"}),
                    _json(200, {"hash": HASH, "status": "dropped", "reason": "sender_frozen"})])
    st, seen = drive(ops.follow(HASH, b"raw-tx", timeout=60), answers)
    assert st.status == "dropped" and st.reason == "sender_frozen"
    posts = [r for r in seen if isinstance(r, ops.Request) and r.method == "POST"]
    assert [p.body for p in posts] == [b"raw-tx"]  # re-submitted once, by its bytes
    session = ops.Session(nonces={b"k": 7})
    with pytest.raises(TxDropped) as e:
        ops.outcome(st, session, b"k")
    assert e.value.code == "dropped" and e.value.reason == "sender_frozen" and session.nonces == {}


def test_a_resubmission_answered_duplicate_or_already_committed_is_fine() -> None:
    for code in ("duplicate", "already_committed"):
        answers = iter([_json(404, {"hash": HASH, "status": "unknown"}),
                        _json(200, {"accepted": 0, "rejected": 1, "results": [
                            {"hash": HASH, "status": "rejected", "accepted": False, "code": code}]}),
                        _json(200, {"hash": HASH, "status": "committed", "height": 3, "index": 0, "receipt": {
                            "tx_hash": HASH, "status": "ok", "code": "ok", "message": "", "events": []}})])
        st, _ = drive(ops.follow(HASH, b"raw", timeout=60), answers)
        receipt = ops.outcome(st)
        assert (receipt.code, receipt.height, receipt.index) == ("ok", 3, 0)


def test_a_resubmission_refused_for_another_reason_raises_its_code() -> None:
    answers = iter([_json(404, {"hash": HASH, "status": "unknown"}),
                    _json(200, {"accepted": 0, "rejected": 1, "results": [
                        {"hash": HASH, "status": "rejected", "accepted": False, "code": "nonce_too_low"}]})])
    with pytest.raises(TxRejected) as e:
        drive(ops.follow(HASH, b"raw", timeout=60), answers)
    assert e.value.code == "nonce_too_low"


def test_a_tx_that_never_becomes_final_times_out_with_its_last_status() -> None:
    answers = iter([_json(200, {"hash": HASH, "status": "pending"})] * 10)
    with pytest.raises(TxTimeout) as e:
        drive(ops.follow(HASH, None, timeout=3), answers)
    assert e.value.code == "timeout" and e.value.last_status == "pending"


def test_a_failed_receipt_raises_tx_failed_with_the_receipt_code() -> None:
    st = api.convert({"hash": HASH, "status": "failed", "height": 9, "index": 2, "receipt": {
        "tx_hash": HASH, "status": "failed", "code": "insufficient_funds", "message": "short", "events": []}},
        api.TxStatus)
    with pytest.raises(TxFailed) as e:
        ops.outcome(st)
    assert e.value.code == "insufficient_funds" and e.value.receipt.height == 9


def test_an_answer_that_is_not_the_documented_shape_is_bad_response() -> None:
    garbage = ops.Response(200, "text/html", b"<html>proxy error</html>", "http://n1")
    with pytest.raises(BadResponse) as e:
        drive(ops.tx_status(HASH), iter([garbage]))
    assert e.value.code == "bad_response" and "http://n1" in e.value.message


# ---- against a node --------------------------------------------------------------------------------

@pytest.fixture
async def net(single_home: Path, start_node: Any) -> tuple[str, dict[str, Wallet]]:
    node = await start_node(ephemeral(load_home(single_home / "banka")))
    assert node.api is not None
    pw = read_password(single_home / "wallets" / "PASSWORD")
    wallets = {n: Wallet.load(single_home / "wallets" / f"{n}.json", pw) for n in ("smea", "smeb", "user01")}
    return node.api.url, wallets


async def test_the_async_client_tracks_nonces_over_several_txs_and_waits_for_each_receipt(net: Any) -> None:
    url, w = net
    async with AsyncClient(url) as c:
        sent = [await c.transfer(w["smea"], to=w["smeb"], asset="CNY.BANKA", amount=n) for n in (1, 2, 3)]
        assert [s.tx.nonce for s in sent] == [0, 1, 2]
        receipts = [await s.wait(20) for s in sent]
        assert [r.code for r in receipts] == ["ok"] * 3 and all(r.height for r in receipts)
        assert (await c.account(w["smea"].account)).nonce == 3


async def test_a_stale_nonce_is_refused_with_its_code_and_the_next_tx_asks_the_node_again(net: Any) -> None:
    url, w = net
    async with AsyncClient(url) as c:
        await (await c.transfer(w["smea"], to=w["smeb"], asset="CNY.BANKA", amount=1)).wait(20)
        c.session.nonces[w["smea"].public_key] = 0  # as if another program had used the key
        with pytest.raises(TxRejected) as e:
            await c.transfer(w["smea"], to=w["smeb"], asset="CNY.BANKA", amount=2)
        assert e.value.code == "nonce_too_low"
        again = await c.transfer(w["smea"], to=w["smeb"], asset="CNY.BANKA", amount=2)
        assert again.tx.nonce == 1 and (await again.wait(20)).ok


async def test_the_blocking_client_fails_over_past_a_dead_node_and_follows_there(net: Any, dead_urls: Any) -> None:
    url, w = net
    dead = dead_urls(1)[0]

    def run() -> api.Receipt:
        c = Client([dead, url], timeout=2)
        r = c.transfer(w["user01"], to=w["smea"], asset="CNY.BANKA", amount=7, memo="for the invoice").wait(20)
        assert c.url == url
        assert c.open_memo(w["smea"], r.tx_hash) == "for the invoice"
        with pytest.raises(UsageError) as e:
            c.open_memo(w["smeb"], r.tx_hash)
        assert e.value.code == "not_for_you"
        return r
    receipt = await asyncio.to_thread(run)
    assert receipt.ok and receipt.events_of("funds_moved")


async def test_a_signed_tx_no_node_has_seen_is_submitted_by_follow(net: Any) -> None:
    url, w = net
    async with AsyncClient(url) as c:
        status = await c.status()
        from client.txbuild import build, sign
        tx = sign(w["smeb"], build("transfer", {"to": w["smea"].public_key, "asset": "CNY.BANKA", "amount": 1},
                                   chain=status.chain_id, sender=w["smeb"].public_key, nonce=0))
        assert (await c.tx(tx.hash)).status == "unknown"
        final = await c.run(ops.follow(tx.hash_hex, tx.raw, 20))
        assert final.status == "committed" and final.receipt is not None and final.receipt.ok


def test_no_reachable_node_is_unreachable_naming_every_url(dead_urls: Any) -> None:
    urls = dead_urls(2)
    with pytest.raises(Unreachable) as e:
        Client(urls, timeout=1).status()
    assert e.value.code == "unreachable" and all(u in e.value.message for u in urls)
