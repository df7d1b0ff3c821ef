"""The OpenAPI 3.1 document of the node API, built from one table of routes.

Rule: every route registered in `routes.setup` and `ledger_routes.setup` has a row here (a unit test
checks the two agree), with its parameters, its success schema and the error schema of each 4xx/5xx.
"""

from __future__ import annotations

from functools import cache
from typing import Any

HEX32 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
HEX_ID = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}  # ids in requests: either case
ASSET_ID = {"type": "string", "pattern": "^[A-Z0-9][A-Z0-9._-]{0,23}$"}
HEIGHT = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
ERROR = {"type": "object", "required": ["error", "message"],
         "properties": {"error": {"type": "string", "description": "stable machine-readable code"},
                        "message": {"type": "string"}}}
OBJ = {"type": "object"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Any] = {
    "Error": ERROR,
    "Health": {"type": "object", "properties": {"ok": {"type": "boolean"}, "node": {"type": "string"},
                                                "accepting": {"type": "boolean"}}},
    "Status": {"type": "object", "required": ["node_id", "chain_id", "height", "view", "primary",
                                              "last_block_hash", "state_root", "peers", "mempool_size", "syncing"],
               "properties": {"node_id": HEX32, "name": {"type": "string"}, "chain_id": {"type": "string"},
                              "genesis_hash": HEX32, "role": {"enum": ["validator", "observer"]},
                              "height": {"type": "integer"}, "view": {"type": "integer"},
                              "primary": {"type": ["string", "null"]}, "primary_name": {"type": ["string", "null"]},
                              "last_block_hash": {"type": ["string", "null"]},
                              "state_root": {"type": ["string", "null"]}, "peers": {"type": "integer"},
                              "mempool_size": {"type": "integer"}, "mempool_bytes": {"type": "integer"},
                              "syncing": {"type": "boolean"}, "sync_target": {"type": ["integer", "null"]},
                              "sync_progress": {"type": ["integer", "null"]}, "consensus": {"type": "boolean"},
                              "accepting": {"type": "boolean"}, "time_offset_ms": {"type": "integer"},
                              "uptime_ms": {"type": "integer"}}},
    "Peers": {"type": "object", "properties": {"count": {"type": "integer"},
                                               "peers": {"type": "array", "items": OBJ}}},
    "SubmitJson": {"type": "object", "required": ["txs"], "additionalProperties": False,
                   "properties": {"txs": {"type": "array", "minItems": 1, "maxItems": 10_000,
                                          "items": {"type": "string", "pattern": "^[0-9a-fA-F]*$",
                                                    "maxLength": 2 * 65536},
                                          "description": "hex of canonical signed txs {sig, tx}"}}},
    "SubmitResult": {"type": "object", "properties": {
        "accepted": {"type": "integer"}, "rejected": {"type": "integer"},
        "results": {"type": "array", "items": {"type": "object", "properties": {
            "hash": {"type": ["string", "null"]}, "status": {"enum": ["accepted", "rejected"]},
            "accepted": {"type": "boolean"}, "code": {"type": "string"}, "message": {"type": "string"}}}}}},
    "TxStatus": {"type": "object", "required": ["hash", "status"], "properties": {
        "hash": HEX32, "status": {"enum": ["pending", "committed", "failed", "unknown"]},
        "height": {"type": "integer"}, "index": {"type": "integer"}, "receipt": OBJ}},
    "Block": {"type": "object", "properties": {
        "height": {"type": "integer"}, "hash": HEX32, "header": OBJ, "time": {"type": "integer"},
        "proposer": HEX32, "tx_count": {"type": "integer"}, "txs": {"type": "array", "items": HEX32},
        "certificate": {}, "state_root_after": {"type": ["string", "null"]}}},
    "BlockList": {"type": "object", "properties": {"head": {"type": "integer"},
                                                   "blocks": {"type": "array", "items": _ref("Block")}}},
    "TimeOffset": {"type": "object", "required": ["offset_ms"], "properties": {
        "offset_ms": {"type": "integer", "minimum": 0}, "allowed": {"type": "boolean"}}},
    "LedgerObject": {"type": "object", "description": "JSON view of a ledger object (bytes as hex, money as int)"},
}


def _p(name: str, where: str = "path", schema: dict[str, Any] | None = None, doc: str = "") -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": schema or {"type": "string"},
            "description": doc}


def _json(schema: dict[str, Any], doc: str) -> dict[str, Any]:
    return {"description": doc, "content": {"application/json": {"schema": schema}}}


def _err(doc: str) -> dict[str, Any]:
    return _json(_ref("Error"), doc)


# (method, path, summary, params, ok schema, error statuses, request body or None, needs token)
Route = tuple[str, str, str, list[dict[str, Any]], dict[str, Any], dict[int, str], dict[str, Any] | None, bool]

_ID = _p("id", schema=HEX_ID, doc="64-hex id (accounts: the public key)")
_ASSET = _p("id", schema=ASSET_ID, doc="asset id, e.g. CNY.BANKA")
_LEDGER_404 = {400: "malformed id (bad_field)", 404: "no such object (not_found)"}

