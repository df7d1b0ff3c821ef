"""Collateral kinds: collateral-register (a bank values and verifies), pledge (owner), release (pledgee).

Rule: a pledgeable item is either a registered collateral record (inventory, warehouse receipt) or an
accepted receivable (never to its own debtor). Collateral statuses: free -> pledged -> free | seized.
Only the owner pledges, only the pledgee bank releases, and nothing securing an open loan (applied,
active, overdue) is released; a default seizes it for the lender (see loans). A pledge is either
standing (`pledge`, loan = b"") or made by a loan application. A loan that ends (rejected, repaid)
ends only the pledges it made: an item that was already pledged to the lender when the loan applied
goes back to its standing pledge (`collateral_detached`), every other item of the loan is released.
"""

from __future__ import annotations

from typing import Any

from protocol.ledger import keys
from protocol.ledger.errors import LedgerError
from protocol.ledger.model import TxCtx
from protocol.ledger.spec import AMOUNT, MAX_ASSET_LEN, F, KindSpec, asset_fields
from protocol.ledger.store import (
    Ctx,
    emit,
    load,
    need_asset,
    need_counterparty,
    save,
)
from protocol.state import StateReader, StateView
from protocol.tx import SignedTx

COLLATERAL_KINDS = ("inventory", "warehouse_receipt", "equipment", "other")
OPEN_LOAN = ("applied", "active", "overdue")


def load_item(state: StateReader, item_id: bytes) -> tuple[bytes, dict[str, Any], str]:
    """(key, record, "collateral"|"receivable") of a pledgeable item, or not_found."""
    k = keys.collateral(item_id)
    rec = load(state, k)
    if rec is not None:
        return k, rec, "collateral"
    k = keys.receivable(item_id)
    rec = load(state, k)
    if rec is not None:
        return k, rec, "receivable"
    raise LedgerError("not_found", f"no collateral or receivable {item_id.hex()}")


def owner_of(rec: dict[str, Any], typ: str) -> bytes:
    owner: bytes = rec["owner"] if typ == "collateral" else rec["holder"]
    return owner


def check_pledgeable(rec: dict[str, Any], typ: str, owner: bytes, bank: bytes) -> None:
    if owner_of(rec, typ) != owner:
        raise LedgerError("not_owner")
    if typ == "collateral" and rec["status"] not in ("free", "pledged"):
        raise LedgerError("bad_state", f"collateral is {rec['status']}")
    if typ == "receivable" and rec["status"] != "accepted":
        raise LedgerError("bad_state", f"receivable is {rec['status']}")
    if typ == "receivable" and rec["debtor"] == bank:
        raise LedgerError("self_transfer", "a receivable cannot be pledged to its own debtor")


def set_pledge(state: StateView, key: bytes, rec: dict[str, Any], typ: str, to: bytes, loan: bytes) -> None:
    rec["pledged_to"] = to
    rec["loan"] = loan
    if typ == "collateral":
        rec["status"] = "pledged" if to else "free"
    else:
        rec["offer"] = None
    save(state, key, rec)


def release_item(state: StateView, ctx: Ctx, item_id: bytes, why: str) -> None:
    key, rec, typ = load_item(state, item_id)
    if not rec["pledged_to"]:
        return
    bank, loan = rec["pledged_to"], rec["loan"]
    set_pledge(state, key, rec, typ, b"", b"")
    emit(state, ctx, "collateral_released", [owner_of(rec, typ), bank], item=item_id, item_type=typ,
         owner=owner_of(rec, typ), pledgee=bank, loan=loan, reason=why)


def end_loan_pledge(state: StateView, ctx: Ctx, item_id: bytes, loan: dict[str, Any], why: str) -> None:
    """A loan ended (rejected or repaid): release the pledge it made on the item, or, when the item
    was pledged to the lender before the loan applied, leave that standing pledge in place."""
    key, rec, typ = load_item(state, item_id)
    if rec["loan"] != loan["id"] or rec["pledged_to"] != loan["lender"]:
        return  # this loan's pledge on the item already ended (e.g. the receivable was paid off)
    if item_id not in loan.get("standing", []):
        release_item(state, ctx, item_id, why)
        return
    set_pledge(state, key, rec, typ, loan["lender"], b"")
    emit(state, ctx, "collateral_detached", [owner_of(rec, typ), loan["lender"]], item=item_id, item_type=typ,
         owner=owner_of(rec, typ), pledgee=loan["lender"], loan=loan["id"], reason=why)


