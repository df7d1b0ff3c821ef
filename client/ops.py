"""What the SDK does, written once without I/O: every call is a generator that yields `Request`,
`Sleep` or `NOW` and gets back a `Response`, nothing, or the monotonic time; `Client` drives it with
urllib and `AsyncClient` with aiohttp, so both have the same behaviour by construction (like h11: bytes
and time in, actions out).

A transport error is thrown into the generator at its `yield`: `Unreachable` after the driver has tried
every node it knows, `ClientError` (with the node's code) for an answer outside `Request.ok`.
Rule: everything bounded: following a tx stops at its timeout, re-submission by hash happens only when a
node does not know the tx, and the nonce book holds one counter per signing key used through the client.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from client import light
from client.errors import (
    BadResponse,
    ClientError,
    NotFound,
    ProofError,
    TxDropped,
    TxFailed,
    TxRejected,
    TxTimeout,
)
from client.txbuild import MEMO_FIELD, body_fields, build, sign
from client.txbuild import open_memo as open_sealed
from client.wallet import Wallet
from protocol import api, codec
from protocol.block import Block, BlockHeader
from protocol.errors import ProtocolError
from protocol.tx import SignedTx

T = TypeVar("T")
MSGPACK = "application/msgpack"
JSON = "application/json"
ALREADY_THERE = frozenset({"duplicate", "already_committed"})  # a re-submission the node already has
STALE_NONCE = frozenset({"nonce_too_low", "nonce_conflict", "nonce_too_high"})
DEFAULT_WAIT_S = 30.0
BLOCK_ANSWER_LIMITS = codec.Limits(max_bytes=64 * 1024 * 1024, max_bin=64 * 1024 * 1024, max_depth=2, max_map=2)
POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = None
    ok: tuple[int, ...] = (200,)
    auth: bool = False


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes
    url: str  # the node that answered


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


class _Now:
    """Ask the driver for `time.monotonic()`."""


NOW = _Now()
Op = Generator[Request | Sleep | _Now, Any, T]


@dataclass(slots=True)
class Session:
    """What a client remembers between calls: the chain id and the next nonce of each signing key."""

    chain: str | None = None
    nonces: dict[bytes, int] = field(default_factory=dict)

    def forget(self, key: bytes) -> None:
        self.nonces.pop(key, None)


# ---- decoding ------------------------------------------------------------------------------------

def decode(resp: Response, typ: type[T]) -> T:
    try:
        out: T = api.decode_json(resp.body, typ)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadResponse(f"{resp.url}: the answer is not a valid {typ.__name__}: {exc}") from None
    return out


def error_of(status: int, content_type: str, body: bytes, what: str) -> ClientError:
    """The exception for a non-OK answer: the node's code and message, `NotFound` for not_found."""
    code, message, doc = "http_error", f"HTTP {status}", None
    if content_type == JSON:
        try:
            doc = msgspec.json.decode(body)
        except msgspec.DecodeError:
            doc = None
        if isinstance(doc, dict):
            code = str(doc.get("error") or code)
            message = str(doc.get("message") or message)
    cls = NotFound if code == "not_found" else ClientError
    return cls(f"{what}: {message}", code=code, http_status=status, body=doc)


def get(path: str, typ: type[T], **params: Any) -> Op[T]:
    q = {k: v for k, v in params.items() if v is not None}
    resp: Response = yield Request("GET", path + ("?" + urllib.parse.urlencode(q) if q else ""))
    return decode(resp, typ)


def quote(ident: str | bytes) -> str:
    return urllib.parse.quote(ident.hex() if isinstance(ident, bytes) else str(ident), safe="")


# ---- node and ledger reads -------------------------------------------------------------------------

def account(ident: str | bytes, proof: bool = False) -> Op[api.Account]:
    return (yield from get(f"/accounts/{quote(ident)}", api.Account, proof=1 if proof else None))


def query(thing: str, ident: str | bytes) -> Op[dict[str, Any]]:
    return (yield from get(f"/{thing}/{quote(ident)}", dict))


def tx_status(tx_hash: str | bytes) -> Op[api.TxStatus]:
    """`GET /txs/{hash}`; a 404 is the status `unknown` (the node never heard of the tx)."""
    resp: Response = yield Request("GET", f"/txs/{quote(tx_hash)}", ok=(200, 404))
    return decode(resp, api.TxStatus)


