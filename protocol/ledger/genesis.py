"""Genesis: validate a JSON-like spec and write the initial participants, assets, balances and params.

Rule: the whole spec is validated before anything is written; every rejection is a `GenesisError`
whose message names the entry (`participants[2].roles`). Genesis writes events at height 0.
"""

from __future__ import annotations

from typing import Any

from protocol.ledger import keys
from protocol.ledger.errors import GenesisError, LedgerError
from protocol.ledger.kinds.identity import new_participant
from protocol.ledger.model import MAX_AMOUNT, MAX_KYC, PARAM_NAMES, ROLES, BlockCtx, Params
from protocol.ledger.spec import check_asset_id
from protocol.ledger.store import create_asset, emit, mint, save
from protocol.state import StateView

MAX_GENESIS_ITEMS = 10_000


def _hex32(v: Any, where: str) -> bytes:
    if not isinstance(v, str) or len(v) != 64:
        raise GenesisError(f"{where} must be 64 lowercase hex characters")
    try:
        b = bytes.fromhex(v)
    except ValueError:
        raise GenesisError(f"{where} must be 64 lowercase hex characters") from None
    if b.hex() != v:
        raise GenesisError(f"{where} must be lowercase hex")
    return b


def _int(m: dict[str, Any], key: str, where: str, lo: int, hi: int) -> int:
    v = m.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise GenesisError(f"{where}.{key} must be an integer in {lo}..{hi}")
    return v


def _list(spec: dict[str, Any], key: str) -> list[dict[str, Any]]:
    v = spec.get(key, [])
    if not isinstance(v, list) or len(v) > MAX_GENESIS_ITEMS:
        raise GenesisError(f"{key} must be a list of at most {MAX_GENESIS_ITEMS} maps")
    for i, item in enumerate(v):
        if not isinstance(item, dict):
            raise GenesisError(f"{key}[{i}] must be a map")
    return v


def _only(m: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(m) - allowed)
    if extra:
        raise GenesisError(f"{where} has unknown field(s): {', '.join(extra)}")


def parse_params(v: Any) -> Params:
    if v is None:
        return Params()
    if not isinstance(v, dict):
        raise GenesisError("params must be a map")
    _only(v, set(PARAM_NAMES), "params")
    for k, x in v.items():
        if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x <= 2**62:
            raise GenesisError(f"params.{k} must be a non-negative integer")
    p = Params.from_value(v)
    if (p.score_min > p.score_max or p.util_alert_bps > 10_000 or p.max_sched_per_block < 1
            or p.frozen_retry_ms < 1):
        raise GenesisError("params: score_min <= score_max, util_alert_bps <= 10000, max_sched_per_block >= 1, "
                           "frozen_retry_ms >= 1")
    return p


def apply_genesis(state: StateView, spec: dict[str, Any]) -> None:
    """Validate `spec` fully, then write it. Raises GenesisError; writes nothing on error."""
    if not isinstance(spec, dict):
        raise GenesisError("genesis spec must be a map")
    _only(spec, {"participants", "assets", "balances", "params", "time"}, "genesis spec")
    params = parse_params(spec.get("params"))
    time = spec.get("time", 0)
    if not isinstance(time, int) or isinstance(time, bool) or time < 0:
        raise GenesisError("time must be a non-negative integer (ms)")
    people: dict[bytes, dict[str, Any]] = {}
    for i, p in enumerate(_list(spec, "participants")):
        w = f"participants[{i}]"
        _only(p, {"id", "name", "roles", "kyc"}, w)
        pid = _hex32(p.get("id"), w + ".id")
        if pid in people:
            raise GenesisError(f"{w}.id is a duplicate")
        name = p.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise GenesisError(f"{w}.name must be a string of 1..64 characters")
        roles = p.get("roles")
        if (not isinstance(roles, list) or not roles or len(set(roles)) != len(roles)
                or any(r not in ROLES for r in roles)):
            raise GenesisError(f"{w}.roles must be distinct names from {', '.join(ROLES)}")
        people[pid] = new_participant(pid, name, roles, _int(p, "kyc", w, 0, MAX_KYC))
    assets: dict[str, tuple[bytes, int]] = {}
    for i, a in enumerate(_list(spec, "assets")):
        w = f"assets[{i}]"
        _only(a, {"id", "issuer", "decimals"}, w)
        aid = a.get("id")
        try:
            if not isinstance(aid, str):
                raise GenesisError(f"{w}.id must be a string")
            check_asset_id(aid)
        except LedgerError:
            raise GenesisError(f"{w}.id is not a valid asset id (A-Z 0-9 . _ -, 1..24)") from None
        if aid in assets or aid.startswith("SH."):
            raise GenesisError(f"{w}.id is a duplicate or uses the reserved SH. prefix")
        issuer = _hex32(a.get("issuer"), w + ".issuer")
        if issuer not in people or "BANK" not in people[issuer]["roles"]:
            raise GenesisError(f"{w}.issuer must be a participant with the BANK role")
        assets[aid] = (issuer, _int(a, "decimals", w, 0, 18))
    balances: list[tuple[bytes, str, int]] = []
    totals: dict[str, int] = {}
    for i, b in enumerate(_list(spec, "balances")):
        w = f"balances[{i}]"
        _only(b, {"account", "asset", "amount"}, w)
        acct = _hex32(b.get("account"), w + ".account")
        if acct not in people:
            raise GenesisError(f"{w}.account is not a participant")
        aid = b.get("asset")
        if not isinstance(aid, str) or aid not in assets:
            raise GenesisError(f"{w}.asset is not a genesis asset")
        amount = _int(b, "amount", w, 1, MAX_AMOUNT)
        totals[aid] = totals.get(aid, 0) + amount
        if totals[aid] > 2**62:
            raise GenesisError(f"{w}: total supply of {aid} is too large")
        balances.append((acct, aid, amount))

    ctx = BlockCtx(height=0, time=time, params=params)
    save(state, keys.PARAMS, params.to_value())
    for pid in sorted(people):
        rec = people[pid]
        save(state, keys.participant(pid), rec)
        emit(state, ctx, "participant_registered", [pid], account=pid, name=rec["name"], roles=rec["roles"],
             kyc=rec["kyc"], by=b"")
    for aid in sorted(assets):
        issuer, decimals = assets[aid]
        create_asset(state, aid, issuer, decimals, "deposit")
        emit(state, ctx, "asset_created", [issuer], asset=aid, issuer=issuer, decimals=decimals)
    for acct, aid, amount in balances:
        mint(state, ctx, acct, aid, amount, "genesis")
    save(state, keys.TIME, time)
    save(state, keys.EVENT_CURSOR, [0, ctx.next_event])
