"""Loan kinds: loan-apply (SME), loan-approve / loan-reject (the lender bank), loan-repay (borrower).

Rule: statuses applied -> active (approve disburses at once) | rejected; active -> overdue (at due)
-> defaulted (after the grace period, collateral seized for the lender); active|overdue -> repaid.
Interest accrues on outstanding principal at rate_bps per 365-day year for the time between
accruals, penalty at penalty_bps on principal for time past due. Each accrual floors once and
carries the remainder numerator (rem_i, rem_p), so the sum of accrued amounts always equals the
floor of the exact total no matter how often the loan is touched. Repayments pay penalty, then
interest, then principal, and never more than is owed.
"""

from __future__ import annotations

from typing import Any

from protocol.ledger import keys
from protocol.ledger.errors import LedgerError
from protocol.ledger.kinds.collateral import (
    OPEN_LOAN,
    check_pledgeable,
    load_item,
    release_item,
    seize_item,
    set_pledge,
)
from protocol.ledger.model import BPS, MAX_RATE_BPS, MAX_TERM_MS, YEAR_MS, BlockCtx, TxCtx
from protocol.ledger.spec import AMOUNT, F, KindSpec
from protocol.ledger.store import (
    MAX_ASSET_LEN,
    Ctx,
    bump_stat,
    emit,
    load,
    move,
    need,
    need_asset,
    need_counterparty,
    need_funds,
    need_other,
    save,
    schedule,
)
from protocol.state import StateView
from protocol.tx import SignedTx

DEN = BPS * YEAR_MS


def accrue(loan: dict[str, Any], now: int) -> None:
    """Bring interest and penalty up to `now` (no-op for time already accrued)."""
    t0 = loan["acc_at"]
    if now <= t0:
        return
    p = loan["principal"]
    num = p * loan["rate_bps"] * (now - t0) + loan["rem_i"]
    loan["interest"] += num // DEN
    loan["rem_i"] = num % DEN
    late_from = max(t0, loan["due"])
    if now > late_from:
        num = p * loan["penalty_bps"] * (now - late_from) + loan["rem_p"]
        loan["penalty"] += num // DEN
        loan["rem_p"] = num % DEN
    loan["acc_at"] = now


def owed(loan: dict[str, Any]) -> int:
    total: int = loan["principal"] + loan["interest"] + loan["penalty"]
    return total


def _load(state: StateView, ctx: TxCtx) -> dict[str, Any]:
    loan = need(state, keys.loan(ctx.f["loan"]))
    ctx.scratch["loan"] = loan
    return loan


