"""Typed access to ledger state: records, balances, participants, events, schedule, credit stats.

Rule: every read and write of ledger state goes through these helpers and `keys`; values are
canonical msgpack, byte-identical to `protocol.codec.encode` (`enc` skips its type walk; reads trust our
own encoding and skip the re-encode check). Every write that changes money or an object's status is paired with an event by
the caller or here. No floats, no clock, no iteration over unordered collections.
"""

from __future__ import annotations

from typing import Any

import msgpack

from protocol.ledger import keys
from protocol.ledger.errors import LedgerError
from protocol.ledger.events import EVENTS
from protocol.ledger.model import MAX_SUPPLY, BlockCtx, Event, Params, TxCtx, encode_value
from protocol.ledger.spec import check_asset_id
from protocol.state import StateReader, StateView

Ctx = TxCtx | BlockCtx


def enc(obj: Any) -> bytes:
    """Canonical msgpack of a ledger value, byte-identical to `codec.encode` (tested), without its type
    walk: ledger values are built here from ints, str (ASCII map keys), bytes, bools, lists and maps."""
    try:
        return encode_value(obj)
    except OverflowError:
        raise LedgerError("bad_amount", "a value does not fit in 64 bits") from None


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, strict_map_key=True)


def load(state: StateReader, key: bytes) -> dict[str, Any] | None:
    raw = state.get(key)
    if raw is None:
        return None
    rec: dict[str, Any] = unpack(raw)
    return rec


def need(state: StateReader, key: bytes) -> dict[str, Any]:
    rec = load(state, key)
    if rec is None:
        raise LedgerError("not_found")
    return rec


def save(state: StateView, key: bytes, rec: Any) -> None:
    state.put(key, enc(rec))


def load_int(state: StateReader, key: bytes) -> int:
    raw = state.get(key)
    return 0 if raw is None else int(unpack(raw))


def load_params(state: StateReader) -> Params:
    rec = load(state, keys.PARAMS)
    return Params() if rec is None else Params.from_value(rec)


# ---- events -----------------------------------------------------------------------------------


def emit(state: StateView, ctx: Ctx, kind: str, accounts: list[bytes] | tuple[bytes, ...], /,
         **data: Any) -> Event:
    """Record an event in state (with account and kind indexes) and in the context's list."""
    if kind not in EVENTS:
        raise ValueError(f"unregistered event kind {kind!r}")
    block = ctx.block if isinstance(ctx, TxCtx) else ctx
    tx = ctx.tx_hash if isinstance(ctx, TxCtx) else None
    uniq: list[bytes] = []
    for a in accounts:
        if a not in uniq:
            uniq.append(a)
    data = {k: data[k] for k in sorted(data)}
    height, index = block.height, block.next_event
    raw = enc({"accounts": uniq, "data": data, "height": height, "index": index, "kind": kind, "tx": tx})
    ev = Event(height=height, index=index, kind=kind, tx=tx, accounts=tuple(uniq), data=data, raw=raw)
    block.next_event += 1
    event_key, index_keys = keys.event_keys(kind, uniq, height, index)
    state.put(event_key, raw)
    for k in index_keys:
        state.put(k, b"")
    ctx.events.append(ev)
    return ev


# ---- participants -----------------------------------------------------------------------------


def participant(state: StateReader, pid: bytes) -> dict[str, Any] | None:
    return load(state, keys.participant(pid))


def need_participant(state: StateReader, pid: bytes) -> dict[str, Any]:
    rec = participant(state, pid)
    if rec is None:
        raise LedgerError("not_registered", f"account {pid.hex()} is not registered")
    return rec


def need_counterparty(state: StateReader, pid: bytes, role: str | None = None) -> dict[str, Any]:
    """A registered, unfrozen participant (optionally holding `role`) that will receive something."""
    rec = need_participant(state, pid)
    if rec["frozen"]:
        raise LedgerError("recipient_frozen", f"account {pid.hex()} is frozen")
    if role is not None and role not in rec["roles"]:
        raise LedgerError("bad_role", f"account {pid.hex()} is not a {role}")
    return rec


