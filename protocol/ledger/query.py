"""Read-only queries for the API and CLI: pure functions of a `StateReader`, JSON-ready answers.

Rule: never write; bytes come out as lowercase hex, money as ints; every scan is bounded by a named
limit and says when it stopped early (`more` / `truncated`). Unknown objects raise
`LedgerError("not_found")` naming what was asked for ("no asset X"); malformed ids, and event kinds
that are not in `events.EVENTS`, raise `LedgerError("bad_field")`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from protocol.ledger import keys
from protocol.ledger.engine import next_nonce
from protocol.ledger.errors import LedgerError
from protocol.ledger.events import EVENTS, MONEY_EVENTS
from protocol.ledger.kinds.loans import accrue, owed
from protocol.ledger.model import Event, jsonable
from protocol.ledger.registry import KINDS
from protocol.ledger.store import credit_stats, load, load_int, load_params, unpack
from protocol.state import StateReader

MAX_BALANCES = 256
MAX_EVENTS = 1_000
MAX_CONTRIBUTIONS = 1_000
TRACE_DEPTH = 3
TRACE_FANOUT = 5
TRACE_SCAN = 5_000
FLOW_KINDS = MONEY_EVENTS

Id = bytes | str


def to_id(v: Id) -> bytes:
    if isinstance(v, str):
        try:
            b = bytes.fromhex(v)
        except ValueError:
            raise LedgerError("bad_field", "ids are 64 hex characters") from None
    else:
        b = bytes(v)
    if len(b) != 32:
        raise LedgerError("bad_field", "ids are 32 bytes (64 hex characters)")
    return b


def status(state: StateReader) -> dict[str, Any]:
    """Ledger height and time as the ledger last saw them."""
    return {"height": load_int(state, keys.HEIGHT), "time": load_int(state, keys.TIME)}


def account(state: StateReader, account_id: Id) -> dict[str, Any]:
    pid = to_id(account_id)
    rec = load(state, keys.participant(pid))
    start, stop = keys.balances_of(pid)
    balances: dict[str, int] = {}
    for k, v in state.iter_range(start, stop):
        if len(balances) >= MAX_BALANCES:
            break
        balances[k[len(start):].decode("ascii")] = int(unpack(v))
    nonce = next_nonce(state, pid)
    if rec is None and not balances and nonce == 0:
        raise LedgerError("not_found", f"no account {pid.hex()}")
    out: dict[str, Any] = {"id": pid.hex(), "registered": rec is not None, "nonce": nonce,
                           "balances": balances}
    if rec is not None:
        key: bytes = rec["key"]
        out.update(name=rec["name"], roles=rec["roles"], kyc=rec["kyc"], frozen=rec["frozen"],
                   signing_key=key.hex(), signing_key_nonce=next_nonce(state, key),
                   credit_score=credit_stats(state, pid, load_params(state))["score"])
    return out


def _found(state: StateReader, key: bytes, what: str, name: str) -> dict[str, Any]:
    rec = load(state, key)
    if rec is None:
        raise LedgerError("not_found", f"no {what} {name}")
    return rec


def asset(state: StateReader, asset_id: str) -> dict[str, Any]:
    try:
        key = keys.asset(asset_id)
    except UnicodeEncodeError:
        raise LedgerError("bad_field", "asset ids are ASCII") from None
    rec = _found(state, key, "asset", asset_id)
    out: dict[str, Any] = jsonable(rec)
    out["supply"] = rec["issued"] - rec["redeemed"]
    return out


def _need(state: StateReader, key_of: Callable[[bytes], bytes], what: str, rid: Id) -> dict[str, Any]:
    b = to_id(rid)
    return _found(state, key_of(b), what, b.hex())


def _record(state: StateReader, key_of: Callable[[bytes], bytes], what: str, rid: Id) -> dict[str, Any]:
    out: dict[str, Any] = jsonable(_need(state, key_of, what, rid))
    return out


def receivable(state: StateReader, rid: Id) -> dict[str, Any]:
    return _record(state, keys.receivable, "receivable", rid)


def collateral(state: StateReader, cid: Id) -> dict[str, Any]:
    return _record(state, keys.collateral, "collateral", cid)


def fx_quote(state: StateReader, qid: Id) -> dict[str, Any]:
    return _record(state, keys.fx_quote, "FX quote", qid)


def loan(state: StateReader, lid: Id) -> dict[str, Any]:
    """The loan record plus `owed_now`: principal + interest + penalty accrued to the last block time."""
    rec = _need(state, keys.loan, "loan", lid)
    if rec["status"] in ("active", "overdue"):
        accrue(rec, load_int(state, keys.TIME))
    out: dict[str, Any] = jsonable(rec)
    out["owed_now"] = owed(rec)
    out.pop("rem_i", None)
    out.pop("rem_p", None)
    return out


def campaign(state: StateReader, cid: Id) -> dict[str, Any]:
    c = to_id(cid)
    out: dict[str, Any] = jsonable(_need(state, keys.campaign, "campaign", c))
    start, stop = keys.contributions_of(c)
    contribs: list[dict[str, Any]] = []
    for k, v in state.iter_range(start, stop):
        if len(contribs) >= MAX_CONTRIBUTIONS:
            break
        contribs.append({"investor": k[len(start):].hex(), "amount": int(unpack(v))})
    out["contributions"] = contribs
    return out


def credit(state: StateReader, account_id: Id) -> dict[str, Any]:
    """Score, the history counters behind it, and the credit limits banks set for this account."""
    pid = to_id(account_id)
    if load(state, keys.participant(pid)) is None:
        raise LedgerError("not_found", f"no participant {pid.hex()}")
    stats = credit_stats(state, pid, load_params(state))
    start, stop = keys.limits_of(pid)
    limits: list[dict[str, Any]] = []
    for _, v in state.iter_range(start, stop):
        lim = unpack(v)
        lim["utilisation_bps"] = lim["used"] * 10_000 // lim["limit"] if lim["limit"] else 0
        limits.append(jsonable(lim))
        if len(limits) >= MAX_BALANCES:
            break
    return {"id": pid.hex(), "score": stats["score"],
            "history": {k: v for k, v in stats.items() if k != "score"}, "limits": limits}


def _event_at(state: StateReader, height: int, index: int) -> Event | None:
    raw = state.get(keys.event(height, index))
    return None if raw is None else Event.from_value(unpack(raw))


def _pos_of(index_key: bytes) -> tuple[int, int]:
    tail = index_key[-12:]
    return keys.unbe64(tail[:8]), keys.unbe32(tail[8:])


def check_event_kind(kind: str) -> None:
    """`bad_field` unless `kind` is an event kind the ledger emits; a tx kind's name gets its events."""
    if kind in EVENTS:
        return
    spec = KINDS.get(kind)
    if spec is not None:
        raise LedgerError("bad_field", f"field 'kind': '{kind}' is a tx kind, not an event kind; "
                                       f"it emits {', '.join(spec.events)}")
    raise LedgerError("bad_field", f"field 'kind': no event kind {kind[:64]!r} (the event kinds are listed "
                                   "in docs/ledger.md and the API's OpenAPI document)")


