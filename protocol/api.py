"""The node API's documents as typed, frozen msgspec structs: what a node parses (path, query and body
of each request) and answers, and what a client reads, in one place. The node parses requests and
encodes answers with them, the SDK decodes answers with them, and the OpenAPI document is generated
from them (node/api/openapi.py), so the three cannot drift apart.

Rule: a field is added here before any handler answers it; decoding is strict about the types and
bounds of the fields it knows and ignores fields it does not (a newer node may add some). Ledger
objects (`Loan`, `Receivable`, ...) come from `protocol.ledger.query` as JSON-ready dicts: the node checks
each against its model before answering (`conform`). Hex strings stay strings: a document is what
travels, not the domain object (`protocol.ledger` owns those).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from protocol.ledger.events import EVENTS

MAX_HEIGHT = 2**63 - 1
MAX_TIME_OFFSET_MS = 10 * 365 * 24 * 3600 * 1000
MAX_TX_HEX = 2 * 64 * 1024  # hex characters of the largest signed tx (protocol.tx.MAX_TX_BYTES)
MAX_BATCH_TXS = 10_000  # the API's hard cap on txs per POST (a node's config may set fewer)
MAX_BLOCK_LIST = 100
MAX_BLOCK_WAIT_MS = 5_000  # GET /blocks/{height}?wait_ms=: the longest an answer waits for the block
MAX_EVENTS_LIMIT = 1000

Hex32 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$", description="32 bytes as lowercase hex")]
IdParam = Annotated[str, msgspec.Meta(pattern="^[0-9a-fA-F]{64}$", description="32 bytes as hex (either case)")]
AssetId = Annotated[str, msgspec.Meta(pattern="^[A-Z0-9][A-Z0-9._-]{0,23}$", description="asset id, e.g. CNY.BANKA")]
Height = Annotated[int, msgspec.Meta(ge=0, le=MAX_HEIGHT)]
EventKind = Annotated[str, msgspec.Meta(
    pattern="^(?:" + "|".join(sorted(EVENTS)) + ")$",
    description="an event kind the ledger emits (docs/ledger.md, Events), e.g. funds_moved: a payment of any kind "
                "is funds_moved with its reason; there is no event called transfer")]
HexTx = Annotated[str, msgspec.Meta(pattern="^(?:[0-9a-fA-F]{2})*$", max_length=MAX_TX_HEX,
                                    description="hex of a canonical signed tx {sig, tx}")]
TxState = Literal["pending", "committed", "failed", "dropped", "unknown"]
FINAL_STATES: frozenset[str] = frozenset({"committed", "failed", "dropped"})


class Doc(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every API document."""


class Error(Doc, frozen=True, kw_only=True):
    error: Annotated[str, msgspec.Meta(description="stable machine-readable code")]
    message: str


class Health(Doc, frozen=True, kw_only=True):
    ok: bool
    node: str
    accepting: bool
    problems: list[str] = []


class Backfill(Doc, frozen=True, kw_only=True):
    running: bool = False
    remaining_heights: Annotated[int, msgspec.Meta(description="heights below history_from still to fetch")] = 0


class Status(Doc, frozen=True, kw_only=True):
    node_id: Hex32
    chain_id: str
    height: int
    view: int
    primary: str | None
    last_block_hash: str | None
    state_root: str | None
    peers: int
    mempool_size: int
    syncing: bool
    name: str = ""
    genesis_hash: str = ""
    role: Literal["validator", "observer"] = "validator"
    primary_name: str | None = None
    mempool_bytes: int = 0
    sync_target: int | None = None
    sync_progress: int | None = None
    history_from: Annotated[int, msgspec.Meta(description="lowest height from which this node serves every "
                                              "block, tx, receipt and event (0: all, from genesis)")] = 0
    backfill: Backfill = Backfill()
    mempool_ready: int = 0
    consensus: bool = False
    accepting: bool = False
    healthy: bool = True
    problems: list[str] = []
    time_offset_ms: int = 0
    uptime_ms: int = 0


