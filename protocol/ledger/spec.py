"""Declarative body specs: every kind's fields, its allowed roles, its static check and its
validate/apply pair.

Rule: a tx body is parsed only through `static_check(spec, body)`: `parse_body` checks that exactly the
envelope keys (`chain`, `kind`, `from`, `nonce`) plus the kind's declared fields are present, each
with its declared type and bounds (`bad_field` naming the field otherwise), then the kind's `check`
runs: a pure function of the parsed fields alone (asset id syntax, distinct items, minimum <= target),
never of state or time. The mempool runs the same `static_check` at admission and the block runs it
before `validate`, so a body refused at `POST /txs` gets the code the block would give, and costs no
nonce. The CLI and the docs build bodies from the same `FieldSpec`s.

Field types: `int` (bounded by lo/hi), `str` (max_len), `bytes32` (exactly 32 bytes), `bytes`
(max_len bytes), `list` (of `item` type, at most max_len items).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from protocol.ledger.errors import LedgerError
from protocol.ledger.model import MAX_AMOUNT, TxCtx
from protocol.state import StateView
from protocol.tx import SignedTx

ENVELOPE = frozenset({"chain", "kind", "from", "nonce"})
FIELD_TYPES = ("int", "str", "bytes32", "bytes", "list")
ITEM_MAX_LEN = 64  # longest str item of a list field

Hook = Callable[[StateView, SignedTx, TxCtx], None]
Check = Callable[[dict[str, Any]], None]

_ASSET_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
MAX_ASSET_LEN = 24


def check_asset_id(asset_id: str) -> None:
    """Asset ids are 1..24 chars of A-Z 0-9 . _ - starting with a letter or digit."""
    if (not 0 < len(asset_id) <= MAX_ASSET_LEN or not set(asset_id) <= _ASSET_CHARS
            or asset_id[0] in "._-"):
        raise LedgerError("bad_asset", f"malformed asset id {asset_id!r}")


def no_check(f: dict[str, Any]) -> None:
    """The static check of a kind whose field specs say everything."""


def asset_fields(*names: str, then: Check = no_check) -> Check:
    """A static check that the named (present) fields are well-formed asset ids, then `then`."""
    def check(f: dict[str, Any]) -> None:
        for name in names:
            if f[name] is not None:
                check_asset_id(f[name])
        then(f)
    return check


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: str
    required: bool = True
    doc: str = ""
    lo: int = 0
    hi: int = MAX_AMOUNT
    max_len: int = 128
    item: str = ""  # element type of a list: "str" or "bytes32"

    def to_value(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required,
                               "doc": self.doc}
        if self.type == "int":
            out.update(lo=self.lo, hi=self.hi)
        elif self.type in ("str", "bytes", "list"):
            out["max_len"] = self.max_len
        if self.type == "list":
            out["item"] = self.item
        return out


@dataclass(frozen=True, slots=True)
class KindSpec:
    """One tx kind: CLI name, who may send it, its fields, its events, and its validate/apply."""

    name: str
    family: str
    doc: str
    roles: frozenset[str]  # empty = any registered participant
    fields: tuple[FieldSpec, ...]
    validate: Hook
    apply: Hook
    errors: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    check: Check = no_check  # static: fields only, no state, no time

    def to_value(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "doc": self.doc, "roles": sorted(self.roles),
                "fields": [f.to_value() for f in self.fields], "errors": list(self.errors),
                "events": list(self.events)}


def _bad(name: str, why: str) -> LedgerError:
    return LedgerError("bad_field", f"field '{name}' {why}")


def _check(fs: FieldSpec, v: Any, name: str, typ: str) -> Any:
    if typ == "int":
        if not isinstance(v, int) or isinstance(v, bool):
            raise _bad(name, "must be an integer")
        if v < fs.lo or v > fs.hi:
            raise _bad(name, f"must be in {fs.lo}..{fs.hi}")
        return v
    if typ == "str":
        if not isinstance(v, str):
            raise _bad(name, "must be a string")
        if not 0 < len(v) <= fs.max_len:
            raise _bad(name, f"must be 1..{fs.max_len} characters")
        return v
    if typ == "bytes32":
        if not isinstance(v, bytes) or len(v) != 32:
            raise _bad(name, "must be 32 bytes")
        return v
    if typ == "bytes":
        if not isinstance(v, bytes):
            raise _bad(name, "must be bytes")
        if len(v) > fs.max_len:
            raise _bad(name, f"must be at most {fs.max_len} bytes")
        return v
    raise _bad(name, f"has unsupported type {typ}")


def parse_body(spec: KindSpec, body: Mapping[str, Any]) -> dict[str, Any]:
    """Typed field values of a body; optional fields that are absent are None."""
    allowed = ENVELOPE | {f.name for f in spec.fields}
    extra = sorted(k for k in body if k not in allowed)
    if extra:
        raise LedgerError("bad_field", f"unknown field(s): {', '.join(extra)}")
    out: dict[str, Any] = {}
    for fs in spec.fields:
        if fs.name not in body:
            if fs.required:
                raise _bad(fs.name, "is missing")
            out[fs.name] = None
            continue
        v = body[fs.name]
        if fs.type == "list":
            if not isinstance(v, list):
                raise _bad(fs.name, "must be a list")
            if len(v) > fs.max_len:
                raise _bad(fs.name, f"has more than {fs.max_len} items")
            item = FieldSpec(name=fs.name + "[]", type=fs.item, max_len=ITEM_MAX_LEN)
            out[fs.name] = [_check(item, x, item.name, fs.item) for x in v]
        else:
            out[fs.name] = _check(fs, v, fs.name, fs.type)
    return out


def static_check(spec: KindSpec, body: Mapping[str, Any]) -> dict[str, Any]:
    """The parsed fields of a body that passes its kind's static checks; raises LedgerError otherwise."""
    f = parse_body(spec, body)
    spec.check(f)
    return f


def F(name: str, type_: str, doc: str = "", *, required: bool = True, lo: int = 0, hi: int = MAX_AMOUNT,
      max_len: int = 128, item: str = "") -> FieldSpec:
    """Shorthand used by kind modules to declare fields."""
    return FieldSpec(name=name, type=type_, required=required, doc=doc, lo=lo, hi=hi, max_len=max_len,
                     item=item)


def AMOUNT(name: str = "amount", doc: str = "amount in minor units") -> FieldSpec:
    return F(name, "int", doc, lo=1, hi=MAX_AMOUNT)


def TIME(name: str, doc: str) -> FieldSpec:
    return F(name, "int", doc, lo=0, hi=2**63 - 1)

