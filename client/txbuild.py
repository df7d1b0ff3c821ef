"""Build and sign tx bodies from the ledger's declarative `KINDS` field specs (CLI and SDK).

Text values become typed fields: `int` from decimal text, `str` as is, `bytes32` from 64 hex characters
or `@path/to/wallet.json` (that keystore's public key), `bytes` from hex, `list` from comma-separated
items. A transfer's `memo` is text sealed to the recipient (X25519 sealed box), per DESIGN section 4.
Rule: the ledger's `FieldSpec`s are the only source of field names and types; nothing is hard-coded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import nacl.public

from client.errors import UsageError
from client.wallet import Wallet, keystore_info
from protocol.crypto import x25519_public_from_ed25519
from protocol.ledger import KINDS
from protocol.ledger.spec import FieldSpec, KindSpec
from protocol.tx import SignedTx


def kind_spec(kind: str) -> KindSpec:
    spec = KINDS.get(kind)
    if spec is None:
        raise UsageError(f"unknown tx kind {kind!r}; kinds: {', '.join(sorted(KINDS))}")
    return spec


def _bytes32(text: str, name: str) -> bytes:
    if text.startswith("@"):
        return bytes.fromhex(keystore_info(text[1:])["public_key"])
    try:
        b = bytes.fromhex(text)
    except ValueError:
        b = b""
    if len(b) != 32:
        raise UsageError(f"--{name.replace('_', '-')} must be 64 hex characters or @wallet.json")
    return b


def parse_value(fs: FieldSpec, text: str, typ: str | None = None) -> Any:
    typ = typ or fs.type
    if typ == "int":
        try:
            v = int(text, 10)
        except ValueError:
            raise UsageError(f"--{fs.name.replace('_', '-')} must be an integer (minor units)") from None
        if not fs.lo <= v <= fs.hi:
            raise UsageError(f"--{fs.name.replace('_', '-')} must be in {fs.lo}..{fs.hi}")
        return v
    if typ == "str":
        return text
    if typ == "bytes32":
        return _bytes32(text, fs.name)
    if typ == "bytes":
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise UsageError(f"--{fs.name.replace('_', '-')} must be hex") from None
    if typ == "list":
        return [parse_value(fs, x.strip(), fs.item) for x in text.split(",") if x.strip()]
    raise UsageError(f"field {fs.name} has unsupported type {typ}")


def seal_memo(text: str, recipient: bytes) -> bytes:
    box = nacl.public.SealedBox(nacl.public.PublicKey(x25519_public_from_ed25519(recipient)))
    return bytes(box.encrypt(text.encode("utf-8")))


def build_body(kind: str, values: Mapping[str, str | None], *, chain: str, sender: bytes, nonce: int) -> dict[str, Any]:
    """The tx body for `kind` from text `values` (field name -> text; None = not given)."""
    spec = kind_spec(kind)
    body: dict[str, Any] = {"chain": chain, "kind": kind, "from": sender, "nonce": nonce}
    for fs in spec.fields:
        text = values.get(fs.name)
        if text is None:
            if fs.required:
                raise UsageError(f"tx {kind}: --{fs.name.replace('_', '-')} is required ({fs.doc or fs.type})")
            continue
        if kind == "transfer" and fs.name == "memo":
            continue
        body[fs.name] = parse_value(fs, text)
    memo = values.get("memo")
    if kind == "transfer" and memo is not None:
        body["memo"] = seal_memo(memo, body["to"])
    return body


def sign(wallet: Wallet, body: dict[str, Any]) -> SignedTx:
    return SignedTx.create(wallet.key, body)