def seize_item(state: StateView, ctx: Ctx, item_id: bytes, lender: bytes, loan_id: bytes) -> None:
    """Enforcement: the pledged item becomes the lender's."""
    key, rec, typ = load_item(state, item_id)
    if rec["pledged_to"] != lender or rec["loan"] != loan_id:
        return
    old = owner_of(rec, typ)
    if typ == "collateral":
        rec.update(owner=lender, status="seized", pledged_to=b"", loan=b"")
    else:
        rec.update(holder=lender, pledged_to=b"", loan=b"", offer=None)
    save(state, key, rec)
    emit(state, ctx, "collateral_seized", [old, lender], item=item_id, item_type=typ, owner=old,
         lender=lender, loan=loan_id)


def _c_register(f: dict[str, Any]) -> None:
    if f["category"] not in COLLATERAL_KINDS:
        raise LedgerError("bad_field", f"field 'category' must be one of {', '.join(COLLATERAL_KINDS)}")


def _v_register(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    need_counterparty(state, ctx.f["owner"])
    need_asset(state, ctx.f["asset"])


def _a_register(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    cid = ctx.tx_hash
    save(state, keys.collateral(cid), {"id": cid, "owner": f["owner"], "verifier": ctx.actor,
                                       "category": f["category"], "valuation": f["valuation"], "asset": f["asset"],
                                       "doc": f["doc"], "status": "free", "pledged_to": b"", "loan": b"",
                                       "registered": ctx.time})
    emit(state, ctx, "collateral_registered", [f["owner"], ctx.actor], item=cid, owner=f["owner"],
         verifier=ctx.actor, category=f["category"], valuation=f["valuation"], asset=f["asset"], doc=f["doc"])


def _v_pledge(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    key, rec, typ = load_item(state, ctx.f["item"])
    check_pledgeable(rec, typ, ctx.actor, ctx.f["to"])
    if rec["pledged_to"]:
        raise LedgerError("pledged")
    need_counterparty(state, ctx.f["to"], "BANK")
    ctx.scratch.update(key=key, rec=rec, typ=typ)


def _a_pledge(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    s = ctx.scratch
    set_pledge(state, s["key"], s["rec"], s["typ"], ctx.f["to"], b"")
    emit(state, ctx, "collateral_pledged", [ctx.actor, ctx.f["to"]], item=ctx.f["item"], item_type=s["typ"],
         owner=ctx.actor, pledgee=ctx.f["to"], loan=b"")


def _v_release(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    _, rec, _ = load_item(state, ctx.f["item"])
    if not rec["pledged_to"]:
        raise LedgerError("bad_state", "the item is not pledged")
    if rec["pledged_to"] != ctx.actor:
        raise LedgerError("not_pledgee")
    if rec["loan"]:
        loan = load(state, keys.loan(rec["loan"]))
        if loan is not None and loan["status"] in OPEN_LOAN:
            raise LedgerError("collateral_in_use")


def _a_release(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    release_item(state, ctx, ctx.f["item"], "released")


_ITEM = F("item", "bytes32", "collateral id or receivable id")
KINDS = [
    KindSpec("collateral-register", "collateral",
             "A bank registers inventory or a warehouse receipt it has valued and verified for an owner.",
             frozenset({"BANK"}),
             (F("owner", "bytes32", "owner participant id"),
              F("category", "str", "inventory | warehouse_receipt | equipment | other", max_len=32),
              AMOUNT("valuation", "bank's valuation, minor units"),
              F("asset", "str", "valuation currency", max_len=MAX_ASSET_LEN),
              F("doc", "bytes32", "SHA-256 of the receipt / appraisal document")),
             _v_register, _a_register, ("not_registered", "recipient_frozen", "unknown_asset", "bad_field"),
             ("collateral_registered",), check=asset_fields("asset", then=_c_register)),
    KindSpec("pledge", "collateral", "The owner pledges a collateral item or receivable to a bank.",
             frozenset(), (_ITEM, F("to", "bytes32", "bank the item is pledged to")), _v_pledge, _a_pledge,
             ("not_found", "not_owner", "bad_state", "self_transfer", "pledged", "not_registered",
              "recipient_frozen", "bad_role"),
             ("collateral_pledged",)),
    KindSpec("release", "collateral", "The pledgee bank releases a pledge that secures no open loan.",
             frozenset({"BANK"}), (_ITEM,), _v_release, _a_release,
             ("not_found", "bad_state", "not_pledgee", "collateral_in_use"), ("collateral_released",)),
]