def _v_apply(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    need_other(state, ctx, f["lender"], "BANK")
    need_asset(state, f["asset"])
    items = f["collateral"]
    if len(items) > ctx.params.max_collateral:
        raise LedgerError("too_many")
    if len(set(items)) != len(items):
        raise LedgerError("bad_field", "field 'collateral' has duplicates")
    for item in items:
        _, rec, typ = load_item(state, item)
        check_pledgeable(rec, typ, ctx.actor)
        if rec["pledged_to"] and rec["pledged_to"] != f["lender"]:
            raise LedgerError("pledged", f"item {item.hex()} is pledged to another bank")
        if rec["loan"]:
            other = load(state, keys.loan(rec["loan"]))
            if other is not None and other["status"] in OPEN_LOAN:
                raise LedgerError("collateral_in_use", f"item {item.hex()} secures another loan")


def _a_apply(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    lid = ctx.tx_hash
    save(state, keys.loan(lid), {
        "id": lid, "borrower": ctx.actor, "lender": f["lender"], "asset": f["asset"], "amount": f["amount"],
        "term_ms": f["term_ms"], "collateral": list(f["collateral"]), "status": "applied", "applied": ctx.time,
        "principal": 0, "interest": 0, "penalty": 0, "rem_i": 0, "rem_p": 0, "acc_at": 0, "rate_bps": 0,
        "penalty_bps": 0, "start": 0, "due": 0, "repaid": 0})
    for item in f["collateral"]:
        key, rec, typ = load_item(state, item)
        set_pledge(state, key, rec, typ, f["lender"], lid)
        emit(state, ctx, "collateral_pledged", [ctx.actor, f["lender"]], item=item, item_type=typ,
             owner=ctx.actor, pledgee=f["lender"], loan=lid)
    emit(state, ctx, "loan_applied", [ctx.actor, f["lender"]], loan=lid, borrower=ctx.actor,
         lender=f["lender"], asset=f["asset"], amount=f["amount"], term_ms=f["term_ms"],
         collateral=list(f["collateral"]))


def _v_decide(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    loan = _load(state, ctx)
    if loan["lender"] != ctx.actor:
        raise LedgerError("not_lender")
    if loan["status"] != "applied":
        raise LedgerError("bad_state", f"loan is {loan['status']}")
    if tx.kind == "loan-reject":
        return
    need_counterparty(state, loan["borrower"])
    lim = load(state, keys.limit(loan["borrower"], ctx.actor))
    if lim is not None:
        if lim["asset"] != loan["asset"]:
            raise LedgerError("asset_mismatch", "the credit limit is in another asset")
        if lim["used"] + loan["amount"] > lim["limit"]:
            raise LedgerError("limit_exceeded", f"used {lim['used']} of {lim['limit']}")
    ctx.scratch["limit"] = lim
    need_funds(state, ctx.actor, loan["asset"], loan["amount"])


def _a_decide(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    loan = ctx.scratch["loan"]
    if tx.kind == "loan-reject":
        loan["status"] = "rejected"
        save(state, keys.loan(loan["id"]), loan)
        emit(state, ctx, "loan_rejected", [loan["borrower"], ctx.actor], loan=loan["id"],
             lender=ctx.actor, reason=ctx.f["reason"] or "")
        for item in loan["collateral"]:
            release_item(state, ctx, item, "loan_rejected")
        return
    now = ctx.time
    loan.update(status="active", principal=loan["amount"], rate_bps=ctx.f["rate_bps"],
                penalty_bps=ctx.f["penalty_bps"], start=now, due=now + loan["term_ms"], acc_at=now)
    save(state, keys.loan(loan["id"]), loan)
    emit(state, ctx, "loan_approved", [loan["borrower"], ctx.actor], loan=loan["id"], lender=ctx.actor,
         rate_bps=loan["rate_bps"], penalty_bps=loan["penalty_bps"], due=loan["due"])
    move(state, ctx, ctx.actor, loan["borrower"], loan["asset"], loan["amount"], "loan_disbursement",
         ref=loan["id"])
    emit(state, ctx, "loan_disbursed", [loan["borrower"], ctx.actor], loan=loan["id"],
         amount=loan["amount"], asset=loan["asset"])
    lim = ctx.scratch["limit"]
    if lim is not None:
        use_limit(state, ctx, loan["borrower"], ctx.actor, loan["amount"])
    soon = loan["due"] - ctx.params.due_soon_ms
    if soon > now:
        schedule(state, soon, keys.S_LOAN_DUE_SOON, loan["id"])
    schedule(state, loan["due"] + 1, keys.S_LOAN_DUE, loan["id"])  # repaying on the due date is on time
    schedule(state, loan["due"] + 1 + ctx.params.grace_ms, keys.S_LOAN_DEFAULT, loan["id"])


def use_limit(state: StateView, ctx: Ctx, borrower: bytes, lender: bytes, delta: int) -> None:
    """Adjust a credit limit's `used` by delta (floored at 0); alert when utilisation crosses the bar."""
    k = keys.limit(borrower, lender)
    lim = load(state, k)
    if lim is None:
        return
    lim["used"] = max(0, lim["used"] + delta)
    save(state, k, lim)
    util = lim["used"] * BPS // lim["limit"] if lim["limit"] else BPS
    emit(state, ctx, "credit_limit_used", [borrower, lender], borrower=borrower, lender=lender,
         used=lim["used"], limit=lim["limit"], utilisation_bps=util)
    if delta > 0 and util >= ctx.params.util_alert_bps:
        emit(state, ctx, "risk_limit_utilisation", [borrower, lender], borrower=borrower, lender=lender,
             used=lim["used"], limit=lim["limit"], utilisation_bps=util)


def _v_repay(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    loan = _load(state, ctx)
    if loan["borrower"] != ctx.actor:
        raise LedgerError("not_borrower")
    if loan["status"] not in ("active", "overdue"):
        raise LedgerError("bad_state", f"loan is {loan['status']}")
    need_counterparty(state, loan["lender"])
    accrue(loan, ctx.time)
    pay = min(ctx.f["amount"], owed(loan))
    need_funds(state, ctx.actor, loan["asset"], pay)
    ctx.scratch["pay"] = pay


def _a_repay(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    loan = ctx.scratch["loan"]
    pay = left = ctx.scratch["pay"]
    parts = {}
    for part in ("penalty", "interest", "principal"):
        take = min(left, loan[part])
        loan[part] -= take
        parts[part] = take
        left -= take
    loan["repaid"] += pay
    move(state, ctx, ctx.actor, loan["lender"], loan["asset"], pay, "loan_repayment", ref=loan["id"])
    was = loan["status"]
    if owed(loan) == 0:
        loan["status"] = "repaid"
    save(state, keys.loan(loan["id"]), loan)
    emit(state, ctx, "loan_repaid" if loan["status"] == "repaid" else "loan_payment",
         [ctx.actor, loan["lender"]], loan=loan["id"], amount=pay, penalty_paid=parts["penalty"],
         interest_paid=parts["interest"], principal_paid=parts["principal"], principal=loan["principal"],
         interest=loan["interest"], penalty=loan["penalty"])
    if parts["principal"]:
        use_limit(state, ctx, ctx.actor, loan["lender"], -parts["principal"])
    bump_stat(state, ctx, ctx.actor, "payments")
    if loan["status"] == "repaid":
        bump_stat(state, ctx, ctx.actor, "on_time" if was == "active" else "late")
        for item in loan["collateral"]:
            release_item(state, ctx, item, "loan_repaid")


# ---- time-driven ------------------------------------------------------------------------------


def _advance(state: StateView, ctx: BlockCtx, lid: bytes, was: str, becomes: str) -> dict[str, Any] | None:
    """Accrue a loan still in status `was` up to the block time and save it as `becomes` (None: it
    has moved on since the entry was scheduled, nothing to do)."""
    loan = need(state, keys.loan(lid))
    if loan["status"] != was:
        return None
    accrue(loan, ctx.time)
    loan["status"] = becomes
    save(state, keys.loan(lid), loan)
    return loan


def on_due_soon(state: StateView, ctx: BlockCtx, lid: bytes) -> None:
    loan = _advance(state, ctx, lid, "active", "active")
    if loan is not None:
        emit(state, ctx, "risk_due_soon", [loan["borrower"], loan["lender"]], object="loan", id=lid,
             due=loan["due"], owed=owed(loan))


def on_due(state: StateView, ctx: BlockCtx, lid: bytes) -> None:
    loan = _advance(state, ctx, lid, "active", "overdue")
    if loan is not None:
        emit(state, ctx, "risk_overdue", [loan["borrower"], loan["lender"]], object="loan", id=lid,
             due=loan["due"], owed=owed(loan))


def on_default(state: StateView, ctx: BlockCtx, lid: bytes) -> None:
    loan = _advance(state, ctx, lid, "overdue", "defaulted")
    if loan is None:
        return
    emit(state, ctx, "risk_default", [loan["borrower"], loan["lender"]], object="loan", id=lid,
         owed=owed(loan), principal=loan["principal"])
    for item in loan["collateral"]:
        seize_item(state, ctx, item, loan["lender"], lid)
    use_limit(state, ctx, loan["borrower"], loan["lender"], -loan["principal"])
    bump_stat(state, ctx, loan["borrower"], "defaults")


_LOAN = F("loan", "bytes32", "loan id (the loan-apply tx hash)")
KINDS = [
    KindSpec("loan-apply", "loans", "An SME asks a bank for a loan, pledging collateral items.",
             frozenset({"SME"}),
             (F("lender", "bytes32", "bank asked"), F("asset", "str", "loan currency", max_len=MAX_ASSET_LEN),
              AMOUNT("amount", "principal, minor units"), F("term_ms", "int", "term, ms", lo=1, hi=MAX_TERM_MS),
              F("collateral", "list", "collateral or receivable ids", max_len=16, item="bytes32")),
             _v_apply, _a_apply, ("self_transfer", "not_registered", "recipient_frozen", "bad_role", "unknown_asset", "too_many",
                                  "not_found", "not_owner", "bad_state", "pledged", "collateral_in_use"),
             ("loan_applied", "collateral_pledged")),
    KindSpec("loan-approve", "loans", "The lender approves; the ledger disburses the principal at once.",
             frozenset({"BANK"}),
             (_LOAN, F("rate_bps", "int", "annual interest, basis points", hi=MAX_RATE_BPS),
              F("penalty_bps", "int", "annual penalty on overdue principal, basis points", hi=MAX_RATE_BPS)),
             _v_decide, _a_decide, ("not_found", "not_lender", "bad_state", "asset_mismatch",
                                    "limit_exceeded", "insufficient_funds", "recipient_frozen"),
             ("loan_approved", "funds_moved", "loan_disbursed", "credit_limit_used", "risk_limit_utilisation")),
    KindSpec("loan-reject", "loans", "The lender declines; pledged items are released.", frozenset({"BANK"}),
             (_LOAN, F("reason", "str", "free text", required=False, max_len=256)),
             _v_decide, _a_decide, ("not_found", "not_lender", "bad_state"),
             ("loan_rejected", "collateral_released")),
    KindSpec("loan-repay", "loans", "The borrower repays (penalty, then interest, then principal).",
             frozenset({"SME"}), (_LOAN, AMOUNT("amount", "most to pay; capped at what is owed")),
             _v_repay, _a_repay, ("not_found", "not_borrower", "bad_state", "insufficient_funds",
                                  "recipient_frozen"),
             ("funds_moved", "loan_payment", "loan_repaid", "collateral_released", "credit_score_changed")),
]
