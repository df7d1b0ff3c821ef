"""Core routes: health, status, peers, tx submission and lookup, blocks, metrics, OpenAPI, web page, admin.

Rule: handlers validate every input before touching the node and answer a 4xx with a stable code for
any bad one (`bad_json`, `bad_hex`, `bad_msgpack`, `bad_hash`, `bad_height`, `bad_batch`, ...). Intake
closed (starting or stopping) and a full mempool answer 503 with Retry-After. Handlers never block the
loop on more than a bounded read.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from node.api import openapi
from node.api.bodies import bodies, check_msgpack_shape, loads_json
from node.api.keys import ApiDeps, deps, parse_uint, read_off_loop
from node.errors import ApiError, KeyFileError, NotFound, Unavailable
from node.files import check_private
from protocol import codec
from protocol.errors import ProtocolError
from protocol.ledger.model import jsonable
from protocol.tx import MAX_TX_BYTES
from storage import schema
from storage.errors import DatabaseCorrupt
from storage.records import tx_hash_of

MSGPACK = "application/msgpack"
MAX_BLOCK_LIST = 100
MAX_TIME_OFFSET_MS = 10 * 365 * 24 * 3600 * 1000


def _hex32(text: str, what: str, code: str) -> bytes:
    try:
        b = bytes.fromhex(text)
    except ValueError:
        b = b""
    if len(b) != 32:
        raise ApiError(f"{what} must be 64 hex characters", code=code)
    return b


MAX_HEIGHT = 2**63 - 1


def parse_height(text: str) -> int:
    return parse_uint(text, 0, MAX_HEIGHT, what="height", code="bad_height")


def _stored_json(raw: bytes, key: bytes) -> Any:
    """A receipt or certificate as JSON. Storage checked it on read, so one that does not decode here is
    damage too: `db_corrupt` (503), never a hex string or a guessed status."""
    try:
        return jsonable(codec.decode(raw))
    except ProtocolError as exc:
        raise DatabaseCorrupt(f"a stored record does not decode ({exc.message})", key=key) from exc


# --- health, status, peers ------------------------------------------------------------------------------

async def health(request: web.Request) -> web.Response:
    """200 while the node is doing its job; 503 with the reasons otherwise (see node/status.py)."""
    st = deps(request).status
    problems = st.health.problems()
    doc = {"ok": not problems, "node": st.name, "accepting": st.health.accepting, "problems": problems}
    return web.json_response(doc, status=503 if problems else 200)


async def status(request: web.Request) -> web.Response:
    return web.json_response(deps(request).status.document())


async def peers(request: web.Request) -> web.Response:
    rows = [p.to_dict() for p in deps(request).p2p.peers()]
    return web.json_response({"count": len(rows), "peers": rows})


# --- transactions -----------------------------------------------------------------------------------

def _raw_txs_from_msgpack(body: bytes, max_batch: int, max_bytes: int) -> list[bytes]:
    limits = codec.Limits(max_bytes=max_bytes, max_depth=3, max_str=1024, max_bin=MAX_TX_BYTES,
                          max_array=max_batch, max_map=8)
    # a list of {sig, tx} maps: 5 values per tx (the map, 2 keys, 2 values), walked before anything is built
    check_msgpack_shape(body, max_depth=3, max_items=5 * max_batch, max_str=1024, max_bin=MAX_TX_BYTES)
    try:
        value = codec.decode(body, limits)
    except ProtocolError as exc:
        raise ApiError(f"body is not canonical msgpack: {exc.message}", code="bad_msgpack") from None
    if isinstance(value, dict):
        return [body]
    if isinstance(value, list):
        if not value:
            raise ApiError("empty tx list", code="bad_batch")
        if not all(isinstance(v, dict) for v in value):
            raise ApiError("a batch must be a list of signed tx maps {sig, tx}", code="bad_batch")
        return [codec.encode(v) for v in value]
    raise ApiError("body must be one signed tx map or a list of them", code="bad_msgpack")


def _raw_txs_from_json(body: bytes, max_batch: int) -> list[bytes]:
    doc = loads_json(body, max_containers=2, max_items=max_batch + 1)
    if not isinstance(doc, dict) or not isinstance(doc.get("txs"), list) or set(doc) != {"txs"}:
        raise ApiError('JSON body must be {"txs": ["<hex of a signed tx>", ...]}', code="bad_json")
    items = doc["txs"]
    if not items or len(items) > max_batch:
        raise ApiError(f"txs must hold 1..{max_batch} items", code="bad_batch")
    out = []
    for i, h in enumerate(items):
        try:
            if not isinstance(h, str) or len(h) > 2 * MAX_TX_BYTES:
                raise ValueError
            out.append(bytes.fromhex(h))
        except ValueError:
            raise ApiError(f"txs[{i}] is not a hex string of at most {MAX_TX_BYTES} bytes",
                           code="bad_hex") from None
    return out


async def submit_txs(request: web.Request) -> web.Response:
    d = deps(request)
    if not d.status.health.accepting:
        raise Unavailable("the node is not accepting transactions (starting or stopping)")
    ctype = request.content_type
    cfg = d.settings
    parse: Callable[[bytes], list[bytes]]
    if ctype == MSGPACK:
        parse = functools.partial(_raw_txs_from_msgpack, max_batch=cfg.max_batch_txs, max_bytes=cfg.max_body_bytes)
    elif ctype == "application/json":
        parse = functools.partial(_raw_txs_from_json, max_batch=cfg.max_batch_txs)
    else:
        raise ApiError(f"Content-Type must be {MSGPACK} or application/json", code="unsupported_media_type",
                       http_status=415)
    raws = await bodies(request).load(request, parse)
    results = await d.mempool.add_many(raws, None)
    rows = [{"hash": r.hash.hex() if r.hash is not None else None,
             "status": "accepted" if r.accepted else "rejected",
             "accepted": r.accepted, "code": r.code, "message": r.message} for r in results]
    accepted = sum(1 for r in results if r.accepted)
    doc = {"accepted": accepted, "rejected": len(rows) - accepted, "results": rows}
    if any(r.code == "mempool_full" for r in results):
        doc.update(error="mempool_full", message="mempool is full; retry the rejected txs later")
        return web.json_response(doc, status=503, headers={"Retry-After": "1"})
    return web.json_response(doc, status=200)


def committed_tx_status(d: ApiDeps, h: bytes) -> dict[str, Any]:
    """Status of a tx from storage: committed or failed (with its checked receipt), or unknown."""
    blocks = d.store.blocks
    loc = blocks.get_tx_location(h)
    if loc is None:
        return {"hash": h.hex(), "status": "unknown"}
    raw = blocks.get_receipt_at(*loc)
    key = schema.receipt_key(*loc)
    if raw is None:  # get_tx_location checked that the tx is there, so its receipt must be too
        raise DatabaseCorrupt(f"committed tx {h.hex()} has no receipt", key=key)
    receipt = _stored_json(raw, key)
    return {"hash": h.hex(), "status": "committed" if receipt["status"] == "ok" else "failed",
            "height": loc[0], "index": loc[1], "receipt": receipt}


async def get_tx(request: web.Request) -> web.Response:
    h = _hex32(request.match_info["hash"], "tx hash", "bad_hash")
    d = deps(request)
    if d.mempool.status(h) == "pending":
        return web.json_response({"hash": h.hex(), "status": "pending"})
    doc = await read_off_loop(request, lambda: committed_tx_status(d, h))
    if doc["status"] == "unknown":
        doc.update(error="not_found", message="no pending or committed tx with this hash")
        return web.json_response(doc, status=404)
    return web.json_response(doc)


# --- blocks ------------------------------------------------------------------------------------------

def block_doc(d: ApiDeps, height: int, full: bool = True) -> dict[str, Any]:
    blocks = d.store.blocks
    if height == 0:
        root = blocks.state_root_at(0)
        return {"height": 0, "hash": d.genesis.hash.hex(), "genesis": True, "time": d.genesis.genesis_time,
                "state_root_after": root.hex() if root else None, "tx_count": 0, "txs": []}
    block = blocks.get_block(height)
    if block is None:
        raise NotFound(f"no block at height {height} (head is {d.store.head.height})")
    root_after = blocks.state_root_at(height)
    doc: dict[str, Any] = {"height": height, "hash": block.hash.hex(), "header": jsonable(block.header.to_value()),
                           "time": block.header.time, "proposer": block.header.proposer.hex(),
                           "proposer_name": d.genesis.name_of(block.header.proposer),
                           "tx_count": len(block.txs), "state_root_after": root_after.hex() if root_after else None}
    if full:
        doc["txs"] = [tx_hash_of(t).hex() for t in block.txs]
        cert = blocks.get_certificate(height, block.hash)
        doc["certificate"] = _stored_json(cert, schema.certificate_key(height)) if cert is not None else None
    return doc


async def get_block(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    height = parse_height(request.match_info["height"])
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "msgpack"):
        raise ApiError("format must be json or msgpack", code="bad_format")
    if fmt == "msgpack" and height > 0:
        blocks = d.store.blocks

        def stored() -> bytes:
            raw = blocks.get_block_bytes(height)
            if raw is None:
                raise NotFound(f"no block at height {height}")
            return codec.encode({"block": raw, "certificate": blocks.get_certificate(height) or b""})

        return web.Response(body=await read_off_loop(request, stored), content_type=MSGPACK)
    return web.json_response(await read_off_loop(request, lambda: block_doc(d, height)))


async def list_blocks(request: web.Request) -> web.Response:
    d = deps(request)
    limit = parse_uint(request.query.get("limit", "20"), 1, MAX_BLOCK_LIST, what="limit", code="bad_limit")
    head = d.store.head.height
    before = request.query.get("before")
    top = min(head, parse_height(before) - 1) if before is not None else head
    heights = range(top, max(-1, top - limit), -1)
    rows = await read_off_loop(request, lambda: [block_doc(d, h, full=False) for h in heights])
    return web.json_response({"head": head, "blocks": rows})


# --- metrics, openapi, web page --------------------------------------------------------------------------

async def metrics(request: web.Request) -> web.Response:
    data = generate_latest(deps(request).registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi.spec())


async def index(request: web.Request) -> web.Response:
    html = resources.files("node.api").joinpath("static/index.html").read_text(encoding="utf-8")
    return web.Response(text=html, content_type="text/html")


# --- admin ---------------------------------------------------------------------------------------------

def require_token(request: web.Request) -> None:
    header = request.headers.get("Authorization", "")
    path = deps(request).token_path
    try:
        check_private(path, "admin token file")  # made readable by others since the start: not a secret now
        expected = path.read_text(encoding="utf-8").strip()
    except KeyFileError as exc:
        raise ApiError(f"operator routes are disabled: {exc.message}", code="forbidden", http_status=403) from None
    except OSError:
        raise ApiError("operator routes are disabled: no admin token file", code="forbidden",
                       http_status=403) from None
    if not header.startswith("Bearer ") or not expected or not hmac.compare_digest(
            header[7:].strip().encode(), expected.encode()):
        raise ApiError("missing or wrong bearer token", code="unauthorized", http_status=401)


async def get_time_offset(request: web.Request) -> web.Response:
    t = deps(request).time_offset
    return web.json_response({"offset_ms": t.offset_ms, "allowed": t.allowed})


async def set_time_offset(request: web.Request) -> web.Response:
    require_token(request)
    d = deps(request)
    if not d.time_offset.allowed:
        raise ApiError("time offset is only allowed on testnet configs ([testnet] allow_time_offset)",
                       code="forbidden", http_status=403)
    doc = await bodies(request).load(request, lambda b: loads_json(b, max_containers=1, max_items=2))
    v = doc.get("offset_ms") if isinstance(doc, dict) else None
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_TIME_OFFSET_MS:
        raise ApiError(f'body must be {{"offset_ms": int 0..{MAX_TIME_OFFSET_MS}}}', code="bad_field")
    d.time_offset.offset_ms = v
    d.log.warning("time_offset_set", offset_ms=v)
    return web.json_response({"offset_ms": v, "allowed": True})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/", index)
    r.add_get("/health", health)
    r.add_get("/status", status)
    r.add_get("/peers", peers)
    r.add_post("/txs", submit_txs)
    r.add_get("/txs/{hash}", get_tx)
    r.add_get("/blocks", list_blocks)
    r.add_get("/blocks/{height}", get_block)
    r.add_get("/metrics", metrics)
    r.add_get("/openapi.json", openapi_json)
    r.add_get("/admin/time-offset", get_time_offset)
    r.add_post("/admin/time-offset", set_time_offset)