ROUTES: list[Route] = [
    ("get", "/", "Web status page and explorer (HTML)", [], {"type": "string"}, {}, None, False),
    ("get", "/health", "Liveness", [], _ref("Health"), {}, None, False),
    ("get", "/status", "Node and chain status", [], _ref("Status"), {}, None, False),
    ("get", "/peers", "Connected peers", [], _ref("Peers"), {}, None, False),
    ("post", "/txs", "Submit one signed tx or a batch", [], _ref("SubmitResult"),
     {400: "bad_json | bad_hex | bad_msgpack | bad_batch | empty_body", 413: "body too large",
      415: "unsupported Content-Type", 503: "mempool_full (Retry-After) or intake closed"},
     {"required": True, "content": {"application/msgpack": {"schema": {"description": "canonical msgpack: "
                                    "one signed tx {sig, tx} or a list of them"}},
                                    "application/json": {"schema": _ref("SubmitJson")}}}, False),
    ("get", "/txs/{hash}", "Tx status (pending, committed, failed) with its receipt",
     [_p("hash", schema=HEX32)], _ref("TxStatus"), {400: "bad_hash", 404: "unknown tx (status unknown)"},
     None, False),
    ("get", "/blocks", "Recent block summaries, newest first",
     [_p("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100}),
      _p("before", "query", HEIGHT)], _ref("BlockList"),
     {400: "bad_limit | bad_height", 404: "no block at `before` (below what this node stores)"}, None, False),
    ("get", "/blocks/{height}", "A block with its commit certificate (format=msgpack: raw bytes)",
     [_p("height", schema=HEIGHT), _p("format", "query", {"enum": ["json", "msgpack"]})],
     _ref("Block"), {400: "bad_height | bad_format", 404: "no block at this height"}, None, False),
    ("get", "/accounts/{id}", "Account: roles, nonce, balances (proof=1 adds Merkle proofs)",
     [_ID, _p("proof", "query", {"enum": ["0", "1"]})], _ref("LedgerObject"), _LEDGER_404, None, False),
    ("get", "/assets/{id}", "Asset", [_ASSET], _ref("LedgerObject"), _LEDGER_404, None, False),
    ("get", "/receivables/{id}", "Receivable", [_ID], _ref("LedgerObject"), _LEDGER_404, None, False),
    ("get", "/loans/{id}", "Loan", [_ID], _ref("LedgerObject"), _LEDGER_404, None, False),
    ("get", "/campaigns/{id}", "Crowdfunding campaign", [_ID], _ref("LedgerObject"), _LEDGER_404, None, False),
    ("get", "/collateral/{id}", "Registered collateral", [_ID], _ref("LedgerObject"), _LEDGER_404, None, False),
    ("get", "/fx-quotes/{id}", "FX quote", [_ID], _ref("LedgerObject"), _LEDGER_404, None, False),
    ("get", "/credit/{id}", "Credit score, limits and history", [_ID], _ref("LedgerObject"), _LEDGER_404,
     None, False),
    ("get", "/events", "Events filtered by account and/or kind",
     [_p("account", "query", HEX_ID), _p("kind", "query", {"type": "string", "pattern": "^[ -~]{0,64}$"}), _p("from_height", "query", HEIGHT),
      _p("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000})],
     _ref("LedgerObject"), {400: "bad_field | bad_from_height | bad_limit"}, None, False),
    ("get", "/trace/{tx_hash}", "Where the money of a tx came from and went", [_p("tx_hash", schema=HEX32)],
     _ref("LedgerObject"), _LEDGER_404, None, False),
    ("get", "/metrics", "Prometheus metrics (text format)", [], {"type": "string"}, {}, None, False),
    ("get", "/openapi.json", "This document", [], OBJ, {}, None, False),
    ("get", "/admin/time-offset", "Current testnet block-time offset", [], _ref("TimeOffset"), {}, None, False),
    ("post", "/admin/time-offset", "Set the testnet block-time offset (operator)", [], _ref("TimeOffset"),
     {400: "bad_json | bad_field", 401: "missing or wrong bearer token",
      403: "not a testnet config or no token file"},
     {"required": True, "content": {"application/json": {"schema": _ref("TimeOffset")}}}, True),
]


@cache
def spec() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, params, ok, errors, body, token in ROUTES:
        ok_content = "text/html" if path == "/" else "text/plain" if path == "/metrics" else "application/json"
        content: dict[str, Any] = {ok_content: {"schema": ok}}
        if path == "/blocks/{height}":
            content["application/msgpack"] = {"schema": {"description": "format=msgpack: canonical msgpack "
                                                                        "{block: <block bytes>, certificate: <bytes>}"}}
        responses: dict[str, Any] = {"200": {"description": "OK", "content": content}}
        for status, doc in {**errors, 500: "internal error (logged)"}.items():
            responses[str(status)] = _err(doc)
        op: dict[str, Any] = {"summary": summary, "operationId": f"{method}_{path}", "responses": responses}
        if params:
            op["parameters"] = params
        if body is not None:
            op["requestBody"] = body
        if token:
            op["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[method] = op
    return {"openapi": "3.1.0",
            "info": {"title": "smeledger node API", "version": "1",
                     "description": "Permissioned PBFT ledger for SME finance. Errors are "
                                    '{"error": code, "message": text}.'},
            "paths": paths,
            "components": {"schemas": SCHEMAS,
                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                          "description": "token from <home>/admin.token"}}}}
