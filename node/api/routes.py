"""Core routes: health, status, peers, tx submission and lookup, blocks, metrics, web page, admin.

Rule: handlers parse every input with the API's models (`node.api.parsing`, `protocol.api`) before
touching the node and answer a 4xx with a stable code for any bad one (`bad_json`, `bad_hex`,
`bad_msgpack`, `bad_hash`, `bad_height`, `bad_batch`, ...); they answer with the models too, so what
they do is what the generated OpenAPI document says. Intake closed (starting or stopping), a full mempool
and a full journal answer 503 with Retry-After. A tx answered `accepted` is durable in the node's journal
(node/acceptance.py). Handlers never block the loop on more than a bounded read.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from importlib import resources
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from node.acceptance import REASONS
from node.api import parsing
from node.api.bodies import bodies, check_msgpack_shape, loads_json
from node.api.keys import ApiDeps, deps, read_off_loop
from node.api.parsing import answer
from node.errors import ApiError, KeyFileError, NotFound, Unavailable
from node.files import check_private
from protocol import api, codec
from protocol.errors import ProtocolError
from protocol.ledger.model import jsonable
from protocol.tx import MAX_TX_BYTES
from storage import schema
from storage.errors import DatabaseCorrupt
from storage.records import tx_hash_of

MSGPACK = "application/msgpack"
SUBMIT_SHAPE = '{"txs": ["<hex of a signed tx>", ...]}'
BACKPRESSURE = ("mempool_full", "journal_full")  # per-tx codes that make POST /txs answer 503


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
    doc = api.Health(ok=not problems, node=st.name, accepting=st.health.accepting, problems=problems)
    return answer(doc, status=503 if problems else 200)


async def status(request: web.Request) -> web.Response:
    return answer(api.convert(deps(request).status.document(), api.Status))


async def peers(request: web.Request) -> web.Response:
    rows = deps(request).p2p.peers()  # PeerInfo is api.Peer
    return answer(api.Peers(count=len(rows), peers=rows))


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
    """`api.SubmitJson`: 1..max_batch hex strings of whole bytes (`bad_batch`, `bad_hex`, else `bad_json`);
    the JSON is decoded with its work bounded first (`loads_json`), then checked against the model."""
    doc = loads_json(body, max_containers=2, max_items=max_batch + 1)
    try:
        txs = api.convert(doc, api.SubmitJson).txs
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "`$.txs[" in text:
            raise ApiError(f"a tx is not hex of at most {MAX_TX_BYTES} bytes: {text}", code="bad_hex") from None
        if "length" in text and "`$.txs`" in text:
            raise ApiError(f"txs must hold 1..{max_batch} items", code="bad_batch") from None
        raise ApiError(f"JSON body must be {SUBMIT_SHAPE}: {text}", code="bad_json") from None
    if len(txs) > max_batch:
        raise ApiError(f"txs must hold 1..{max_batch} items", code="bad_batch")
    return [bytes.fromhex(h) for h in txs]


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
    results = await d.acceptance.submit(raws)
    rows = [api.SubmitRow(hash=r.hash.hex() if r.hash is not None else None,
                          status="accepted" if r.accepted else "rejected",
                          accepted=r.accepted, code=r.code, message=r.message) for r in results]
    accepted = sum(1 for r in results if r.accepted)
    code = next((r.code for r in results if r.code in BACKPRESSURE), None)
    if code is not None:
        full = api.SubmitResult(accepted=accepted, rejected=len(rows) - accepted, results=rows, error=code,
                                message=f"{code.replace('_', ' ')}; retry the rejected txs later")
        return answer(full, status=503, headers={"Retry-After": "1"})
    return answer(api.SubmitResult(accepted=accepted, rejected=len(rows) - accepted, results=rows))


def committed_tx_status(d: ApiDeps, h: bytes) -> api.TxStatus:
    """Status of a tx from storage: committed or failed (with its checked receipt), or unknown."""
    blocks = d.store.blocks
    loc = blocks.get_tx_location(h)
    if loc is None:
        return api.TxStatus(hash=h.hex(), status="unknown", error="not_found",
                            message="no pending, committed or dropped tx with this hash")
    raw = blocks.get_receipt_at(*loc)
    key = schema.receipt_key(*loc)
    if raw is None:  # get_tx_location checked that the tx is there, so its receipt must be too
        raise DatabaseCorrupt(f"committed tx {h.hex()} has no receipt", key=key)
    receipt = api.convert(_stored_json(raw, key), api.Receipt)
    return api.TxStatus(hash=h.hex(), status="committed" if receipt.ok else "failed", height=loc[0], index=loc[1],
                        receipt=receipt)


async def get_tx(request: web.Request) -> web.Response:
    h = bytes.fromhex(parsing.path(request, api.HashPath).hash)
    d = deps(request)
    if d.mempool.status(h) == "pending" or d.in_decided_block(h):  # decided blocks execute within moments
        return answer(api.TxStatus(hash=h.hex(), status="pending"))
    doc = await read_off_loop(request, lambda: committed_tx_status(d, h))
    dropped = d.acceptance.dropped(h) if doc.status == "unknown" else None  # the tx index is asked first
    if dropped is not None:
        return answer(api.TxStatus(hash=h.hex(), status="dropped", reason=dropped.reason, dropped_at=dropped.at_ms,
                                   message=REASONS.get(dropped.reason, dropped.reason)))
    return answer(doc, status=404 if doc.status == "unknown" else 200)


# --- blocks ------------------------------------------------------------------------------------------

def block_doc(d: ApiDeps, height: int, full: bool = True) -> api.Block:
    blocks = d.store.blocks
    if height == 0:
        root = blocks.state_root_at(0)
        return api.Block(height=0, hash=d.genesis.hash.hex(), genesis=True, time=d.genesis.genesis_time,
                         state_root_after=root.hex() if root else None, tx_count=0, txs=[])
    block = blocks.get_block(height)
    if block is None:
        hf = d.status.chain.history_from
        if 0 < height < hf <= d.store.head.height + 1:
            raise NotFound(f"no block at height {height} yet: this node joined from a snapshot and holds history "
                           f"from {hf}; history backfill is fetching the rest")
        raise NotFound(f"no block at height {height} (head is {d.store.head.height})")
    root_after = blocks.state_root_at(height)
    summary: dict[str, Any] = dict(
        height=height, hash=block.hash.hex(), header=jsonable(block.header.to_value()), time=block.header.time,
        proposer=block.header.proposer.hex(), proposer_name=d.genesis.name_of(block.header.proposer),
        tx_count=len(block.txs), state_root_after=root_after.hex() if root_after else None)
    if not full:
        return api.Block(**summary)
    cert = blocks.get_certificate(height, block.hash)
    return api.Block(**summary, txs=[tx_hash_of(t).hex() for t in block.txs],
                     certificate=_stored_json(cert, schema.certificate_key(height)) if cert is not None else None)


async def get_block(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    height = parsing.path(request, api.HeightPath).height
    q = parsing.query(request, api.BlockQuery)
    if q.wait_ms:
        await d.store.wait_for_height(height, q.wait_ms / 1000)
    if q.format == "msgpack" and height > 0:
        blocks = d.store.blocks

        def stored() -> bytes:
            raw = blocks.get_block_bytes(height)
            if raw is None:
                raise NotFound(f"no block at height {height}")
            return codec.encode({"block": raw, "certificate": blocks.get_certificate(height) or b""})

        return web.Response(body=await read_off_loop(request, stored), content_type=MSGPACK)
    return answer(await read_off_loop(request, lambda: block_doc(d, height)))


async def list_blocks(request: web.Request) -> web.Response:
    d = deps(request)
    q = parsing.query(request, api.BlocksQuery)
    head = d.store.head.height
    top = min(head, q.before - 1) if q.before is not None else head
    heights = range(top, max(-1, top - q.limit), -1)
    rows = await read_off_loop(request, lambda: [block_doc(d, h, full=False) for h in heights])
    return answer(api.BlockList(head=head, blocks=rows))


# --- metrics, openapi, web page --------------------------------------------------------------------------

async def metrics(request: web.Request) -> web.Response:
    data = generate_latest(deps(request).registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


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
    return answer(api.TimeOffset(offset_ms=t.offset_ms, allowed=t.allowed))


async def set_time_offset(request: web.Request) -> web.Response:
    require_token(request)
    d = deps(request)
    if not d.time_offset.allowed:
        raise ApiError("time offset is only allowed on testnet configs ([testnet] allow_time_offset)",
                       code="forbidden", http_status=403)
    doc = await bodies(request).load(request, lambda b: loads_json(b, max_containers=1, max_items=2))
    body = parsing.body(doc, api.TimeOffsetRequest, shape=f'{{"offset_ms": int 0..{api.MAX_TIME_OFFSET_MS}}}')
    d.time_offset.offset_ms = body.offset_ms
    d.log.warning("time_offset_set", offset_ms=body.offset_ms)
    return answer(api.TimeOffset(offset_ms=body.offset_ms, allowed=True))
