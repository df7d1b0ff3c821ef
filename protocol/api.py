"""The node API's JSON documents as typed, frozen msgspec structs: what a node answers and what a client
reads, in one place (the node encodes them, the SDK decodes them, the OpenAPI document is generated from
them).

Rule: a field is added here before any handler answers it; decoding is strict about the types of the
fields it knows and ignores fields it does not (a newer node may add some). Hex strings stay strings:
a document is what travels, not the domain object (`protocol.ledger` owns those).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

Hex32 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$", description="32 bytes as lowercase hex")]
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
    consensus: bool = False
    accepting: bool = False
    time_offset_ms: int = 0
    uptime_ms: int = 0


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


class TxStatus(Doc, frozen=True, kw_only=True):
    """`GET /txs/{hash}`: `pending`, or final `committed`/`failed` (with the receipt) or `dropped` (with a
    reason); `unknown` comes with a 404."""

    hash: str
    status: TxState
    height: int | None = None
    index: int | None = None
    receipt: Receipt | None = None
    reason: str | None = None

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


def decode_json(data: bytes | str, typ: type[Any]) -> Any:
    """Decode a JSON answer into `typ`; raises msgspec.ValidationError / DecodeError."""
    return msgspec.json.decode(data, type=typ)


def convert(doc: Any, typ: type[Any]) -> Any:
    """A decoded JSON value (dicts, lists) as `typ`; raises msgspec.ValidationError."""
    return msgspec.convert(doc, type=typ)


def to_builtins(doc: Any) -> Any:
    """A document as plain dicts and lists (for `--json` output and JSON answers)."""
    return msgspec.to_builtins(doc)
