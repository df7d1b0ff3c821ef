"""Loan kinds: loan-apply (SME), loan-approve / loan-reject (the lender bank), loan-repay (borrower).

Rule: statuses applied -> active (approve disburses at once) | rejected; active -> overdue (at due)
-> defaulted (after the grace period, collateral seized for the lender); active|overdue -> repaid.
Interest accrues on outstanding principal at rate_bps per 365-day year for the time between
accruals, penalty at penalty_bps on principal for time past due. Each accrual floors once and
carries the remainder numerator (rem_i, rem_p), so the sum of accrued amounts always equals the
floor of the exact total no matter how often the loan is touched. Payments (`pay_loan`: the
borrower's loan-repay, or the debtor of a receivable pledged to the loan) pay penalty, then interest,
then principal, and never more than is owed. Approval adds the principal to the pair's open principal
(credit.add_exposure), payments and default take it off. When the loan ends it ends only the
pledges it made (collateral.end_loan_pledge).
"""

from __future__ import annotations

from typing import Any

from protocol.ledger import keys
from protocol.ledger.errors import LedgerError
from protocol.ledger.kinds.collateral import (
    OPEN_LOAN,
    check_pledgeable,
    end_loan_pledge,
    load_item,
    seize_item,
    set_pledge,
)
from protocol.ledger.kinds.credit import add_exposure
from protocol.ledger.model import BPS, MAX_RATE_BPS, MAX_TERM_MS, YEAR_MS, BlockCtx, TxCtx
from protocol.ledger.spec import AMOUNT, MAX_ASSET_LEN, F, KindSpec, asset_fields
from protocol.ledger.store import (
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


def _c_apply(f: dict[str, Any]) -> None:
    if len(set(f["collateral"])) != len(f["collateral"]):
        raise LedgerError("bad_field", "field 'collateral' has duplicates")


def _v_apply(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    need_other(state, ctx, f["lender"], "BANK")
    need_asset(state, f["asset"])
    items = f["collateral"]
    if len(items) > ctx.params.max_collateral:
        raise LedgerError("too_many")
    for item in items:
        _, rec, typ = load_item(state, item)
        check_pledgeable(rec, typ, ctx.actor, f["lender"])
        if typ == "receivable" and rec["asset"] != f["asset"]:
            raise LedgerError("asset_mismatch", f"receivable {item.hex()} is paid in {rec['asset']}; it secures "
                                                "only a loan in that asset (its payments go to the loan)")
        if rec["pledged_to"] and rec["pledged_to"] != f["lender"]:
            raise LedgerError("pledged", f"item {item.hex()} is pledged to another bank")
        if rec["loan"]:
            other = load(state, keys.loan(rec["loan"]))
            if other is not None and other["status"] in OPEN_LOAN:
                raise LedgerError("collateral_in_use", f"item {item.hex()} secures another loan")


def _a_apply(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    lid = ctx.tx_hash
    standing = [item for item in f["collateral"] if load_item(state, item)[1]["pledged_to"] == f["lender"]]
    save(state, keys.loan(lid), {
        "id": lid, "borrower": ctx.actor, "lender": f["lender"], "asset": f["asset"], "amount": f["amount"],
        "term_ms": f["term_ms"], "collateral": list(f["collateral"]), "status": "applied", "applied": ctx.time,
        "principal": 0, "interest": 0, "penalty": 0, "rem_i": 0, "rem_p": 0, "acc_at": 0, "rate_bps": 0,
        "penalty_bps": 0, "start": 0, "due": 0, "repaid": 0, "standing": standing})
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
    need_funds(state, ctx.actor, loan["asset"], loan["amount"])


def _a_decide(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    loan = ctx.scratch["loan"]
    if tx.kind == "loan-reject":
        loan["status"] = "rejected"
        save(state, keys.loan(loan["id"]), loan)
        emit(state, ctx, "loan_rejected", [loan["borrower"], ctx.actor], loan=loan["id"],
             lender=ctx.actor, reason=ctx.f["reason"] or "")
        for item in loan["collateral"]:
            end_loan_pledge(state, ctx, item, loan, "loan_rejected")
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
    add_exposure(state, ctx, loan["borrower"], ctx.actor, loan["asset"], loan["amount"])
    soon = loan["due"] - ctx.params.due_soon_ms
    if soon > now:
        schedule(state, soon, keys.S_LOAN_DUE_SOON, loan["id"])
    schedule(state, loan["due"] + 1, keys.S_LOAN_DUE, loan["id"])  # repaying on the due date is on time
    schedule(state, loan["due"] + 1 + ctx.params.grace_ms, keys.S_LOAN_DEFAULT, loan["id"])


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
    pay_loan(state, ctx, ctx.scratch["loan"], ctx.actor, ctx.scratch["pay"], "loan_repayment", ctx.scratch["loan"]["id"])
    bump_stat(state, ctx, ctx.actor, "payments")


def pay_loan(state: StateView, ctx: TxCtx, loan: dict[str, Any], payer: bytes, amount: int, reason: str,
             ref: bytes) -> int:
    """`payer` pays up to `amount` of what an active or overdue loan owes to its lender (penalty, then
    interest, then principal); a loan paid off counts for its borrower (on_time or late) and ends its
    pledges. Returns what was paid. The caller has checked the payer's funds and the lender."""
    accrue(loan, ctx.time)
    pay = left = min(amount, owed(loan))
    parts = {}
    for part in ("penalty", "interest", "principal"):
        take = min(left, loan[part])
        loan[part] -= take
        parts[part] = take
        left -= take
    loan["repaid"] += pay
    move(state, ctx, payer, loan["lender"], loan["asset"], pay, reason, ref=ref)
    was = loan["status"]
    if owed(loan) == 0:
        loan["status"] = "repaid"
    save(state, keys.loan(loan["id"]), loan)
    emit(state, ctx, "loan_repaid" if loan["status"] == "repaid" else "loan_payment",
         [payer, loan["borrower"], loan["lender"]], loan=loan["id"], payer=payer, amount=pay,
         penalty_paid=parts["penalty"], interest_paid=parts["interest"], principal_paid=parts["principal"],
         principal=loan["principal"], interest=loan["interest"], penalty=loan["penalty"])
    if parts["principal"]:
        add_exposure(state, ctx, loan["borrower"], loan["lender"], loan["asset"], -parts["principal"])
    if loan["status"] == "repaid":
        bump_stat(state, ctx, loan["borrower"], "on_time" if was == "active" else "late")
        for item in loan["collateral"]:
            end_loan_pledge(state, ctx, item, loan, "loan_repaid")
    return pay


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
    add_exposure(state, ctx, loan["borrower"], loan["lender"], loan["asset"], -loan["principal"])
    bump_stat(state, ctx, loan["borrower"], "defaults")


_LOAN = F("loan", "bytes32", "loan id (the loan-apply tx hash)")
KINDS = [
    KindSpec("loan-apply", "loans", "An SME asks a bank for a loan, pledging collateral items.",
             frozenset({"SME"}),
             (F("lender", "bytes32", "bank asked"), F("asset", "str", "loan currency", max_len=MAX_ASSET_LEN),
              AMOUNT("amount", "principal, minor units"), F("term_ms", "int", "term, ms", lo=1, hi=MAX_TERM_MS),
              F("collateral", "list", "collateral or receivable ids", max_len=16, item="bytes32")),
             _v_apply, _a_apply, ("self_transfer", "not_registered", "recipient_frozen", "bad_role", "unknown_asset", "too_many",
                                  "not_found", "not_owner", "bad_state", "pledged", "collateral_in_use", "asset_mismatch"),
             ("loan_applied", "collateral_pledged"), check=asset_fields("asset", then=_c_apply)),
    KindSpec("loan-approve", "loans", "The lender approves; the ledger disburses the principal at once.",
             frozenset({"BANK"}),
             (_LOAN, F("rate_bps", "int", "annual interest, basis points", hi=MAX_RATE_BPS),
              F("penalty_bps", "int", "annual penalty on overdue principal, basis points", hi=MAX_RATE_BPS)),
             _v_decide, _a_decide, ("not_found", "not_lender", "bad_state", "asset_mismatch",
                                    "limit_exceeded", "insufficient_funds", "recipient_frozen"),
             ("loan_approved", "funds_moved", "loan_disbursed", "credit_limit_used", "risk_limit_utilisation")),
    KindSpec("loan-reject", "loans", "The lender declines; the pledges the application made are released.",
             frozenset({"BANK"}), (_LOAN, F("reason", "str", "free text", required=False, max_len=256)),
             _v_decide, _a_decide, ("not_found", "not_lender", "bad_state"),
             ("loan_rejected", "collateral_released", "collateral_detached")),
    KindSpec("loan-repay", "loans", "The borrower repays (penalty, then interest, then principal).",
             frozenset({"SME"}), (_LOAN, AMOUNT("amount", "most to pay; capped at what is owed")),
             _v_repay, _a_repay, ("not_found", "not_borrower", "bad_state", "insufficient_funds",
                                  "recipient_frozen"),
             ("funds_moved", "loan_payment", "loan_repaid", "credit_limit_used", "collateral_released",
              "collateral_detached", "credit_score_changed")),
]