def need_open(state: StateReader, ctx: TxCtx, key: bytes, what: str, *, until: str,
              owner: str) -> dict[str, Any]:
    """An open offer record (campaign, FX quote) before its `until` time, taken by someone other than
    its `owner`: `not_found`, `bad_state`, `expired` or `self_transfer` otherwise."""
    rec = need(state, key)
    if rec["status"] != "open":
        raise LedgerError("bad_state", f"{what} is {rec['status']}")
    if ctx.time >= rec[until]:
        raise LedgerError("expired")
    if rec[owner] == ctx.actor:
        raise LedgerError("self_transfer")
    return rec


def need_other(state: StateReader, ctx: TxCtx, pid: bytes, role: str | None = None,
               why: str = "") -> dict[str, Any]:
    """`need_counterparty` for someone other than the sender itself (`self_transfer`, saying `why`)."""
    if pid == ctx.actor:
        raise LedgerError("self_transfer", why)
    return need_counterparty(state, pid, role)


def frozen_among(state: StateReader, pids: list[bytes] | tuple[bytes, ...]) -> list[bytes]:
    """The frozen participants among `pids`, in the order given, each once."""
    out: list[bytes] = []
    for pid in pids:
        rec = participant(state, pid)
        if rec is not None and rec["frozen"] and pid not in out:
            out.append(pid)
    return out


def has_role(state: StateReader, pid: bytes, role: str) -> bool:
    rec = participant(state, pid)
    return rec is not None and role in rec["roles"]


# ---- money ------------------------------------------------------------------------------------


def asset(state: StateReader, asset_id: str) -> dict[str, Any]:
    rec = load(state, keys.asset(asset_id))
    if rec is None:
        raise LedgerError("unknown_asset", f"asset {asset_id} does not exist")
    return rec


def need_asset(state: StateReader, asset_id: str) -> dict[str, Any]:
    """A well-formed (`bad_asset`) and existing (`unknown_asset`) asset named by a tx."""
    check_asset_id(asset_id)
    return asset(state, asset_id)


def balance(state: StateReader, account: bytes, asset_id: str) -> int:
    return load_int(state, keys.balance(account, asset_id))


def need_funds(state: StateReader, account: bytes, asset_id: str, amount: int) -> None:
    if balance(state, account, asset_id) < amount:
        raise LedgerError("insufficient_funds")


def _set_balance(state: StateView, account: bytes, asset_id: str, amount: int) -> None:
    k = keys.balance(account, asset_id)
    if amount == 0:
        state.delete(k)
    else:
        state.put(k, enc(amount))


def credit_balance(state: StateView, account: bytes, asset_id: str, amount: int) -> None:
    _set_balance(state, account, asset_id, balance(state, account, asset_id) + amount)


def debit_balance(state: StateView, account: bytes, asset_id: str, amount: int) -> None:
    have = balance(state, account, asset_id)
    if have < amount:
        raise LedgerError("insufficient_funds", f"balance {have} of {asset_id} is below {amount}")
    _set_balance(state, account, asset_id, have - amount)


def move(state: StateView, ctx: Ctx, frm: bytes, to: bytes, asset_id: str, amount: int,
         reason: str, ref: bytes = b"", memo: bytes | None = None) -> None:
    """Move money between two accounts and emit `funds_moved` (the edge that trace follows)."""
    debit_balance(state, frm, asset_id, amount)
    credit_balance(state, to, asset_id, amount)
    data: dict[str, Any] = {"from": frm, "to": to, "asset": asset_id, "amount": amount,
                            "reason": reason, "ref": ref}
    if memo is not None:
        data["memo"] = memo
    emit(state, ctx, "funds_moved", [frm, to], **data)