def events(state: StateReader, account: Id | None = None, kind: str | None = None, from_height: int | None = None,
           limit: int = 100) -> dict[str, Any]:
    """Events in (height, index) order from `from_height`, filtered by account and/or kind."""
    limit = max(1, min(limit, MAX_EVENTS))
    h0 = max(0, from_height or 0)
    if kind is not None:
        check_event_kind(kind)
    if account is not None:
        prefix = keys.P_EV_ACCOUNT + to_id(account)
    elif kind is not None:
        prefix = keys.ev_kind_prefix(kind)
    else:
        prefix = keys.P_EVENT
    out: list[dict[str, Any]] = []
    scanned = 0
    more = False
    for k, v in state.iter_range(prefix + keys.be64(h0), keys.prefix_end(prefix)):
        scanned += 1
        if len(out) >= limit or scanned > MAX_EVENTS * 10:
            more = True
            break
        ev = Event.from_value(unpack(v)) if prefix == keys.P_EVENT else _event_at(state, *_pos_of(k))
        if ev is None or (kind is not None and ev.kind != kind):
            continue
        out.append(ev.to_json())
    return {"events": out, "more": more}


def _edge(ev: Event) -> dict[str, Any]:
    d = ev.data
    return {"height": ev.height, "index": ev.index, "tx": ev.tx.hex() if ev.tx else None, "kind": ev.kind,
            "from": d["from"].hex() if "from" in d else None, "to": d["to"].hex() if "to" in d else None,
            "asset": d["asset"], "amount": d["amount"], "reason": d.get("reason", ""),
            "escrow": d["escrow"].hex() if "escrow" in d else None}


