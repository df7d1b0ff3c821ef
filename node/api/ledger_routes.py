"""Ledger query routes: accounts (with Merkle proofs), assets, receivables, loans, campaigns, credit,
events and fund-flow traces, answered by the pure functions of `protocol.ledger.query`.

Rule: every query reads one consistent storage snapshot and closes it; ids are validated by the ledger
(`bad_field` -> 400, `not_found` -> 404). Proofs are taken under the state store lock together with the
height and root they prove against, so they always verify against the `state_root` they name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from node.api.keys import deps, parse_uint, read_off_loop
from protocol.ledger import keys as lkeys
from protocol.ledger import query
from protocol.ledger.model import jsonable
from protocol.state import StateReader

MAX_PROOF_KEYS = 64
MAX_EVENTS_LIMIT = 1000


def _reader(request: web.Request) -> Any:
    return deps(request).store.state.reader(snapshot=True)


async def _run(request: web.Request, fn: Callable[[StateReader], dict[str, Any]]) -> web.Response:
    def read() -> dict[str, Any]:
        with _reader(request) as r:
            return fn(r)
    return web.json_response(await read_off_loop(request, read))


def _proofs(request: web.Request, pid: bytes, doc: dict[str, Any]) -> dict[str, Any]:
    store = deps(request).store
    wanted = [lkeys.participant(pid), lkeys.nonce(pid)]
    wanted += [lkeys.balance(pid, a) for a in sorted(doc.get("balances", {}))][: MAX_PROOF_KEYS - 2]
    with store.state.lock:
        height = store.blocks.height()
        root = store.state.root()
        items = [jsonable(store.state.proof(k).to_value()) for k in wanted]
    return {"height": height, "state_root": root.hex(), "proofs": items,
            "note": "state_root is the root after `height`; block height+1 carries it in its header"}


async def account(request: web.Request) -> web.Response:
    aid = request.match_info["id"]
    with_proof = request.query.get("proof") in ("1", "true")

    def read() -> dict[str, Any]:
        with _reader(request) as r:
            doc = query.account(r, aid)
        if with_proof:
            doc["proof"] = _proofs(request, query.to_id(aid), doc)
        return doc
    return web.json_response(await read_off_loop(request, read))


def _one(fn: Callable[[StateReader, str], dict[str, Any]]) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        key = request.match_info["id"]
        return await _run(request, lambda r: fn(r, key))
    handler.__name__ = fn.__name__
    return handler


def _int_param(request: web.Request, name: str, lo: int, hi: int) -> int | None:
    text = request.query.get(name)
    if text is None:
        return None
    return parse_uint(text, lo, hi, what=name, code="bad_" + name)


async def events(request: web.Request) -> web.Response:
    account_id = request.query.get("account")
    kind = request.query.get("kind")
    from_height = _int_param(request, "from_height", 0, 2**63 - 1)
    limit = _int_param(request, "limit", 1, MAX_EVENTS_LIMIT) or 100
    return await _run(request, lambda r: query.events(r, account=account_id, kind=kind, from_height=from_height,
                                                limit=limit))


async def trace(request: web.Request) -> web.Response:
    h = request.match_info["tx_hash"]
    return await _run(request, lambda r: query.trace(r, h))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/accounts/{id}", account)
    r.add_get("/assets/{id}", _one(query.asset))
    r.add_get("/receivables/{id}", _one(query.receivable))
    r.add_get("/loans/{id}", _one(query.loan))
    r.add_get("/campaigns/{id}", _one(query.campaign))
    r.add_get("/collateral/{id}", _one(query.collateral))
    r.add_get("/fx-quotes/{id}", _one(query.fx_quote))
    r.add_get("/credit/{id}", _one(query.credit))
    r.add_get("/events", events)
    r.add_get("/trace/{tx_hash}", trace)