class Peer(Doc, frozen=True, kw_only=True):
    public_key: str
    name: str
    address: str
    direction: Literal["in", "out"]
    validator: bool
    connected_since_ms: int
    rtt_ms: float | None
    bytes_in: int
    bytes_out: int
    frames_in: int
    frames_out: int
    queue_frames: int
    queue_bytes: int
    dropped_frames: int


class Peers(Doc, frozen=True, kw_only=True):
    count: int
    peers: list[Peer]


class SubmitJson(Doc, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /txs` as JSON: the hex of each canonical signed tx."""

    txs: Annotated[list[HexTx], msgspec.Meta(min_length=1, max_length=MAX_BATCH_TXS)]


class SubmitRow(Doc, frozen=True, kw_only=True):
    hash: str | None
    status: Literal["accepted", "rejected"]
    accepted: bool
    code: str
    message: str = ""


class SubmitResult(Doc, frozen=True, kw_only=True):
    accepted: int
    rejected: int
    results: list[SubmitRow]
    error: str | None = None
    message: str | None = None


class Event(Doc, frozen=True, kw_only=True):
    height: int
    index: int
    kind: str
    tx: str | None
    accounts: list[str]
    data: dict[str, Any]


class Receipt(Doc, frozen=True, kw_only=True, omit_defaults=True):
    """The outcome of one committed tx: status `ok` or `failed` with a stable code, and its events.
    `height` and `index` say where it was committed (filled in by the SDK from the tx status)."""

    tx_hash: str
    status: Literal["ok", "failed"]
    code: str
    message: str
    events: list[Event]
    height: int | None = None
    index: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def events_of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


class TxStatus(Doc, frozen=True, kw_only=True, omit_defaults=True):
    """`GET /txs/{hash}`: `pending`, or final `committed`/`failed` (with the receipt) or `dropped` (with a
    reason); `unknown` comes with a 404 and the error fields."""

    hash: str
    status: TxState
    height: int | None = None
    index: int | None = None
    receipt: Receipt | None = None
    reason: Annotated[str | None, msgspec.Meta(
        description="dropped only, why this node dropped the tx: nonce_used | expired | sender_frozen | "
                    "not_registered | forbidden_role | unknown_kind | evicted | invalid")] = None
    dropped_at: Annotated[int | None, msgspec.Meta(description="dropped only: when, unix ms")] = None
    error: str | None = None
    message: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATES


class BlockSummary(Doc, frozen=True, kw_only=True):
    height: int
    hash: str
    time: int
    tx_count: int
    state_root_after: str | None = None
    proposer: str | None = None
    proposer_name: str | None = None
    header: dict[str, Any] | None = None
    genesis: bool = False


class Block(BlockSummary, frozen=True, kw_only=True):
    txs: list[str] = []
    certificate: Any = None


class BlockList(Doc, frozen=True, kw_only=True):
    head: int
    blocks: list[BlockSummary]


class TimeOffset(Doc, frozen=True, kw_only=True):
    offset_ms: int
    allowed: bool


class TimeOffsetRequest(Doc, frozen=True, kw_only=True, forbid_unknown_fields=True):
    offset_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_TIME_OFFSET_MS)]


class Account(Doc, frozen=True, kw_only=True):
    id: str
    registered: bool
    nonce: int
    balances: dict[str, int]
    name: str | None = None
    roles: list[str] = []
    kyc: int | None = None
    frozen: bool = False
    signing_key: str | None = None
    signing_key_nonce: int | None = None
    credit_score: int | None = None
    proof: dict[str, Any] | None = None
    verified_height: int | None = None


# ---- ledger objects (from protocol.ledger.query; fields vary by status, so most are optional) ----------

class Asset(Doc, frozen=True, kw_only=True):
    id: str
    issuer: str
    decimals: int
    issued: int
    redeemed: int
    supply: int
    kind: str = "deposit"


class Receivable(Doc, frozen=True, kw_only=True):
    id: str
    creditor: str
    debtor: str
    holder: str
    asset: str
    face: int
    outstanding: int
    due: int
    status: str
    doc: str = ""
    issued: int | None = None
    parent: str = ""
    children: list[str] = []
    split_total: int = 0
    pledged_to: str = ""
    loan: str = ""
    offer: dict[str, Any] | None = None


class Collateral(Doc, frozen=True, kw_only=True):
    id: str
    owner: str
    verifier: str
    category: str
    valuation: int
    asset: str
    status: str
    doc: str = ""
    registered: int | None = None
    pledged_to: str = ""
    loan: str = ""


class Loan(Doc, frozen=True, kw_only=True):
    id: str
    borrower: str
    lender: str
    asset: str
    amount: int
    term_ms: int
    collateral: list[str]
    status: str
    applied: int | None = None
    start: int | None = None
    due: int | None = None
    acc_at: int | None = None
    rate_bps: int | None = None
    penalty_bps: int | None = None
    principal: int = 0
    interest: int = 0
    penalty: int = 0
    repaid: int = 0
    owed_now: int = 0


class Contribution(Doc, frozen=True, kw_only=True):
    investor: str
    amount: int


class Campaign(Doc, frozen=True, kw_only=True):
    id: str
    owner: str
    asset: str
    target: int
    minimum: int
    deadline: int
    raised: int
    status: str
    contributors: int = 0
    created: int | None = None
    doc: str = ""
    shares: str = ""
    contributions: list[Contribution] = []


class FxQuote(Doc, frozen=True, kw_only=True):
    id: str
    bank: str
    base: str
    quote: str
    rate: int
    amount: int
    remaining: int
    expiry: int
    status: str
    created: int | None = None


class Credit(Doc, frozen=True, kw_only=True):
    id: str
    score: int
    history: dict[str, int]
    limits: list[dict[str, Any]]


class EventPage(Doc, frozen=True, kw_only=True):
    events: list[Event]
    more: bool


class Trace(Doc, frozen=True, kw_only=True):
    tx: str
    height: int
    events: list[Event]
    flows: list[dict[str, Any]]


# ---- request parameters (path and query), parsed by the node with these models --------------------------

class HashPath(Doc, frozen=True, kw_only=True):
    hash: IdParam


class TxHashPath(Doc, frozen=True, kw_only=True):
    tx_hash: IdParam


class IdPath(Doc, frozen=True, kw_only=True):
    id: IdParam


class AssetPath(Doc, frozen=True, kw_only=True):
    id: AssetId


class HeightPath(Doc, frozen=True, kw_only=True):
    height: Height


class BlockQuery(Doc, frozen=True, kw_only=True):
    format: Literal["json", "msgpack"] = "json"
    # a block not stored yet: wait up to this long for it before answering 404 (a follower's long poll)
    wait_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_BLOCK_WAIT_MS)] = 0


class BlocksQuery(Doc, frozen=True, kw_only=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_BLOCK_LIST)] = 20
    before: Annotated[int, msgspec.Meta(ge=1, le=MAX_HEIGHT)] | None = None


class AccountQuery(Doc, frozen=True, kw_only=True):
    proof: Literal["0", "1"] = "0"


class EventsQuery(Doc, frozen=True, kw_only=True):
    account: IdParam | None = None
    kind: EventKind | None = None
    from_height: Height | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_EVENTS_LIMIT)] = 100


def decode_json(data: bytes | str, typ: type[Any]) -> Any:
    """Decode a JSON answer into `typ`; raises msgspec.ValidationError / DecodeError."""
    return msgspec.json.decode(data, type=typ)


def convert(doc: Any, typ: type[Any]) -> Any:
    """A decoded JSON value (dicts, lists) as `typ`; raises msgspec.ValidationError."""
    return msgspec.convert(doc, type=typ)


def conform(doc: dict[str, Any], typ: type[Any]) -> dict[str, Any]:
    """Check a JSON-ready dict against its model (types and bounds of every field the model knows) and
    return it unchanged; raises msgspec.ValidationError when the node would answer off its schema."""
    msgspec.convert(doc, type=typ)
    return doc


def encode(doc: Any) -> bytes:
    return msgspec.json.encode(doc)


def to_builtins(doc: Any) -> Any:
    """A document as plain dicts and lists (for `--json` output and JSON answers)."""
    return msgspec.to_builtins(doc)