def block_bytes(height: int) -> Op[bytes]:
    """The raw canonical block (msgpack) at `height` and its certificate, as the node stores them."""
    resp: Response = yield Request("GET", f"/blocks/{int(height)}?format=msgpack")
    try:
        doc = codec.decode(resp.body, BLOCK_ANSWER_LIMITS)
        raw = doc["block"]
    except (ProtocolError, KeyError, TypeError):
        raise BadResponse(f"{resp.url}: block {height} is not a msgpack {{block, certificate}} map") from None
    if not isinstance(raw, bytes):
        raise BadResponse(f"{resp.url}: block {height} carries no block bytes")
    return raw


def signed_tx(tx_hash: str | bytes) -> Op[SignedTx]:
    """The signed tx as committed: its location from `GET /txs/{hash}`, its bytes from the block."""
    st = yield from tx_status(tx_hash)
    if st.height is None or st.index is None:
        raise NotFound(f"tx {st.hash} is {st.status}, not in a block")
    raw = yield from block_bytes(st.height)
    try:
        return SignedTx.from_wire(Block.decode(raw).txs[st.index])
    except (ProtocolError, IndexError):
        raise BadResponse(f"block {st.height} has no valid tx at index {st.index}") from None


# ---- submitting ------------------------------------------------------------------------------------

def submit(raws: Sequence[bytes]) -> Op[api.SubmitResult]:
    """POST one signed tx or a batch; a full mempool (503) still answers the per-tx rows."""
    if not raws:
        raise ClientError("nothing to submit", code="usage")
    if len(raws) == 1:
        body = raws[0]
    else:
        try:
            body = codec.encode([codec.decode(r) for r in raws])
        except ProtocolError as exc:
            raise ClientError(f"a tx in the batch is not canonical msgpack: {exc.message}", code="bad_tx") from None
    resp: Response = yield Request("POST", "/txs", body=body, content_type=MSGPACK, ok=(200, 503))
    if resp.status == 503:  # a full mempool answers the per-tx rows; a closed intake only an error
        try:
            full: api.SubmitResult = api.decode_json(resp.body, api.SubmitResult)
            return full
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise error_of(resp.status, resp.content_type, resp.body, "POST /txs") from None
    return decode(resp, api.SubmitResult)


def submit_one(raw: bytes, what: str) -> Op[api.SubmitRow]:
    """Submit one tx; an answer that it is already there counts as accepted. Raises TxRejected."""
    res = yield from submit([raw])
    if len(res.results) != 1:
        raise BadResponse(f"{what}: expected one result row, got {len(res.results)}")
    row = res.results[0]
    if not row.accepted and row.code not in ALREADY_THERE:
        raise TxRejected(f"{what} was rejected: {row.message or row.code}", code=row.code, body=row)
    return row


def chain_id(session: Session) -> Op[str]:
    if session.chain is None:
        st = yield from get("/status", api.Status)
        session.chain = st.chain_id
    return session.chain


def reserve_nonce(session: Session, key: bytes) -> Op[int]:
    """The next nonce of a signing key: asked of the node once, then counted locally."""
    if key not in session.nonces:
        try:
            acc = yield from account(key)
            fetched = acc.nonce if acc.id == key.hex() else int(acc.signing_key_nonce or 0)
        except NotFound:
            fetched = 0
        session.nonces.setdefault(key, fetched)
    n = session.nonces[key]
    session.nonces[key] = n + 1
    return n


def send(session: Session, wallet: Wallet, kind: str, values: Mapping[str, Any], nonce: int | None) -> Op[SignedTx]:
    """Check, build, sign and submit one tx of `kind`; the nonce is tracked unless given."""
    fields = body_fields(kind, values)  # a bad field fails here, before a nonce is taken
    chain = yield from chain_id(session)
    key = wallet.public_key
    n = nonce if nonce is not None else (yield from reserve_nonce(session, key))
    tx = sign(wallet, build(kind, fields, chain=chain, sender=key, nonce=n))
    try:
        yield from submit_one(tx.raw, f"{kind} {tx.hash_hex}")
    except ClientError:
        session.forget(key)  # the node did not take it: the next tx asks for the nonce again
        raise
    return tx


# ---- following a tx to a final status ---------------------------------------------------------------

def follow(tx_hash: str, raw: bytes | None, timeout: float = DEFAULT_WAIT_S, poll: float = POLL_S) -> Op[api.TxStatus]:
    """Poll `GET /txs/{hash}` until committed, failed or dropped. When the node does not know the tx
    (a failover node, or a node that lost it) the tx is re-submitted by its bytes: idempotent, since a
    node answers `duplicate`/`already_committed` for a tx it has. Raises TxTimeout at `timeout`."""
    start = yield NOW
    last = "unknown"
    while True:
        st = yield from tx_status(tx_hash)
        if st.final:
            return st
        last = st.status
        if st.status == "unknown" and raw is not None:
            yield from submit_one(raw, f"re-submission of {tx_hash}")
        now = yield NOW
        if now - start >= timeout:
            raise TxTimeout(f"tx {tx_hash} is not final after {timeout:g} s (last status: {last})",
                            last_status=last)
        yield Sleep(poll)