def _flows_of(state: StateReader, acct: bytes, asset_id: str, pos: tuple[int, int], incoming: bool
              ) -> tuple[list[Event], bool]:
    """Up to TRACE_FANOUT money events into `acct` before `pos` (newest first) or out of it after `pos`."""
    prefix = keys.P_EV_ACCOUNT + acct
    side = "to" if incoming else "from"
    if incoming:
        rng = (prefix, prefix + keys.event_pos(*pos))
    else:
        rng = (prefix + keys.event_pos(pos[0], pos[1] + 1), keys.prefix_end(prefix))
    found: deque[Event] = deque(maxlen=TRACE_FANOUT)
    scanned = 0
    truncated = False
    for k, _ in state.iter_range(*rng):
        scanned += 1
        if scanned > TRACE_SCAN:
            truncated = True
            break
        ev = _event_at(state, *_pos_of(k))
        if ev is None or ev.kind not in FLOW_KINDS or ev.data.get("asset") != asset_id:
            continue
        if ev.data.get(side) != acct:
            continue
        found.append(ev)
        if not incoming and len(found) == TRACE_FANOUT:
            break
    return (list(reversed(found)) if incoming else list(found)), truncated


def _walk(state: StateReader, ev: Event, incoming: bool, depth: int, budget: list[int]) -> dict[str, Any]:
    node = _edge(ev)
    acct = ev.data.get("from" if incoming else "to")
    if depth <= 0 or budget[0] <= 0 or not isinstance(acct, bytes):
        return node
    flows, truncated = _flows_of(state, acct, ev.data["asset"], (ev.height, ev.index), incoming)
    budget[0] -= 1
    node["upstream" if incoming else "downstream"] = [_walk(state, f, incoming, depth - 1, budget) for f in flows]
    if truncated:
        node["truncated"] = True
    return node


def trace(state: StateReader, tx_hash: Id, depth: int = TRACE_DEPTH) -> dict[str, Any]:
    """Where the money of one tx came from (upstream) and where it went next (downstream), bounded."""
    h = to_id(tx_hash)
    rec = state.get(keys.tx_record(h))
    if rec is None:
        raise LedgerError("not_found", f"no executed tx {h.hex()}")
    height, first, count = unpack(rec)
    evs = [e for e in (_event_at(state, height, first + i) for i in range(min(count, MAX_EVENTS)))
           if e is not None]
    depth = max(0, min(depth, TRACE_DEPTH))
    budget = [200]
    flows = [e for e in evs if e.kind in FLOW_KINDS]
    return {"tx": h.hex(), "height": height, "events": [e.to_json() for e in evs],
            "flows": [{**_edge(e),
                       "upstream": _walk(state, e, True, depth, budget).get("upstream", []),
                       "downstream": _walk(state, e, False, depth, budget).get("downstream", [])}
                      for e in flows]}
