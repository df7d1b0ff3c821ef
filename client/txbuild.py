"""Build and sign tx bodies from the ledger's declarative `KINDS` field specs (SDK builders and CLI).

Two entries, one set of rules: `body_fields(kind, values)` takes Python values (the SDK's typed builders:
`int`, `str`, `bytes`; a `bytes32` also as 64 hex characters, a `Wallet`, or anything with a `tx_hash`,
such as the `Receipt` of the tx that created the object), `parse_text(kind, texts)` takes command-line
text (`bytes32` as hex or `@wallet.json`, lists comma-separated). A transfer's `memo` given as text is
sealed to the recipient (X25519 sealed box, DESIGN section 4); `open_memo` opens it with the recipient's
wallet. Every body is checked by the ledger's own `parse_body` before it is signed, so a bad field is a
`UsageError` (code `bad_field`) here and never costs a nonce.
Rule: the ledger's `FieldSpec`s are the only source of field names and types; nothing is hard-coded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeAlias

import nacl.exceptions
import nacl.public

from client.errors import UsageError
from client.wallet import Wallet, keystore_info
from protocol.crypto import x25519_public_from_ed25519
from protocol.ledger import KINDS, LedgerError
from protocol.ledger.spec import ENVELOPE, FieldSpec, KindSpec, parse_body
from protocol.tx import SignedTx

MEMO_KIND, MEMO_FIELD = "transfer", "memo"


class HasTxHash(Protocol):
    """Anything naming the tx that created an object, e.g. a `Receipt` (object ids are tx hashes)."""

    @property
    def tx_hash(self) -> str: ...


Id: TypeAlias = bytes | str | Wallet | HasTxHash


def kind_spec(kind: str) -> KindSpec:
    spec = KINDS.get(kind)
    if spec is None:
        raise UsageError(f"unknown tx kind {kind!r}; kinds: {', '.join(sorted(KINDS))}")
    return spec


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# ---- Python values (SDK) ---------------------------------------------------------------------------

def as_id(value: Any, name: str = "id") -> bytes:
    """32 bytes from bytes, 64 hex characters, a `Wallet` or an object with `tx_hash` (a receipt)."""
    if isinstance(value, Wallet):
        return value.public_key
    tx_hash = getattr(value, "tx_hash", None)
    if isinstance(tx_hash, (str, bytes)):
        value = tx_hash
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            value = b""
    if not isinstance(value, bytes) or len(value) != 32:
        raise UsageError(f"{name} must be 32 bytes, 64 hex characters, a Wallet or a receipt", code="bad_field")
    return value


def _value(fs: FieldSpec, v: Any, typ: str) -> Any:
    if typ == "bytes32":
        return as_id(v, fs.name)
    if typ == "bytes" and isinstance(v, str):
        try:
            return bytes.fromhex(v)
        except ValueError:
            raise UsageError(f"{fs.name} must be bytes or hex", code="bad_field") from None
    if typ == "list" and isinstance(v, (list, tuple)):
        return [_value(fs, x, fs.item) for x in v]
    return v  # int and str are checked by the ledger's parse_body


def seal_memo(text: str, recipient: bytes) -> bytes:
    box = nacl.public.SealedBox(nacl.public.PublicKey(x25519_public_from_ed25519(recipient)))
    return bytes(box.encrypt(text.encode("utf-8")))


def open_memo(wallet: Wallet, memo: bytes) -> str:
    """The text of a memo sealed to `wallet` (UsageError `not_for_you` when it was sealed to another key)."""
    box = nacl.public.SealedBox(nacl.public.PrivateKey(wallet.key.x25519_private()))
    try:
        return bytes(box.decrypt(memo)).decode("utf-8")
    except (nacl.exceptions.CryptoError, UnicodeDecodeError):
        raise UsageError("this memo was not sealed to this wallet's key", code="not_for_you") from None


def body_fields(kind: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The kind's fields as wire values from Python values (None = not given), checked by the ledger."""
    spec = kind_spec(kind)
    known = {f.name for f in spec.fields}
    extra = sorted(k for k, v in values.items() if k not in known and v is not None)
    if extra:
        raise UsageError(f"tx {kind} has no field(s) {', '.join(extra)}", code="bad_field")
    out: dict[str, Any] = {}
    for fs in spec.fields:
        v = values.get(fs.name)
        if v is None:
            continue
        if (kind, fs.name) == (MEMO_KIND, MEMO_FIELD) and isinstance(v, str):
            out[fs.name] = seal_memo(v, as_id(values.get("to"), "to"))  # text: sealed to the recipient
        else:
            out[fs.name] = _value(fs, v, fs.type)
    check(spec, out)
    return out


def check(spec: KindSpec, fields: Mapping[str, Any]) -> None:
    """The ledger's static checks on a body (envelope filled with placeholders)."""
    try:
        parse_body(spec, {**dict.fromkeys(ENVELOPE, 0), **fields})
    except LedgerError as exc:
        raise UsageError(f"tx {spec.name}: {exc.message}", code="bad_field") from None


def build(kind: str, fields: Mapping[str, Any], *, chain: str, sender: bytes, nonce: int) -> dict[str, Any]:
    return {"chain": chain, "kind": kind, "from": sender, "nonce": nonce, **fields}


def sign(wallet: Wallet, body: dict[str, Any]) -> SignedTx:
    return SignedTx.create(wallet.key, body)


# ---- command-line text (CLI) -------------------------------------------------------------------------

def _bytes32_text(text: str, name: str) -> bytes:
    if text.startswith("@"):
        return bytes.fromhex(keystore_info(text[1:])["public_key"])
    try:
        b = bytes.fromhex(text)
    except ValueError:
        b = b""
    if len(b) != 32:
        raise UsageError(f"{flag(name)} must be 64 hex characters or @wallet.json")
    return b


def parse_value(fs: FieldSpec, text: str, typ: str | None = None) -> Any:
    typ = typ or fs.type
    if typ == "int":
        try:
            v = int(text, 10)
        except ValueError:
            raise UsageError(f"{flag(fs.name)} must be an integer (minor units)") from None
        if not fs.lo <= v <= fs.hi:
            raise UsageError(f"{flag(fs.name)} must be in {fs.lo}..{fs.hi}")
        return v
    if typ == "str":
        return text
    if typ == "bytes32":
        return _bytes32_text(text, fs.name)
    if typ == "bytes":
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise UsageError(f"{flag(fs.name)} must be hex") from None
    if typ == "list":
        return [parse_value(fs, x.strip(), fs.item) for x in text.split(",") if x.strip()]
    raise UsageError(f"field {fs.name} has unsupported type {typ}")


def parse_text(kind: str, texts: Mapping[str, str | None]) -> dict[str, Any]:
    """The kind's fields from command-line text (None = not given); a transfer memo is text to seal."""
    spec = kind_spec(kind)
    values: dict[str, Any] = {}
    for fs in spec.fields:
        text = texts.get(fs.name)
        if text is None:
            if fs.required:
                raise UsageError(f"tx {kind}: {flag(fs.name)} is required ({fs.doc or fs.type})")
            continue
        values[fs.name] = text if (kind, fs.name) == (MEMO_KIND, MEMO_FIELD) else parse_value(fs, text)
    return body_fields(kind, values)


def build_body(kind: str, values: Mapping[str, str | None], *, chain: str, sender: bytes, nonce: int) -> dict[str, Any]:
    """The tx body for `kind` from command-line text `values` (kept for scripts and tests)."""
    return build(kind, parse_text(kind, values), chain=chain, sender=sender, nonce=nonce)