def outcome(st: api.TxStatus, session: Session | None = None, sender: bytes | None = None) -> api.Receipt:
    """The receipt of a final status: committed returns it, failed raises TxFailed, dropped TxDropped."""
    if st.status == "dropped":
        if session is not None and sender is not None:
            session.forget(sender)  # its nonce was never used
        raise TxDropped(f"tx {st.hash} was dropped: {st.reason or 'no reason given'}", reason=st.reason or "")
    if st.receipt is None:
        raise BadResponse(f"tx {st.hash} is {st.status} but the node sent no receipt")
    receipt = msgspec.structs.replace(st.receipt, height=st.height, index=st.index)
    if st.status == "failed" or not receipt.ok:
        raise TxFailed(f"tx {st.hash} failed at height {st.height}: {receipt.code}: {receipt.message}",
                       code=receipt.code, receipt=receipt)
    return receipt


def wait(tx_hash: str, raw: bytes | None, timeout: float, session: Session | None = None,
         sender: bytes | None = None) -> Op[api.Receipt]:
    st = yield from follow(tx_hash, raw, timeout)
    return outcome(st, session, sender)


def open_memo(wallet: Wallet, tx_hash: str | bytes) -> Op[str]:
    """The memo of a committed transfer, opened with the recipient's wallet."""
    tx = yield from signed_tx(tx_hash)
    memo = tx.body.get(MEMO_FIELD)
    if not isinstance(memo, bytes):
        raise NotFound(f"tx {tx.hash_hex} ({tx.kind}) carries no memo", code="no_memo")
    return open_sealed(wallet, memo)


def block_answer(height: int) -> Op[bytes]:
    """`GET /blocks/{height}?format=msgpack` as served: canonical msgpack {block, certificate}."""
    resp: Response = yield Request("GET", f"/blocks/{int(height)}?format=msgpack")
    return resp.body


def committed_header(trust: light.Trust, height: int, timeout: float) -> Op[BlockHeader]:
    """The header of block `height` once its commit certificate verifies against the trusted genesis
    validators; waits up to `timeout` for the block to be committed (an idle chain makes none)."""
    start = yield NOW
    while True:
        try:
            answer = yield from block_answer(height)
            break
        except NotFound:
            now = yield NOW
            if now - start >= timeout:
                raise TxTimeout(f"block {height}, whose header commits to the state the answer is proven in, "
                                f"was not committed within {timeout} s (an idle chain makes no blocks)",
                                last_status="not_found") from None
            yield Sleep(POLL_S)
    return light.committed_header(trust, answer, height)


def check_account(acc: api.Account, trust: light.Trust, ident: str | bytes | None, timeout: float
                  ) -> Op[api.Account]:
    """An account answer with proofs, checked as a light client (client/light.py): only its proven
    fields, each against its proof, under the state root in the certified header of block height+2
    (pipelined: `light.certifying_height`); waits up to `timeout` for that block."""
    doc = api.to_builtins(acc)
    height = light.proof_of(doc)["height"]
    wanted = doc.get("id") if ident is None else ident
    try:
        pid = wanted if isinstance(wanted, bytes) else bytes.fromhex(str(wanted))
    except ValueError:
        pid = b""
    if len(pid) != 32:
        raise ProofError("an account id is 64 hex characters", code="answer_mismatch")
    header = yield from committed_header(trust, light.certifying_height(height), timeout)
    out: api.Account = api.convert(light.verify_account(doc, pid, header.state_root), api.Account)
    return out


def verified_account(ident: str | bytes, trust: light.Trust, timeout: float) -> Op[api.Account]:
    acc = yield from account(ident, proof=True)
    return (yield from check_account(acc, trust, ident, timeout))


# ---- plain documents ----------------------------------------------------------------------------------

def text(path: str) -> Op[str]:
    resp: Response = yield Request("GET", path)
    return resp.body.decode("utf-8", errors="replace")


def post_json(path: str, doc: Any, typ: type[T], auth: bool = False) -> Op[T]:
    resp: Response = yield Request("POST", path, body=msgspec.json.encode(doc), content_type=JSON, auth=auth)
    return decode(resp, typ)
