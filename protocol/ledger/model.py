"""Values the ledger hands out (events, receipts, block results) and takes in (params, contexts).

Rule: results are frozen dataclasses with `to_value()` (bytes stay bytes, for canonical msgpack and
storage) and `to_json()` (bytes as lowercase hex, for the HTTP API). Nothing here touches state.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import msgpack

YEAR_MS = 365 * 24 * 3600 * 1000
DAY_MS = 24 * 3600 * 1000
BPS = 10_000
RATE_SCALE = 100_000_000  # FX rates: quote minor units per 10^8 base minor units
MAX_AMOUNT = 10**15  # largest amount in a single tx field
MAX_SUPPLY = 2**62  # largest total supply of one asset
MAX_TERM_MS = 10 * YEAR_MS
MAX_RATE_BPS = 100_000
ROLES = ("BANK", "SME", "INVESTOR", "REGULATOR")
MAX_KYC = 3


def jsonable(v: Any) -> Any:
    """Bytes to hex, recursively; everything else as is (ints, str, bool, None, lists, maps)."""
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


def _pack(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def _canonical(obj: Any) -> Any:
    """`obj` with every map's keys in sorted order (values built by the ledger: str keys, no floats)."""
    t = type(obj)
    if t is dict:
        return {k: _canonical(obj[k]) for k in sorted(obj)}
    if t is list or t is tuple:
        return [_canonical(x) for x in obj]
    return obj


def encode_value(obj: Any) -> bytes:
    """Canonical msgpack of a ledger value, byte-identical to `protocol.codec.encode` (tested) without its
    type walk: a value whose maps already iterate in key order (records read back from state, values
    built in order) is packed as it is; anything else is reordered first."""
    return _pack(obj if _in_order(obj) else _canonical(obj))


def _in_order(obj: Any) -> bool:
    t = type(obj)
    if t is dict:
        prev: str | None = None
        for k, v in obj.items():
            if prev is not None and k <= prev:
                return False
            prev = k
            if type(v) in _NESTED and not _in_order(v):
                return False
        return True
    if t is list or t is tuple:
        return all(type(v) not in _NESTED or _in_order(v) for v in obj)
    return True


_NESTED = frozenset({dict, list, tuple})


@dataclass(frozen=True, slots=True)
class Event:
    """One state change. `tx` is the hash of the tx that caused it, or None for time-driven ones."""

    height: int
    index: int
    kind: str
    tx: bytes | None
    accounts: tuple[bytes, ...]
    data: dict[str, Any]
    raw: bytes = field(default=b"", compare=False, repr=False)  # canonical bytes, when `emit` made it

    def to_value(self) -> dict[str, Any]:
        """The event as a map, keys in canonical (sorted) order so encoding needs no reordering."""
        return {"accounts": list(self.accounts), "data": self.data, "height": self.height,
                "index": self.index, "kind": self.kind, "tx": self.tx}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable(self.to_value())
        return out

    @classmethod
    def from_value(cls, v: dict[str, Any]) -> Event:
        return cls(height=v["height"], index=v["index"], kind=v["kind"], tx=v["tx"],
                   accounts=tuple(v["accounts"]), data=v["data"])


@dataclass(frozen=True, slots=True)
class Receipt:
    """Outcome of one tx: status "ok" or "failed", a stable code ("ok" or a LedgerError code)."""

    tx_hash: bytes
    status: str
    code: str
    message: str
    events: tuple[Event, ...]

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_value(self) -> dict[str, Any]:
        return {"code": self.code, "events": [e.to_value() for e in self.events], "message": self.message,
                "status": self.status, "tx_hash": self.tx_hash}

    def encode(self) -> bytes:
        """Canonical bytes of `to_value()` (what is stored), splicing in the events' bytes that `emit`
        already encoded instead of encoding them again."""
        if not all(e.raw for e in self.events):
            return _pack(_canonical(self.to_value()))
        n = len(self.events)
        head = bytes([0x90 | n]) if n < 16 else (b"\xdc" + n.to_bytes(2, "big") if n < 65536
                                                  else b"\xdd" + n.to_bytes(4, "big"))
        return b"".join((b"\x85\xa4code", _pack(self.code), b"\xa6events", head, *(e.raw for e in self.events),
                         b"\xa7message", _pack(self.message), b"\xa6status", _pack(self.status),
                         b"\xa7tx_hash", _pack(self.tx_hash)))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable(self.to_value())
        return out


@dataclass(frozen=True, slots=True)
class BlockResult:
    receipts: list[Receipt]
    events: list[Event]  # time-driven transitions, run before the block's txs
    receipt_bytes: tuple[bytes, ...]  # canonical bytes of each receipt (what is stored and served)
    events_bytes: bytes  # canonical bytes of `events` as a list
    results_root: bytes  # protocol.results.results_root of the two: block height+2 carries it

    def to_value(self) -> dict[str, Any]:
        return {"receipts": [r.to_value() for r in self.receipts],
                "events": [e.to_value() for e in self.events]}


@dataclass(frozen=True, slots=True)
class Params:
    """Ledger parameters, fixed at genesis (`spec["params"]`). All ints: ms, bps, points."""

    grace_ms: int = 7 * DAY_MS  # overdue loan -> default
    due_soon_ms: int = 3 * DAY_MS  # risk_due_soon this long before a due date
    util_alert_bps: int = 8_000  # risk_limit_utilisation when used/limit reaches this
    max_contributors: int = 1_000
    max_collateral: int = 16
    max_sched_per_block: int = 10_000
    score_base: int = 600
    score_min: int = 300
    score_max: int = 900
    w_on_time: int = 20
    w_late: int = 30
    w_default: int = 150
    w_honoured: int = 10
    w_recv_late: int = 40
    w_payment: int = 1
    payment_cap: int = 50
    frozen_retry_ms: int = 3_600_000  # a time-driven payout to a frozen participant is retried this much later

    def to_value(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_value(cls, v: dict[str, Any]) -> Params:
        return cls(**{k: int(x) for k, x in v.items() if k in _PARAM_NAMES})


_PARAM_NAMES = frozenset(f.name for f in fields(Params))
PARAM_NAMES = _PARAM_NAMES


@dataclass(slots=True)
class BlockCtx:
    """Per-block execution context: height, block time, params and the running event index."""

    height: int
    time: int
    params: Params
    next_event: int = 0
    events: list[Event] = field(default_factory=list)  # time-driven events of this block


@dataclass(slots=True)
class TxCtx:
    """Per-tx context handed to a kind's validate/apply.

    `key` signed the tx; `actor` is the participant id it signs for (differs after rotate-key);
    `f` holds the body fields parsed by the kind's field spec; `scratch` carries what validate looked
    up to apply; `events` collects this tx's events.
    """

    block: BlockCtx
    tx_hash: bytes
    key: bytes
    actor: bytes
    roles: frozenset[str]
    f: dict[str, Any]
    scratch: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    @property
    def time(self) -> int:
        return self.block.time

    @property
    def height(self) -> int:
        return self.block.height

    @property
    def params(self) -> Params:
        return self.block.params
