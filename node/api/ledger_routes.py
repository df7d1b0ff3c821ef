"""Ledger query routes: accounts (with Merkle proofs), assets, receivables, loans, campaigns, credit,
events and fund-flow traces, answered by the pure functions of `protocol.ledger.query`.

Rule: every query reads one consistent storage snapshot and closes it; parameters are parsed with the
API's models (a malformed id is `bad_field` -> 400) and every answer is checked against its model before
it leaves (`api.conform`); an unknown object is `not_found` -> 404. An account asked for with proofs is
read, with its proofs and the height and root they prove against, under the state store lock (commits
hold it across write and tree update), so every field has a proof under the `state_root` it names: the
participant record, the nonces of the id and of its signing key, the credit record and the ledger params
(the credit score), and every balance. The answer names the executed `height` it proves and the block
whose header certifies that root (`header_height` = height+2: `protocol.block.state_root_height`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from node.api import parsing
from node.api.keys import deps, read_off_loop
from node.api.parsing import answer
from protocol import api
from protocol.block import STATE_ROOT_LAG
from protocol.ledger import keys as lkeys
from protocol.ledger import query
from protocol.ledger.model import jsonable
from protocol.state import StateReader

MAX_PROOF_KEYS = query.MAX_BALANCES + 5


def _reader(request: web.Request) -> Any:
    return deps(request).store.state.reader(snapshot=True)


async def _run(request: web.Request, fn: Callable[[StateReader], dict[str, Any]], model: type) -> web.Response:
    def read() -> dict[str, Any]:
        with _reader(request) as r:
            return fn(r)
    return answer(api.conform(await read_off_loop(request, read), model))


def _proven_keys(pid: bytes, doc: dict[str, Any]) -> list[bytes]:
    """The state keys behind every field of an account answer."""
    wanted = [lkeys.participant(pid), lkeys.nonce(pid), lkeys.credit(pid), lkeys.PARAMS]
    signing = doc.get("signing_key")
    if signing is not None and signing != pid.hex():
        wanted.append(lkeys.nonce(bytes.fromhex(signing)))
    wanted += [lkeys.balance(pid, a) for a in sorted(doc["balances"])]
    return wanted[:MAX_PROOF_KEYS]


def _account_with_proofs(request: web.Request, aid: str) -> dict[str, Any]:
    store = deps(request).store
    with store.state.lock, store.state.reader(snapshot=False) as r:
        doc = query.account(r, aid)
        pid = query.to_id(aid)
        height = store.blocks.height()
        root = store.state.root()
        items = [jsonable(store.state.proof(k).to_value()) for k in _proven_keys(pid, doc)]
    doc["proof"] = {"height": height, "state_root": root.hex(), "header_height": height + STATE_ROOT_LAG,
                    "proofs": items,
                    "note": "state_root is the root after block `height`; the header of block `header_height` "
                            "(height+2, pipelined) carries it, under that block's commit certificate"}
    return doc


async def account(request: web.Request) -> web.Response:
    aid = parsing.path(request, api.IdPath).id
    if parsing.query(request, api.AccountQuery).proof == "1":
        return answer(api.conform(await read_off_loop(request, lambda: _account_with_proofs(request, aid)),
                                  api.Account))
    return await _run(request, lambda r: query.account(r, aid), api.Account)


def one(fn: Callable[[StateReader, str], dict[str, Any]], model: type, path: type = api.IdPath
        ) -> Callable[[web.Request], Any]:
    """The handler of `GET /<things>/{id}`: the id parsed with `path`, the answer checked against `model`."""
    async def handler(request: web.Request) -> web.Response:
        key = parsing.path(request, path).id
        return await _run(request, lambda r: fn(r, key), model)
    handler.__name__ = fn.__name__
    return handler


async def events(request: web.Request) -> web.Response:
    kind = request.query.get("kind")
    if kind is not None:
        query.check_event_kind(kind)  # the ledger's own answer (it names a tx kind's events) before the pattern's
    q = parsing.query(request, api.EventsQuery)
    return await _run(request, lambda r: query.events(r, account=q.account, kind=q.kind, from_height=q.from_height,
                                                      limit=q.limit), api.EventPage)


async def trace(request: web.Request) -> web.Response:
    h = parsing.path(request, api.TxHashPath).tx_hash
    return await _run(request, lambda r: query.trace(r, h), api.Trace)


asset = one(query.asset, api.Asset, api.AssetPath)
receivable = one(query.receivable, api.Receivable)
loan = one(query.loan, api.Loan)
campaign = one(query.campaign, api.Campaign)
collateral = one(query.collateral, api.Collateral)
fx_quote = one(query.fx_quote, api.FxQuote)
credit = one(query.credit, api.Credit)
