"""Credit kinds: credit-limit (a bank caps what it lends an SME). Scores live in store.bump_stat.

Rule: a limit is per (borrower, lender) in one asset; `used` is the principal of that lender's open
loans to the borrower and survives limit changes. Loan approval fails with `limit_exceeded` when a
limit exists and would be passed. The credit score is recomputed from on-chain counters each time one
changes (repayments on time/late, defaults, receivables honoured/overdue, payments made).
"""

from __future__ import annotations

from protocol.ledger import keys
from protocol.ledger.errors import LedgerError
from protocol.ledger.model import BPS, MAX_AMOUNT, TxCtx
from protocol.ledger.spec import F, KindSpec
from protocol.ledger.store import MAX_ASSET_LEN, emit, load, need_asset, need_other, save
from protocol.state import StateView
from protocol.tx import SignedTx


def _v_limit(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    need_other(state, ctx, f["borrower"], "SME")
    need_asset(state, f["asset"])
    old = load(state, keys.limit(f["borrower"], ctx.actor))
    if old is not None and old["asset"] != f["asset"] and old["used"] > 0:
        raise LedgerError("asset_mismatch", "open loans use the current limit's asset")


def _a_limit(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    k = keys.limit(f["borrower"], ctx.actor)
    old = load(state, k)
    used = 0 if old is None else old["used"]
    save(state, k, {"borrower": f["borrower"], "lender": ctx.actor, "asset": f["asset"], "limit": f["limit"],
                    "used": used, "set_at": ctx.time})
    util = used * BPS // f["limit"] if f["limit"] else (BPS if used else 0)
    emit(state, ctx, "credit_limit_set", [f["borrower"], ctx.actor], borrower=f["borrower"], lender=ctx.actor,
         asset=f["asset"], limit=f["limit"], used=used, utilisation_bps=util)
    if used and util >= ctx.params.util_alert_bps:
        emit(state, ctx, "risk_limit_utilisation", [f["borrower"], ctx.actor], borrower=f["borrower"],
             lender=ctx.actor, used=used, limit=f["limit"], utilisation_bps=util)


KINDS = [
    KindSpec("credit-limit", "credit", "A bank sets the most it will have lent an SME at once.",
             frozenset({"BANK"}),
             (F("borrower", "bytes32", "SME id"), F("asset", "str", "limit currency", max_len=MAX_ASSET_LEN),
              F("limit", "int", "limit, minor units (0 blocks new loans)", lo=0, hi=MAX_AMOUNT)),
             _v_limit, _a_limit, ("self_transfer", "not_registered", "recipient_frozen", "bad_role",
                                  "unknown_asset", "asset_mismatch"),
             ("credit_limit_set", "risk_limit_utilisation")),
]
