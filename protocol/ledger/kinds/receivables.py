"""Receivable kinds: issue, accept, reject, transfer, split, discount, settle.

Rule: a receivable is a record (not a fungible token) held by one participant. Statuses:
proposed -> accepted | rejected; accepted -> overdue (time-driven) | settled | split;
overdue -> settled. `outstanding <= face` always; a split ends the parent (status "split",
outstanding 0) and creates two children whose faces sum to the parent's outstanding at the split.
Discounting is two-sided: the holder offers (`buyer`, `price`), then the buyer sends the same kind
with the same price and pays. A pledged receivable cannot be transferred, split or discounted.
"""

from __future__ import annotations

from typing import Any

from protocol.crypto import sha256
from protocol.ledger import keys
from protocol.ledger.errors import LedgerError
from protocol.ledger.model import BlockCtx, TxCtx
from protocol.ledger.spec import AMOUNT, TIME, F, KindSpec
from protocol.ledger.store import (
    MAX_ASSET_LEN,
    Ctx,
    bump_stat,
    emit,
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

TRANSFERABLE = ("accepted",)


def schedule_due(state: StateView, ctx: Ctx, rec: dict[str, Any]) -> None:
    soon = rec["due"] - ctx.params.due_soon_ms
    if soon > ctx.time:
        schedule(state, soon, keys.S_RECV_DUE_SOON, rec["id"])
    schedule(state, rec["due"] + 1, keys.S_RECV_DUE, rec["id"])  # paying on the due date is on time


def _load(state: StateView, ctx: TxCtx) -> dict[str, Any]:
    rec = need(state, keys.receivable(ctx.f["receivable"]))
    ctx.scratch["r"] = rec
    return rec


def _holder_can_move(rec: dict[str, Any], ctx: TxCtx) -> None:
    if rec["holder"] != ctx.actor:
        raise LedgerError("not_holder")
    if rec["status"] not in TRANSFERABLE:
        raise LedgerError("bad_state", f"receivable is {rec['status']}")
    if rec["pledged_to"]:
        raise LedgerError("pledged")


def _v_issue(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    need_asset(state, f["asset"])
    need_other(state, ctx, f["debtor"], "SME", why="creditor and debtor are the same participant")
    if f["due"] <= ctx.time:
        raise LedgerError("past_due")


def _a_issue(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    rid = ctx.tx_hash
    rec = {"id": rid, "parent": b"", "children": [], "creditor": ctx.actor, "debtor": f["debtor"],
           "holder": ctx.actor, "face": f["face"], "outstanding": f["face"], "asset": f["asset"],
           "due": f["due"], "doc": f["doc"], "status": "proposed", "pledged_to": b"", "loan": b"",
           "offer": None, "issued": ctx.time, "split_total": 0}
    save(state, keys.receivable(rid), rec)
    emit(state, ctx, "receivable_issued", [ctx.actor, f["debtor"]], receivable=rid, creditor=ctx.actor,
         debtor=f["debtor"], face=f["face"], asset=f["asset"], due=f["due"], doc=f["doc"])


def _v_answer(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    rec = _load(state, ctx)
    if rec["debtor"] != ctx.actor:
        raise LedgerError("not_debtor")
    if rec["status"] != "proposed":
        raise LedgerError("bad_state", f"receivable is {rec['status']}")
    if tx.kind == "receivable-accept" and rec["due"] <= ctx.time:
        raise LedgerError("past_due")


def _a_answer(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    rec = ctx.scratch["r"]
    rec["status"] = "accepted" if tx.kind == "receivable-accept" else "rejected"
    save(state, keys.receivable(rec["id"]), rec)
    if rec["status"] == "accepted":
        schedule_due(state, ctx, rec)
    emit(state, ctx, "receivable_" + rec["status"], [rec["debtor"], rec["holder"]], receivable=rec["id"],
         debtor=rec["debtor"], holder=rec["holder"])


def _v_transfer(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    rec = _load(state, ctx)
    _holder_can_move(rec, ctx)
    need_other(state, ctx, ctx.f["to"])


def _a_transfer(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    rec = ctx.scratch["r"]
    old = rec["holder"]
    rec["holder"] = ctx.f["to"]
    rec["offer"] = None
    save(state, keys.receivable(rec["id"]), rec)
    emit(state, ctx, "receivable_transferred", [old, rec["holder"]], receivable=rec["id"],
         **{"from": old, "to": rec["holder"]})


def _v_split(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    rec = _load(state, ctx)
    _holder_can_move(rec, ctx)
    if ctx.f["amount"] >= rec["outstanding"]:
        raise LedgerError("bad_amount", "a split must leave a positive remainder")
    need_counterparty(state, ctx.f["to"])


def _a_split(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    rec = ctx.scratch["r"]
    amount = ctx.f["amount"]
    parts = [(ctx.f["to"], amount), (rec["holder"], rec["outstanding"] - amount)]
    children = []
    for i, (holder, face) in enumerate(parts):
        cid = sha256(b"split" + rec["id"] + bytes([i]))
        child = dict(rec, id=cid, parent=rec["id"], children=[], holder=holder, face=face,
                     outstanding=face, offer=None, issued=ctx.time, split_total=0)
        save(state, keys.receivable(cid), child)
        schedule_due(state, ctx, child)
        children.append(cid)
    rec.update(status="split", children=children, split_total=rec["outstanding"], outstanding=0, offer=None)
    save(state, keys.receivable(rec["id"]), rec)
    emit(state, ctx, "receivable_split", [rec["holder"], ctx.f["to"]], receivable=rec["id"],
         children=children, amounts=[p[1] for p in parts], holders=[p[0] for p in parts])


def _v_discount(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    rec = _load(state, ctx)
    f = ctx.f
    if rec["holder"] == ctx.actor:
        _holder_can_move(rec, ctx)
        buyer = need_other(state, ctx, f["buyer"])
        if not {"BANK", "INVESTOR"} & set(buyer["roles"]):
            raise LedgerError("bad_role", "the buyer must be a BANK or an INVESTOR")
        if f["price"] > rec["outstanding"]:
            raise LedgerError("bad_price")
        return
    offer = rec["offer"]
    if offer is None or offer["buyer"] != ctx.actor or f["buyer"] != ctx.actor or offer["price"] != f["price"]:
        raise LedgerError("offer_mismatch")
    if rec["status"] not in TRANSFERABLE or rec["pledged_to"]:
        raise LedgerError("bad_state")
    need_counterparty(state, rec["holder"])
    need_funds(state, ctx.actor, rec["asset"], f["price"])


def _a_discount(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    rec = ctx.scratch["r"]
    f = ctx.f
    if rec["holder"] == ctx.actor:
        rec["offer"] = {"buyer": f["buyer"], "price": f["price"]}
        save(state, keys.receivable(rec["id"]), rec)
        emit(state, ctx, "receivable_offered", [ctx.actor, f["buyer"]], receivable=rec["id"],
             holder=ctx.actor, buyer=f["buyer"], price=f["price"])
        return
    seller = rec["holder"]
    move(state, ctx, ctx.actor, seller, rec["asset"], f["price"], "receivable_discount", ref=rec["id"])
    rec["holder"] = ctx.actor
    rec["offer"] = None
    save(state, keys.receivable(rec["id"]), rec)
    emit(state, ctx, "receivable_discounted", [seller, ctx.actor], receivable=rec["id"], seller=seller,
         buyer=ctx.actor, price=f["price"], outstanding=rec["outstanding"])


def _v_settle(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    rec = _load(state, ctx)
    if rec["debtor"] != ctx.actor:
        raise LedgerError("not_debtor")
    if rec["status"] not in ("accepted", "overdue"):
        raise LedgerError("bad_state", f"receivable is {rec['status']}")
    if ctx.f["amount"] > rec["outstanding"]:
        raise LedgerError("bad_amount", f"outstanding is {rec['outstanding']}")
    need_counterparty(state, rec["holder"])
    need_funds(state, ctx.actor, rec["asset"], ctx.f["amount"])


def _a_settle(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    rec = ctx.scratch["r"]
    amount = ctx.f["amount"]
    if rec["holder"] != ctx.actor:
        move(state, ctx, ctx.actor, rec["holder"], rec["asset"], amount, "receivable_settle", ref=rec["id"])
    rec["outstanding"] -= amount
    was = rec["status"]
    if rec["outstanding"] == 0:
        rec["status"] = "settled"
        rec["offer"] = None
        rec["pledged_to"] = b""
        rec["loan"] = b""
    save(state, keys.receivable(rec["id"]), rec)
    emit(state, ctx, "receivable_settled" if rec["status"] == "settled" else "receivable_paid",
         [ctx.actor, rec["holder"]], receivable=rec["id"], debtor=ctx.actor, holder=rec["holder"],
         amount=amount, outstanding=rec["outstanding"])
    bump_stat(state, ctx, ctx.actor, "payments")
    if rec["status"] == "settled" and was == "accepted":
        bump_stat(state, ctx, ctx.actor, "honoured")


def on_due_soon(state: StateView, ctx: BlockCtx, rid: bytes) -> None:
    rec = need(state, keys.receivable(rid))
    if rec["status"] == "accepted":
        emit(state, ctx, "risk_due_soon", [rec["debtor"], rec["holder"]], object="receivable", id=rid,
             due=rec["due"], owed=rec["outstanding"])


def on_due(state: StateView, ctx: BlockCtx, rid: bytes) -> None:
    rec = need(state, keys.receivable(rid))
    if rec["status"] != "accepted":
        return
    rec["status"] = "overdue"
    save(state, keys.receivable(rid), rec)
    emit(state, ctx, "risk_overdue", [rec["debtor"], rec["holder"]], object="receivable", id=rid,
         due=rec["due"], owed=rec["outstanding"])
    bump_stat(state, ctx, rec["debtor"], "recv_late")


_RID = F("receivable", "bytes32", "receivable id")
_SME = frozenset({"SME"})
KINDS = [
    KindSpec("receivable-issue", "receivables", "A creditor SME records what a debtor SME owes it.", _SME,
             (F("debtor", "bytes32", "debtor SME id"), AMOUNT("face", "face value, minor units"),
              F("asset", "str", "currency asset", max_len=MAX_ASSET_LEN), TIME("due", "due date, ms"),
              F("doc", "bytes32", "SHA-256 of the invoice / contract document")),
             _v_issue, _a_issue, ("unknown_asset", "self_transfer", "not_registered", "bad_role", "past_due"),
             ("receivable_issued",)),
    KindSpec("receivable-accept", "receivables", "The debtor confirms the receivable.", _SME, (_RID,),
             _v_answer, _a_answer, ("not_found", "not_debtor", "bad_state", "past_due"),
             ("receivable_accepted",)),
    KindSpec("receivable-reject", "receivables", "The debtor disputes the receivable.", _SME, (_RID,),
             _v_answer, _a_answer, ("not_found", "not_debtor", "bad_state"), ("receivable_rejected",)),
    KindSpec("receivable-transfer", "receivables", "The holder passes the whole receivable on.", frozenset(),
             (_RID, F("to", "bytes32", "new holder")), _v_transfer, _a_transfer,
             ("not_found", "not_holder", "bad_state", "pledged", "self_transfer", "not_registered",
              "recipient_frozen"), ("receivable_transferred",)),
    KindSpec("receivable-split", "receivables", "The holder splits `amount` off to `to` (e.g. a supplier).",
             frozenset(), (_RID, AMOUNT("amount", "face of the part split off"), F("to", "bytes32", "its holder")),
             _v_split, _a_split, ("not_found", "not_holder", "bad_state", "pledged", "bad_amount",
                                  "not_registered", "recipient_frozen"), ("receivable_split",)),
    KindSpec("receivable-discount", "receivables",
             "Holder offers the receivable to `buyer` at `price`; the buyer sends the same to pay and take it.",
             frozenset(), (_RID, F("buyer", "bytes32", "bank or investor buying"), AMOUNT("price", "price paid")),
             _v_discount, _a_discount, ("not_found", "not_holder", "bad_state", "pledged", "self_transfer",
                                        "not_registered", "recipient_frozen", "bad_role",
                                        "bad_price", "offer_mismatch", "insufficient_funds"),
             ("receivable_offered", "receivable_discounted", "funds_moved")),
    KindSpec("receivable-settle", "receivables", "The debtor pays the holder (partly or fully).", frozenset(),
             (_RID, AMOUNT()), _v_settle, _a_settle,
             ("not_found", "not_debtor", "bad_state", "bad_amount", "insufficient_funds", "recipient_frozen"),
             ("funds_moved", "receivable_paid", "receivable_settled", "credit_score_changed")),
]
