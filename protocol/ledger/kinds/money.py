"""Money kinds: issue and redeem (a bank, its own deposit token), transfer (with a sealed memo).

Rule: money is created only by `issue` (and ledger-minted share tokens), destroyed only by `redeem`,
and otherwise only moves; amounts are ints in minor units. A memo is opaque bytes sealed by the
client to the recipient's key; the ledger never reads it.
"""

from __future__ import annotations

from protocol.ledger import keys
from protocol.ledger.errors import LedgerError
from protocol.ledger.model import TxCtx
from protocol.ledger.spec import AMOUNT, MAX_ASSET_LEN, F, KindSpec, asset_fields
from protocol.ledger.store import (
    bump_stat,
    burn,
    create_asset,
    emit,
    load,
    mint,
    move,
    need_asset,
    need_counterparty,
    need_funds,
    need_other,
)
from protocol.state import StateView
from protocol.tx import SignedTx

MAX_MEMO = 1024
LEDGER_ASSET_PREFIX = "SH."  # campaign share tokens, minted by the ledger only


def _v_issue(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    rec = load(state, keys.asset(f["asset"]))
    if rec is None:
        if f["asset"].startswith(LEDGER_ASSET_PREFIX):
            raise LedgerError("bad_asset", "the SH. prefix is reserved for ledger share tokens")
    elif rec["issuer"] != ctx.actor or rec["kind"] != "deposit":
        raise LedgerError("not_issuer")
    if f["to"] is not None:
        need_counterparty(state, f["to"])


def _a_issue(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    if load(state, keys.asset(f["asset"])) is None:
        decimals = 2 if f["decimals"] is None else f["decimals"]
        create_asset(state, f["asset"], ctx.actor, decimals, "deposit")
        emit(state, ctx, "asset_created", [ctx.actor], asset=f["asset"], issuer=ctx.actor, decimals=decimals)
    to = ctx.actor if f["to"] is None else f["to"]
    mint(state, ctx, to, f["asset"], f["amount"], "issue")


def _v_redeem(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    rec = need_asset(state, f["asset"])
    if rec["issuer"] != ctx.actor or rec["kind"] != "deposit":
        raise LedgerError("not_issuer")
    need_funds(state, ctx.actor, f["asset"], f["amount"])


def _a_redeem(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    burn(state, ctx, ctx.actor, ctx.f["asset"], ctx.f["amount"], "redeem")


def _v_transfer(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    need_asset(state, f["asset"])
    need_other(state, ctx, f["to"])
    need_funds(state, ctx.actor, f["asset"], f["amount"])


def _a_transfer(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    move(state, ctx, ctx.actor, f["to"], f["asset"], f["amount"], "transfer", memo=f["memo"])
    bump_stat(state, ctx, ctx.actor, "payments")


_ASSET = F("asset", "str", "asset id, e.g. CNY.BANKA", max_len=MAX_ASSET_LEN)
_ASSET_OK = asset_fields("asset")
_BANK = frozenset({"BANK"})

KINDS = [
    KindSpec("issue", "money", "Mint the sender bank's own deposit token (created on first issue).", _BANK,
             (_ASSET, AMOUNT(), F("to", "bytes32", "recipient (default: the bank)", required=False),
              F("decimals", "int", "decimals when creating the asset (default 2)", required=False, hi=18)),
             _v_issue, _a_issue, ("bad_asset", "not_issuer", "supply_overflow", "not_registered",
                                  "recipient_frozen"), ("asset_created", "minted"), check=_ASSET_OK),
    KindSpec("redeem", "money", "Burn the bank's own deposit token from its own balance.", _BANK,
             (_ASSET, AMOUNT()), _v_redeem, _a_redeem,
             ("unknown_asset", "not_issuer", "insufficient_funds"), ("burned",), check=_ASSET_OK),
    KindSpec("transfer", "money", "Pay another participant, optionally with a memo sealed to them.",
             frozenset(), (F("to", "bytes32", "recipient participant id"), _ASSET, AMOUNT(),
                           F("memo", "bytes", "memo sealed to the recipient", required=False,
                             max_len=MAX_MEMO)),
             _v_transfer, _a_transfer, ("unknown_asset", "self_transfer", "not_registered",
                                        "recipient_frozen", "insufficient_funds"),
             ("funds_moved", "credit_score_changed"), check=_ASSET_OK),
]
