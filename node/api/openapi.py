"""The route table of the node API and the OpenAPI 3.1 document generated from it.

Each `Route` names its handler and the `protocol.api` models of its path parameters, query, request body
and answers; `register` adds exactly these routes to the app, the handlers parse and answer with exactly
these models (node/api/parsing.py), and `spec()` turns the same models into JSON Schema with msgspec.
Rule: nothing in the document is written by hand except summaries and the meaning of each error status,
so the document cannot drift from what the handlers accept and answer.

Why msgspec (not pydantic): the API models are plain frozen structs with the bounds and patterns as
`Meta` annotations; msgspec decodes and validates them in one pass, encodes them, and emits JSON Schema
2020-12 (what OpenAPI 3.1 uses) from the same types, with no runtime model layer or plugin. It is also
what the SDK decodes answers with, in the client process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import msgspec
from aiohttp import web

from node.api import ledger_routes, routes
from node.api.connections import Handler
from protocol import api

JSON, MSGPACK = "application/json", "application/msgpack"


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    ok: type | str  # a model (JSON) or the media type of a non-JSON answer
    errors: dict[int, str] = field(default_factory=dict)  # status -> when (answered as `Error` unless below)
    path_params: type | None = None
    query: type | None = None
    body: type | None = None  # JSON request body model
    msgpack_body: str = ""  # description of an application/msgpack request body
    answers: dict[int, type] = field(default_factory=dict)  # non-200 statuses answered with a model other than Error
    also: dict[str, str] = field(default_factory=dict)  # other media types of the 200 answer -> description
    token: bool = False


_LEDGER_ERRORS = {400: "malformed id (bad_field)", 404: "no such object (not_found)"}


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=msgspec.json.encode(spec()), content_type=JSON)


ROUTES: list[Route] = [
    Route("get", "/", routes.index, "Web status page and explorer (HTML)", "text/html"),
    Route("get", "/health", routes.health, "Liveness: 200 while the node does its job, 503 with the problems",
          api.Health, {503: "not doing its job: intake closed, consensus stopped or stalled"},
          answers={503: api.Health}),
    Route("get", "/status", routes.status, "Node and chain status", api.Status),
    Route("get", "/peers", routes.peers, "Connected peers", api.Peers),
    Route("post", "/txs", routes.submit_txs, "Submit one signed tx or a batch", api.SubmitResult,
          {400: "bad_json | bad_hex | bad_msgpack | bad_batch | empty_body", 413: "body too large",
           415: "unsupported Content-Type",
           503: "mempool_full | journal_full (Retry-After, with the per-tx rows), journal_failed or intake closed"},
          body=api.SubmitJson, msgpack_body="canonical msgpack: one signed tx {sig, tx} or a list of them"),
    Route("get", "/txs/{hash}", routes.get_tx, "Tx status: pending, committed or failed (with its receipt), dropped "
          "(with a reason)", api.TxStatus, {400: "bad_hash", 404: "unknown tx (status unknown)"},
          path_params=api.HashPath, answers={404: api.TxStatus}),
    Route("get", "/blocks", routes.list_blocks, "Recent block summaries, newest first", api.BlockList,
          {400: "bad_limit | bad_height", 404: "no block at `before` (below what this node stores)"},
          query=api.BlocksQuery),
    Route("get", "/blocks/{height}", routes.get_block, "A block with its commit certificate (wait_ms: wait "
          "that long for a block not stored yet)", api.Block,
          {400: "bad_height | bad_format", 404: "no block at this height"}, path_params=api.HeightPath,
          query=api.BlockQuery, also={MSGPACK: "format=msgpack: canonical msgpack {block: <block bytes>, "
                                                "certificate: <bytes>}"}),
    Route("get", "/accounts/{id}", ledger_routes.account, "Account: roles, nonce, balances (proof=1 adds Merkle "
          "proofs of every field under the state root after proof.height, which the header of block "
          "proof.header_height = height+2 carries)", api.Account, _LEDGER_ERRORS, path_params=api.IdPath, query=api.AccountQuery),
    Route("get", "/assets/{id}", ledger_routes.asset, "Asset", api.Asset, _LEDGER_ERRORS, path_params=api.AssetPath),
    Route("get", "/receivables/{id}", ledger_routes.receivable, "Receivable", api.Receivable, _LEDGER_ERRORS,
          path_params=api.IdPath),
    Route("get", "/loans/{id}", ledger_routes.loan, "Loan", api.Loan, _LEDGER_ERRORS, path_params=api.IdPath),
    Route("get", "/campaigns/{id}", ledger_routes.campaign, "Crowdfunding campaign", api.Campaign, _LEDGER_ERRORS,
          path_params=api.IdPath),
    Route("get", "/collateral/{id}", ledger_routes.collateral, "Registered collateral", api.Collateral,
          _LEDGER_ERRORS, path_params=api.IdPath),
    Route("get", "/fx-quotes/{id}", ledger_routes.fx_quote, "FX quote", api.FxQuote, _LEDGER_ERRORS,
          path_params=api.IdPath),
    Route("get", "/credit/{id}", ledger_routes.credit, "Credit score, limits and history", api.Credit,
          _LEDGER_ERRORS, path_params=api.IdPath),
    Route("get", "/events", ledger_routes.events, "Events filtered by account and/or kind", api.EventPage,
          {400: "bad_field | bad_from_height | bad_limit"}, query=api.EventsQuery),
    Route("get", "/trace/{tx_hash}", ledger_routes.trace, "Where the money of a tx came from and went", api.Trace,
          {400: "bad_hash", 404: "no committed tx with this hash (not_found)"}, path_params=api.TxHashPath),
    Route("get", "/metrics", routes.metrics, "Prometheus metrics (text format)", "text/plain"),
    Route("get", "/openapi.json", openapi_json, "This document", "application/json"),
    Route("get", "/admin/time-offset", routes.get_time_offset, "Current testnet block-time offset", api.TimeOffset),
    Route("post", "/admin/time-offset", routes.set_time_offset, "Set the testnet block-time offset (operator)",
          api.TimeOffset, {400: "bad_json | bad_field", 401: "missing or wrong bearer token",
                           403: "not a testnet config or no token file"}, body=api.TimeOffsetRequest, token=True),
]


def register(app: web.Application) -> None:
    """Add every route of the table (and only those) to the app."""
    for r in ROUTES:
        app.router.add_route(r.method.upper(), r.path, r.handler)


def _models() -> list[type]:
    out: list[type] = [api.Error]
    for r in ROUTES:
        out += [t for t in (r.ok, r.path_params, r.query, r.body) if isinstance(t, type)]
        out += list(r.answers.values())
    return list(dict.fromkeys(out))


def _ref(t: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{t.__name__}"}


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter is absent rather than null: drop the null branch msgspec gives an optional field."""
    alts = schema.get("anyOf")
    if alts:
        rest = [a for a in alts if a != {"type": "null"}]
        if len(rest) == 1:
            merged = {**{k: v for k, v in schema.items() if k != "anyOf"}, **rest[0]}
            if merged.get("default", 0) is None:
                merged.pop("default")
            return merged
    return schema