def escrow_in(state: StateView, ctx: Ctx, frm: bytes, asset_id: str, amount: int, escrow: bytes,
              reason: str) -> None:
    """Lock money out of an account into an escrow held by a record (campaign, FX quote)."""
    debit_balance(state, frm, asset_id, amount)
    emit(state, ctx, "funds_escrowed", [frm], **{"from": frm, "asset": asset_id, "amount": amount,
                                                 "escrow": escrow, "reason": reason})


def escrow_out(state: StateView, ctx: Ctx, to: bytes, asset_id: str, amount: int, escrow: bytes,
               reason: str) -> None:
    credit_balance(state, to, asset_id, amount)
    emit(state, ctx, "funds_released", [to], **{"to": to, "asset": asset_id, "amount": amount,
                                                "escrow": escrow, "reason": reason})


def mint(state: StateView, ctx: Ctx, to: bytes, asset_id: str, amount: int, reason: str) -> None:
    rec = asset(state, asset_id)
    if rec["issued"] - rec["redeemed"] + amount > MAX_SUPPLY:
        raise LedgerError("supply_overflow")
    rec["issued"] += amount
    save(state, keys.asset(asset_id), rec)
    credit_balance(state, to, asset_id, amount)
    emit(state, ctx, "minted", [to], to=to, asset=asset_id, amount=amount, reason=reason)


def burn(state: StateView, ctx: Ctx, frm: bytes, asset_id: str, amount: int, reason: str) -> None:
    rec = asset(state, asset_id)
    debit_balance(state, frm, asset_id, amount)
    rec["redeemed"] += amount
    save(state, keys.asset(asset_id), rec)
    emit(state, ctx, "burned", [frm], **{"from": frm, "asset": asset_id, "amount": amount, "reason": reason})


def create_asset(state: StateView, asset_id: str, issuer: bytes, decimals: int, kind: str) -> None:
    save(state, keys.asset(asset_id), {"id": asset_id, "issuer": issuer, "decimals": decimals,
                                       "issued": 0, "redeemed": 0, "kind": kind})


# ---- schedule ---------------------------------------------------------------------------------


def schedule(state: StateView, time_ms: int, typ: int, obj: bytes) -> None:
    state.put(keys.sched(time_ms, typ, obj), b"")


def defer(state: StateView, ctx: Ctx, typ: int, obj: bytes, what: str, frozen: list[bytes],
          accounts: list[bytes]) -> None:
    """A payout of `obj` cannot run because `frozen` participants would receive: run the schedule
    entry `typ` again `frozen_retry_ms` from now, and say so."""
    at = ctx.time + ctx.params.frozen_retry_ms
    schedule(state, at, typ, obj)
    emit(state, ctx, "transition_deferred", frozen + accounts, object=what, id=obj, frozen=frozen, retry_at=at)


# ---- credit history ---------------------------------------------------------------------------

STATS = ("on_time", "late", "defaults", "honoured", "recv_late", "payments")


def credit_stats(state: StateReader, pid: bytes, params: Params) -> dict[str, Any]:
    rec = load(state, keys.credit(pid))
    if rec is None:
        rec = {s: 0 for s in STATS}
        rec["score"] = score_of(rec, params)
    return rec


def score_of(stats: dict[str, Any], p: Params) -> int:
    """Integer credit score from on-chain history, clamped to [score_min, score_max]."""
    s = (p.score_base + p.w_on_time * stats["on_time"] - p.w_late * stats["late"]
         - p.w_default * stats["defaults"] + p.w_honoured * stats["honoured"]
         - p.w_recv_late * stats["recv_late"] + min(p.payment_cap, p.w_payment * stats["payments"]))
    score: int = max(p.score_min, min(p.score_max, s))
    return score


def bump_stat(state: StateView, ctx: Ctx, pid: bytes, stat: str, by: int = 1) -> None:
    params = ctx.params
    rec = credit_stats(state, pid, params)
    rec[stat] += by
    old = rec["score"]
    rec["score"] = score_of(rec, params)
    save(state, keys.credit(pid), rec)
    if rec["score"] != old:
        emit(state, ctx, "credit_score_changed", [pid], account=pid, old=old, new=rec["score"],
             cause=stat)
