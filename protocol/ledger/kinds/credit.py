"""Credit kinds: credit-limit (a bank caps what it lends an SME), and the exposure a limit covers.
Scores live in store.bump_stat.

Rule: the ledger always knows the open principal of each (borrower, lender) pair per asset
(`x/<borrower><lender>`, changed only by `add_exposure`: approval adds the principal, repayment and
default take off what stops being owed). A limit is per pair in one asset, and its `used` is always
exactly that pair's open principal in that asset: set while loans are open, it counts them; no
repayment can push it below what is still open. A limit cannot be set in an asset other than that of
the pair's open loans (`asset_mismatch`). Loan approval fails with `limit_exceeded` when a limit
exists and `used + amount` would pass it. The credit score is recomputed from on-chain counters each
time one changes (repayments on time/late, defaults, receivables honoured/overdue, payments made).
"""

from __future__ import annotations

from typing import Any

from protocol.ledger import keys
from protocol.ledger.errors import LedgerError
from protocol.ledger.model import BPS, MAX_AMOUNT, TxCtx
from protocol.ledger.spec import MAX_ASSET_LEN, F, KindSpec, asset_fields
from protocol.ledger.store import Ctx, emit, load, need_asset, need_other, save
from protocol.state import StateReader, StateView
from protocol.tx import SignedTx


def open_principal(state: StateReader, borrower: bytes, lender: bytes) -> dict[str, int]:
    """{asset: principal} of the lender's active and overdue loans to the borrower (no zero entries)."""
    rec = load(state, keys.exposure(borrower, lender))
    return {} if rec is None else dict(rec)


def _utilisation(used: int, limit: int) -> int:
    return used * BPS // limit if limit else (BPS if used else 0)


def add_exposure(state: StateView, ctx: Ctx, borrower: bytes, lender: bytes, asset: str, delta: int) -> None:
    """Change the pair's open principal in `asset` by delta and bring its limit's `used` along
    (`credit_limit_used`, and `risk_limit_utilisation` when an increase reaches the alert level)."""
    k = keys.exposure(borrower, lender)
    exp = open_principal(state, borrower, lender)
    now = exp.get(asset, 0) + delta
    if now < 0:
        raise ValueError(f"open principal of {asset} would go negative ({now})")
    if now:
        exp[asset] = now
    else:
        exp.pop(asset, None)
    if exp:
        save(state, k, exp)
    else:
        state.delete(k)
    lk = keys.limit(borrower, lender)
    lim = load(state, lk)
    if lim is None or lim["asset"] != asset:
        return
    lim["used"] = now
    save(state, lk, lim)
    util = _utilisation(now, lim["limit"])
    emit(state, ctx, "credit_limit_used", [borrower, lender], borrower=borrower, lender=lender,
         used=now, limit=lim["limit"], utilisation_bps=util)
    if delta > 0 and util >= ctx.params.util_alert_bps:
        emit(state, ctx, "risk_limit_utilisation", [borrower, lender], borrower=borrower, lender=lender,
             used=now, limit=lim["limit"], utilisation_bps=util)


def _v_limit(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    need_other(state, ctx, f["borrower"], "SME")
    need_asset(state, f["asset"])
    other = sorted(a for a in open_principal(state, f["borrower"], ctx.actor) if a != f["asset"])
    if other:
        raise LedgerError("asset_mismatch", f"open loans to this borrower are in {', '.join(other)}")


def _a_limit(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    used = open_principal(state, f["borrower"], ctx.actor).get(f["asset"], 0)
    rec: dict[str, Any] = {"borrower": f["borrower"], "lender": ctx.actor, "asset": f["asset"],
                           "limit": f["limit"], "used": used, "set_at": ctx.time}
    save(state, keys.limit(f["borrower"], ctx.actor), rec)
    util = _utilisation(used, f["limit"])
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
             ("credit_limit_set", "risk_limit_utilisation"), check=asset_fields("asset")),
]
