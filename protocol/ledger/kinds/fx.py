"""FX kinds: a bank quotes a rate for a pair and locks what it sells; a taker swaps atomically.

Rule: `fx-quote` moves `amount` of `base` from the bank into the quote's escrow, so an accept before
expiry always settles. The taker pays ceil(amount * rate / 10^8) of `quote` (rounding in the bank's
favour, written down once here); nobody buys from a frozen bank. At expiry the ledger returns the
unsold remainder to the bank; while the bank is frozen the remainder stays in escrow and the return
is retried every `frozen_retry_ms`.
"""

from __future__ import annotations

from typing import Any

from protocol.ledger import keys
from protocol.ledger.errors import LedgerError
from protocol.ledger.model import RATE_SCALE, BlockCtx, TxCtx
from protocol.ledger.spec import AMOUNT, MAX_ASSET_LEN, TIME, F, KindSpec, asset_fields
from protocol.ledger.store import (
    defer,
    emit,
    escrow_in,
    escrow_out,
    frozen_among,
    move,
    need,
    need_asset,
    need_counterparty,
    need_funds,
    need_open,
    save,
    schedule,
)
from protocol.state import StateView
from protocol.tx import SignedTx


def cost_of(amount: int, rate: int) -> int:
    """Quote-asset price of `amount` base units at `rate` per 10^8, rounded up."""
    return -(-amount * rate // RATE_SCALE)


def _c_pair(f: dict[str, Any]) -> None:
    if f["base"] == f["quote"]:
        raise LedgerError("asset_mismatch", "base and quote must differ")


def _v_quote(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    for a in (f["base"], f["quote"]):
        need_asset(state, a)
    if f["expiry"] <= ctx.time:
        raise LedgerError("past_due")
    need_funds(state, ctx.actor, f["base"], f["amount"])


def _a_quote(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    qid = ctx.tx_hash
    escrow_in(state, ctx, ctx.actor, f["base"], f["amount"], qid, "fx_quote")
    save(state, keys.fx_quote(qid), {"id": qid, "bank": ctx.actor, "base": f["base"], "quote": f["quote"],
                                     "rate": f["rate"], "amount": f["amount"], "remaining": f["amount"],
                                     "expiry": f["expiry"], "status": "open", "created": ctx.time})
    schedule(state, f["expiry"], keys.S_FX_EXPIRY, qid)
    emit(state, ctx, "fx_quoted", [ctx.actor], quote_id=qid, bank=ctx.actor, base=f["base"],
         quote=f["quote"], rate=f["rate"], amount=f["amount"], expiry=f["expiry"])


def _v_accept(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    q = need_open(state, ctx, keys.fx_quote(f["quote_id"]), "quote", until="expiry", owner="bank")
    if f["amount"] > q["remaining"]:
        raise LedgerError("bad_amount", f"only {q['remaining']} left on the quote")
    need_counterparty(state, q["bank"])
    cost = cost_of(f["amount"], q["rate"])
    need_funds(state, ctx.actor, q["quote"], cost)
    ctx.scratch.update(q=q, cost=cost)


def _a_accept(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    q = ctx.scratch["q"]
    amount = ctx.f["amount"]
    cost = ctx.scratch["cost"]
    if cost > 0:
        move(state, ctx, ctx.actor, q["bank"], q["quote"], cost, "fx_accept", ref=q["id"])
    escrow_out(state, ctx, ctx.actor, q["base"], amount, q["id"], "fx_accept")
    q["remaining"] -= amount
    if q["remaining"] == 0:
        q["status"] = "filled"
    save(state, keys.fx_quote(q["id"]), q)
    emit(state, ctx, "fx_accepted", [ctx.actor, q["bank"]], quote_id=q["id"], taker=ctx.actor,
         bank=q["bank"], base=q["base"], quote=q["quote"], amount=amount, cost=cost,
         remaining=q["remaining"], status=q["status"])


def expire_quote(state: StateView, ctx: BlockCtx, qid: bytes) -> None:
    """Time-driven: return the unsold remainder of an open quote to its bank."""
    q = need(state, keys.fx_quote(qid))
    if q["status"] != "open":
        return
    frozen = frozen_among(state, [q["bank"]]) if q["remaining"] > 0 else []
    if frozen:
        defer(state, ctx, keys.S_FX_EXPIRY, qid, "fx_quote", frozen, [])
        return
    if q["remaining"] > 0:
        escrow_out(state, ctx, q["bank"], q["base"], q["remaining"], qid, "fx_expired")
    q["status"] = "expired"
    q["remaining"] = 0
    save(state, keys.fx_quote(qid), q)
    emit(state, ctx, "fx_expired", [q["bank"]], quote_id=qid, bank=q["bank"])


_A = MAX_ASSET_LEN
KINDS = [
    KindSpec("fx-quote", "money", "A bank offers `amount` of `base` for `quote` at `rate` until `expiry`.",
             frozenset({"BANK"}),
             (F("base", "str", "asset the bank sells", max_len=_A),
              F("quote", "str", "asset the bank receives", max_len=_A),
              F("rate", "int", "quote minor units per 100000000 base minor units", lo=1, hi=10**15),
              AMOUNT("amount", "most base units sold (locked in escrow)"),
              TIME("expiry", "quote expiry, ms")),
             _v_quote, _a_quote, ("unknown_asset", "asset_mismatch", "past_due", "insufficient_funds"),
             ("funds_escrowed", "fx_quoted", "fx_expired", "transition_deferred"),
             check=asset_fields("base", "quote", then=_c_pair)),
    KindSpec("fx-accept", "money", "Buy `amount` of the quote's base asset before expiry, atomically.",
             frozenset(), (F("quote_id", "bytes32", "the fx-quote tx hash"), AMOUNT("amount", "base units")),
             _v_accept, _a_accept, ("not_found", "bad_state", "expired", "self_transfer", "bad_amount",
                                    "recipient_frozen", "insufficient_funds"),
             ("funds_moved", "funds_released", "fx_accepted")),
]