def _params(model: type, where: str, components: dict[str, Any]) -> list[dict[str, Any]]:
    comp = components[model.__name__]
    required = set(comp.get("required", []))
    return [{"name": name, "in": where, "required": where == "path" or name in required,
             "schema": _not_null(schema)} for name, schema in comp["properties"].items()]


def _json(schema: dict[str, Any], doc: str) -> dict[str, Any]:
    return {"description": doc, "content": {JSON: {"schema": schema}}}


def _operation(r: Route, components: dict[str, Any]) -> dict[str, Any]:
    if isinstance(r.ok, type):
        ok: dict[str, Any] = {JSON: {"schema": _ref(r.ok)}}
    else:
        ok = {r.ok: {"schema": {"type": "object"} if r.ok == JSON else {"type": "string"}}}
    ok.update({media: {"schema": {"description": doc}} for media, doc in r.also.items()})
    responses: dict[str, Any] = {"200": {"description": "OK", "content": ok}}
    for status, doc in {**r.errors, 500: "internal error (logged)"}.items():
        model = r.answers.get(status)
        schema = _ref(model) if model else _ref(api.Error)
        if r.path == "/txs" and status == 503:  # mempool full answers the rows; a closed intake an Error
            schema = {"anyOf": [_ref(api.SubmitResult), _ref(api.Error)]}
        responses[str(status)] = _json(schema, doc)
    op: dict[str, Any] = {"summary": r.summary, "operationId": f"{r.method}_{r.path}", "responses": responses}
    params = []
    if r.path_params is not None:
        params += _params(r.path_params, "path", components)
    if r.query is not None:
        params += _params(r.query, "query", components)
    if params:
        op["parameters"] = params
    content: dict[str, Any] = {}
    if r.body is not None:
        content[JSON] = {"schema": _ref(r.body)}
    if r.msgpack_body:
        content[MSGPACK] = {"schema": {"description": r.msgpack_body}}
    if content:
        op["requestBody"] = {"required": True, "content": content}
    if r.token:
        op["security"] = [{"bearer": []}]
    return op


@cache
def spec() -> dict[str, Any]:
    _schemas, components = msgspec.json.schema_components(_models(), ref_template="#/components/schemas/{name}")
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        paths.setdefault(r.path, {})[r.method] = _operation(r, components)
    return {"openapi": "3.1.0",
            "info": {"title": "smeledger node API", "version": "1",
                     "description": "Permissioned PBFT ledger for SME finance. Errors are "
                                    '{"error": code, "message": text}. Generated from the models in '
                                    "protocol/api.py."},
            "paths": paths,
            "components": {"schemas": components,
                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                          "description": "token from <home>/admin.token"}}}}
