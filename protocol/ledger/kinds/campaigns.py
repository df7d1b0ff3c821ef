"""Crowdfunding kinds: campaign-create (SME) and campaign-contribute (investor, escrowed).

Rule: contributions leave the investor's balance into the campaign's escrow (`raised`, with one
`cc/<campaign><investor>` entry per investor) and never exceed `target`. When `raised` reaches the
target, or at the deadline with `raised >= minimum`, the ledger finalizes: escrow goes to the SME and
each investor is minted share tokens `SH.<first 16 hex of the campaign id>` equal to what it put in.
At the deadline below the minimum it refunds every investor. Statuses: open -> funded | refunded.
Nobody contributes to the campaign of a frozen owner. A close that would pay a frozen participant
(owner, or an investor due shares or a refund) waits with everything in escrow (status open, no
contributions after the deadline or past the target) and is retried every `frozen_retry_ms`.
"""

from __future__ import annotations

from typing import Any

from protocol.ledger import keys
from protocol.ledger.errors import LedgerError
from protocol.ledger.model import MAX_TERM_MS, TxCtx
from protocol.ledger.spec import AMOUNT, MAX_ASSET_LEN, TIME, F, KindSpec, asset_fields
from protocol.ledger.store import (
    Ctx,
    create_asset,
    defer,
    emit,
    escrow_in,
    escrow_out,
    frozen_among,
    load,
    load_int,
    mint,
    need_asset,
    need_counterparty,
    need_funds,
    need_open,
    save,
    schedule,
    unpack,
)
from protocol.state import StateView
from protocol.tx import SignedTx


def share_asset(cid: bytes) -> str:
    return "SH." + cid.hex()[:16].upper()


def _c_create(f: dict[str, Any]) -> None:
    if f["minimum"] > f["target"]:
        raise LedgerError("bad_amount", "minimum must not exceed target")


def _v_create(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    need_asset(state, f["asset"])
    if f["deadline"] <= ctx.time:
        raise LedgerError("past_due")
    if f["deadline"] > ctx.time + MAX_TERM_MS:
        raise LedgerError("bad_field", "field 'deadline' is too far in the future")


def _a_create(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    cid = ctx.tx_hash
    shares = share_asset(cid)
    save(state, keys.campaign(cid), {"id": cid, "owner": ctx.actor, "asset": f["asset"], "target": f["target"],
                                     "minimum": f["minimum"], "deadline": f["deadline"], "raised": 0,
                                     "contributors": 0, "status": "open", "shares": shares,
                                     "created": ctx.time, "doc": f["doc"] or b""})
    create_asset(state, shares, ctx.actor, 0, "campaign_share")
    schedule(state, f["deadline"], keys.S_CAMPAIGN_DEADLINE, cid)
    emit(state, ctx, "campaign_created", [ctx.actor], campaign=cid, owner=ctx.actor, asset=f["asset"],
         target=f["target"], minimum=f["minimum"], deadline=f["deadline"], shares=shares)


def _v_contribute(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    c = need_open(state, ctx, keys.campaign(f["campaign"]), "campaign", until="deadline", owner="owner")
    need_counterparty(state, c["owner"])
    if c["raised"] + f["amount"] > c["target"]:
        raise LedgerError("over_target", f"only {c['target'] - c['raised']} left to raise")
    first = state.get(keys.contribution(c["id"], ctx.actor)) is None
    if first and c["contributors"] >= ctx.params.max_contributors:
        raise LedgerError("too_many")
    need_funds(state, ctx.actor, c["asset"], f["amount"])
    ctx.scratch.update(c=c, first=first)


def _a_contribute(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    c = ctx.scratch["c"]
    amount = ctx.f["amount"]
    escrow_in(state, ctx, ctx.actor, c["asset"], amount, c["id"], "campaign_contribution")
    k = keys.contribution(c["id"], ctx.actor)
    save(state, k, load_int(state, k) + amount)
    c["raised"] += amount
    c["contributors"] += 1 if ctx.scratch["first"] else 0
    save(state, keys.campaign(c["id"]), c)
    emit(state, ctx, "campaign_contributed", [ctx.actor, c["owner"]], campaign=c["id"], investor=ctx.actor,
         amount=amount, raised=c["raised"], target=c["target"])
    if c["raised"] == c["target"]:
        close(state, ctx, c)


def _contributions(state: StateView, cid: bytes) -> list[tuple[bytes, int]]:
    start, stop = keys.contributions_of(cid)
    n = len(start)
    return [(k[n:], int(unpack(v))) for k, v in state.iter_range(start, stop)]


def close(state: StateView, ctx: Ctx, c: dict[str, Any]) -> None:
    """Finalize (funds to the SME, shares to investors) or refund a campaign; defer it while any of
    those it would pay is frozen."""
    cid = c["id"]
    contribs = _contributions(state, cid)
    success = c["raised"] >= c["minimum"] and c["raised"] > 0
    frozen = frozen_among(state, ([c["owner"]] if success else []) + [i for i, _ in contribs])
    if frozen:
        defer(state, ctx, keys.S_CAMPAIGN_DEADLINE, cid, "campaign", frozen, [c["owner"]])
        return
    if success:
        escrow_out(state, ctx, c["owner"], c["asset"], c["raised"], cid, "campaign_finalized")
        for investor, amount in contribs:
            mint(state, ctx, investor, c["shares"], amount, "campaign_shares")
        c["status"] = "funded"
        kind = "campaign_finalized"
    else:
        for investor, amount in contribs:
            escrow_out(state, ctx, investor, c["asset"], amount, cid, "campaign_refund")
        c["status"] = "refunded"
        kind = "campaign_refunded"
    save(state, keys.campaign(cid), c)
    emit(state, ctx, kind, [c["owner"]] + [i for i, _ in contribs], campaign=cid, owner=c["owner"],
         raised=c["raised"], investors=len(contribs))


def on_deadline(state: StateView, ctx: Ctx, cid: bytes) -> None:
    """The deadline, or a retry of a deferred close (which may come before the deadline of a full one)."""
    c = load(state, keys.campaign(cid))
    if c is not None and c["status"] == "open" and (ctx.time >= c["deadline"] or c["raised"] == c["target"]):
        close(state, ctx, c)


KINDS = [
    KindSpec("campaign-create", "crowdfunding", "An SME opens a crowdfunding campaign with escrowed funding.",
             frozenset({"SME"}),
             (F("asset", "str", "currency raised", max_len=MAX_ASSET_LEN), AMOUNT("target", "amount sought"),
              AMOUNT("minimum", "least amount for success at the deadline"),
              TIME("deadline", "deadline, ms"),
              F("doc", "bytes32", "SHA-256 of the offering document", required=False)),
             _v_create, _a_create, ("unknown_asset", "bad_amount", "past_due", "bad_field"),
             ("campaign_created", "campaign_finalized", "campaign_refunded", "transition_deferred"),
             check=asset_fields("asset", then=_c_create)),
    KindSpec("campaign-contribute", "crowdfunding", "An investor puts money into a campaign's escrow.",
             frozenset({"INVESTOR", "BANK"}),
             (F("campaign", "bytes32", "campaign id (the campaign-create tx hash)"), AMOUNT()),
             _v_contribute, _a_contribute,
             ("not_found", "bad_state", "expired", "self_transfer", "recipient_frozen", "over_target", "too_many",
              "insufficient_funds"),
             ("funds_escrowed", "campaign_contributed", "campaign_finalized", "funds_released", "minted",
              "transition_deferred")),
]
