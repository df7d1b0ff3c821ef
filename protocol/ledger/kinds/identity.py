"""Identity kinds: register, rotate-key, freeze, unfreeze.

Rule: a participant id is the Ed25519 key it was registered with and never changes; rotate-key
points a fresh signing key at the id (`k/<new>` -> id) and revokes the old key (`k/<old>` -> b"").
Only regulators register, freeze and unfreeze.
"""

from __future__ import annotations

from typing import Any

from protocol.ledger import keys
from protocol.ledger.errors import LedgerError
from protocol.ledger.model import MAX_KYC, ROLES, TxCtx
from protocol.ledger.spec import F, KindSpec
from protocol.ledger.store import emit, load, need_participant, participant, save
from protocol.state import StateReader, StateView
from protocol.tx import SignedTx


def key_in_use(state: StateReader, key: bytes) -> bool:
    return participant(state, key) is not None or state.get(keys.key_owner(key)) is not None


def _c_register(f: dict[str, Any]) -> None:
    roles = f["roles"]
    if not roles or len(set(roles)) != len(roles) or any(r not in ROLES for r in roles):
        raise LedgerError("bad_role", "roles must be distinct names from BANK, SME, INVESTOR, REGULATOR")


def _v_register(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    if key_in_use(state, ctx.f["id"]):
        raise LedgerError("already_registered")


def new_participant(pid: bytes, name: str, roles: list[str], kyc: int) -> dict[str, object]:
    return {"id": pid, "name": name, "roles": sorted(roles), "kyc": kyc, "frozen": False, "key": pid}


def _a_register(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    f = ctx.f
    save(state, keys.participant(f["id"]), new_participant(f["id"], f["name"], f["roles"], f["kyc"]))
    emit(state, ctx, "participant_registered", [f["id"], ctx.actor], account=f["id"], name=f["name"],
         roles=sorted(f["roles"]), kyc=f["kyc"], by=ctx.actor)


def _v_rotate(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    if key_in_use(state, ctx.f["new_key"]):
        raise LedgerError("already_registered", "the new key is already in use")


def _a_rotate(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    new = ctx.f["new_key"]
    rec = need_participant(state, ctx.actor)
    rec["key"] = new
    save(state, keys.participant(ctx.actor), rec)
    save(state, keys.key_owner(new), ctx.actor)
    save(state, keys.key_owner(ctx.key), b"")
    emit(state, ctx, "key_rotated", [ctx.actor], account=ctx.actor, old_key=ctx.key, new_key=new)


def _v_freeze(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    rec = need_participant(state, ctx.f["account"])
    if tx.kind == "freeze" and rec["frozen"]:
        raise LedgerError("already_frozen")
    if tx.kind == "unfreeze" and not rec["frozen"]:
        raise LedgerError("not_frozen")


def _a_freeze(state: StateView, tx: SignedTx, ctx: TxCtx) -> None:
    acct = ctx.f["account"]
    rec = load(state, keys.participant(acct))
    assert rec is not None
    rec["frozen"] = tx.kind == "freeze"
    save(state, keys.participant(acct), rec)
    emit(state, ctx, "participant_frozen" if rec["frozen"] else "participant_unfrozen", [acct, ctx.actor],
         account=acct, by=ctx.actor, reason=ctx.f["reason"] or "")


_REG = frozenset({"REGULATOR"})
_REASON = F("reason", "str", "free-text reason", required=False, max_len=256)

KINDS = [
    KindSpec("register", "identity", "Register a participant with roles and a KYC level.", _REG,
             (F("id", "bytes32", "the participant's Ed25519 public key"),
              F("name", "str", "display name", max_len=64),
              F("roles", "list", "roles: BANK, SME, INVESTOR, REGULATOR", max_len=4, item="str"),
              F("kyc", "int", "KYC level 0..3", hi=MAX_KYC)),
             _v_register, _a_register, ("already_registered", "bad_role"), ("participant_registered",),
             check=_c_register),
    KindSpec("rotate-key", "identity", "Move signing rights to a new key; the old key is revoked.",
             frozenset(), (F("new_key", "bytes32", "the new Ed25519 public key"),),
             _v_rotate, _a_rotate, ("already_registered",), ("key_rotated",)),
    KindSpec("freeze", "identity", "Freeze a participant: it can no longer send or receive.", _REG,
             (F("account", "bytes32", "participant id"), _REASON),
             _v_freeze, _a_freeze, ("not_registered", "already_frozen"), ("participant_frozen",)),
    KindSpec("unfreeze", "identity", "Lift a freeze.", _REG,
             (F("account", "bytes32", "participant id"), _REASON),
             _v_freeze, _a_freeze, ("not_registered", "not_frozen"), ("participant_unfrozen",)),
]
