"""Receivable kinds: issue, accept, reject, transfer, split, discount, settle.

Rule: a receivable is a record (not a fungible token) held by one participant. Statuses:
proposed -> accepted | rejected; accepted -> overdue (time-driven) | settled | split;
overdue -> settled. `outstanding <= face` always; a split ends the parent (status "split",
outstanding 0) and creates two children whose faces sum to the parent's outstanding at the split.
Discounting is two-sided: the holder offers (`buyer`, `price`), then the buyer sends the same kind
with the same price and pays; a change of the outstanding amount withdraws the offer, so a price never
exceeds what is outstanding when it is paid. A pledged receivable cannot be transferred, split or
discounted, and what its debtor pays reaches the pledgee: while the pledge secures the pledgee's
active or overdue loan a payment goes to the lender as a payment of that loan, and only what exceeds
what the loan owes goes to the holder; while it secures no active loan (standing pledge, loan still
applied) it cannot be settled (`pledged`). Credit counters (payments, honoured) move only when money
moved from the debtor to someone else.
"""

from __future__ import annotations

from typing import Any

from protocol.crypto import sha256
from protocol.ledger import keys
from protocol.ledger.errors import LedgerError
from protocol.ledger.kinds.collateral import release_item
from protocol.ledger.kinds.loans import accrue, owed, pay_loan
from protocol.ledger.model import BlockCtx, TxCtx
from protocol.ledger.spec import AMOUNT, MAX_ASSET_LEN, TIME, F, KindSpec, asset_fields
from protocol.ledger.store import (
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
    if f["price"] > rec["outstanding"]:
        raise LedgerError("bad_price")
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


def _securing_loan(state: StateView, rec: dict[str, Any]) -> dict[str, Any]:
    """The active or overdue loan of the pledgee that a pledged receivable secures; `pledged` when the
    pledge secures none (standing pledge, loan not yet approved): then it cannot be paid off."""
    loan = load(state, keys.loan(rec["loan"])) if rec["loan"] else None
    if loan is None or loan["status"] not in ("active", "overdue") or loan["lender"] != rec["pledged_to"]:
        raise LedgerError("pledged", "the receivable is pledged to a bank without an active loan it secures; "
                                     "the bank releases it or decides the loan first")
    return loan


def _v_settle(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    rec = _load(state, ctx)
    amount = ctx.f["amount"]
    if rec["debtor"] != ctx.actor:
        raise LedgerError("not_debtor")
    if rec["status"] not in ("accepted", "overdue"):
        raise LedgerError("bad_state", f"receivable is {rec['status']}")
    if amount > rec["outstanding"]:
        raise LedgerError("bad_amount", f"outstanding is {rec['outstanding']}")
    to_lender = 0
    if rec["pledged_to"]:
        loan = _securing_loan(state, rec)
        need_counterparty(state, loan["lender"])
        accrue(loan, ctx.time)
        to_lender = min(amount, owed(loan))
        if amount > to_lender and rec["id"] in loan["standing"]:
            raise LedgerError("pledged", f"the loan owes {to_lender}; the receivable stays pledged to the bank "
                                         "after it, so no more can be paid")
        ctx.scratch["loan"] = loan
    if amount > to_lender:
        need_counterparty(state, rec["holder"])
    need_funds(state, ctx.actor, rec["asset"], amount)


def _a_settle(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    rid = ctx.scratch["r"]["id"]
    amount = ctx.f["amount"]
    debtor = ctx.actor
    loan = ctx.scratch.get("loan")
    to_lender = 0 if loan is None else pay_loan(state, ctx, loan, debtor, amount, "receivable_settle", rid)
    rec = need(state, keys.receivable(rid))  # paying off the loan may have ended the pledge
    rest = amount - to_lender
    if rest and rec["holder"] != debtor:
        move(state, ctx, debtor, rec["holder"], rec["asset"], rest, "receivable_settle", ref=rid)
    money_moved = to_lender > 0 or (rest > 0 and rec["holder"] != debtor)
    rec["outstanding"] -= amount
    was = rec["status"]
    if rec["outstanding"] == 0:
        rec["status"] = "settled"
    offer = rec["offer"]
    rec["offer"] = None
    save(state, keys.receivable(rid), rec)
    if offer is not None:
        emit(state, ctx, "receivable_offer_withdrawn", [rec["holder"], offer["buyer"]], receivable=rid,
             buyer=offer["buyer"], price=offer["price"], outstanding=rec["outstanding"],
             reason="outstanding_changed")
    emit(state, ctx, "receivable_settled" if rec["status"] == "settled" else "receivable_paid",
         [debtor, rec["holder"]], receivable=rid, debtor=debtor, holder=rec["holder"], amount=amount,
         outstanding=rec["outstanding"], to_pledgee=to_lender)
    if rec["status"] == "settled" and rec["pledged_to"]:
        release_item(state, ctx, rid, "receivable_settled")
    if money_moved:
        bump_stat(state, ctx, debtor, "payments")
        if rec["status"] == "settled" and was == "accepted":
            bump_stat(state, ctx, debtor, "honoured")


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
             ("receivable_issued",), check=asset_fields("asset")),
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
    KindSpec("receivable-settle", "receivables",
             "The debtor pays the holder (partly or fully); while pledged for a loan, the lender first.",
             frozenset(), (_RID, AMOUNT()), _v_settle, _a_settle,
             ("not_found", "not_debtor", "bad_state", "bad_amount", "pledged", "insufficient_funds",
              "recipient_frozen"),
             ("funds_moved", "loan_payment", "loan_repaid", "collateral_released", "collateral_detached",
              "receivable_offer_withdrawn", "receivable_paid", "receivable_settled", "credit_score_changed")),
]
