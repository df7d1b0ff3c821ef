"""genesis.json: the chain id, genesis time, validator set, ledger spec and consensus params.

File (JSON): `{"chain_id": str, "genesis_time": int ms, "validators": [{"name", "public_key": hex}],
"consensus": {ConsensusParams field: int}, "ledger": <spec passed verbatim to protocol.ledger.apply_genesis>}`.
Genesis hash = SHA-256 of the canonical msgpack encoding of that whole document, so every node of one
chain agrees on it byte for byte. Rule: this module validates the shell of the document (names, keys,
params) and leaves the ledger spec to the ledger, which validates it fully before writing anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from node.errors import GenesisFileError
from node.files import write_public
from protocol import codec
from protocol.consensus.params import MAX_VALIDATORS, ConsensusParams
from protocol.crypto import sha256
from protocol.errors import ProtocolError

MAX_GENESIS_BYTES = 16 * 1024 * 1024
_CONSENSUS_NAMES = frozenset(f.name for f in fields(ConsensusParams))


@dataclass(frozen=True, slots=True)
class Validator:
    name: str
    public_key: bytes


@dataclass(frozen=True, slots=True)
class Genesis:
    chain_id: str
    genesis_time: int
    validators: tuple[Validator, ...]
    consensus: dict[str, int]
    ledger: dict[str, Any]
    hash: bytes

    @property
    def validator_keys(self) -> list[bytes]:
        return [v.public_key for v in self.validators]

    def name_of(self, public_key: bytes) -> str:
        for v in self.validators:
            if v.public_key == public_key:
                return v.name
        return public_key.hex()[:12]

    def consensus_params(self, overrides: dict[str, int] | None = None) -> ConsensusParams:
        """The chain's consensus params with local config overrides applied on top."""
        merged = {**self.consensus, **(overrides or {})}
        try:
            return ConsensusParams(**merged)
        except (TypeError, ValueError) as exc:
            raise GenesisFileError(f"genesis error: consensus params: {exc}") from None

    def to_value(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "genesis_time": self.genesis_time,
                "validators": [{"name": v.name, "public_key": v.public_key.hex()} for v in self.validators],
                "consensus": dict(self.consensus), "ledger": self.ledger}


def _fail(why: str) -> GenesisFileError:
    return GenesisFileError(f"genesis error: {why}")


def from_value(doc: Any) -> Genesis:
    if not isinstance(doc, dict):
        raise _fail("the document must be a JSON object")
    extra = sorted(set(doc) - {"chain_id", "genesis_time", "validators", "consensus", "ledger"})
    if extra:
        raise _fail(f"unknown field {extra[0]}")
    chain_id = doc.get("chain_id")
    if not isinstance(chain_id, str) or not 0 < len(chain_id) <= 64:
        raise _fail("chain_id must be a string of 1..64 characters")
    gt = doc.get("genesis_time")
    if not isinstance(gt, int) or isinstance(gt, bool) or gt < 0:
        raise _fail("genesis_time must be a non-negative integer (ms since the Unix epoch)")
    vals_raw = doc.get("validators")
    if not isinstance(vals_raw, list) or not 0 < len(vals_raw) <= MAX_VALIDATORS:
        raise _fail(f"validators must be a list of 1..{MAX_VALIDATORS} entries")
    validators: list[Validator] = []
    for i, v in enumerate(vals_raw):
        if not isinstance(v, dict) or set(v) != {"name", "public_key"}:
            raise _fail(f"validators[{i}] must be {{name, public_key}}")
        name, pk = v["name"], v["public_key"]
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise _fail(f"validators[{i}].name must be a string of 1..64 characters")
        try:
            key = bytes.fromhex(pk) if isinstance(pk, str) else b""
        except ValueError:
            key = b""
        if len(key) != 32 or key.hex() != pk:
            raise _fail(f"validators[{i}].public_key must be 64 lowercase hex characters")
        if any(x.public_key == key or x.name == name for x in validators):
            raise _fail(f"validators[{i}] duplicates an earlier name or key")
        validators.append(Validator(name, key))
    cons = doc.get("consensus", {})
    if not isinstance(cons, dict):
        raise _fail("consensus must be an object")
    for k, x in cons.items():
        if k not in _CONSENSUS_NAMES:
            raise _fail(f"consensus.{k} is not a consensus parameter")
        if not isinstance(x, int) or isinstance(x, bool):
            raise _fail(f"consensus.{k} must be an integer")
    try:
        ConsensusParams(**cons)
    except ValueError as exc:
        raise _fail(f"consensus: {exc}") from None
    ledger = doc.get("ledger", {})
    if not isinstance(ledger, dict):
        raise _fail("ledger must be an object (the ledger genesis spec)")
    try:
        digest = sha256(codec.encode(doc))
    except ProtocolError as exc:
        raise _fail(f"the document is not canonically encodable: {exc.message}") from None
    return Genesis(chain_id=chain_id, genesis_time=gt, validators=tuple(validators), consensus=dict(cons),
                   ledger=ledger, hash=digest)


def load(path: str | Path) -> Genesis:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_GENESIS_BYTES:
            raise _fail(f"{p} is larger than {MAX_GENESIS_BYTES} bytes")
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(f"no genesis file at {p}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(f"{p} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise _fail(f"cannot read {p}: {exc.strerror}") from None
    return from_value(doc)


def save(genesis: Genesis, path: str | Path) -> None:
    write_public(path, (json.dumps(genesis.to_value(), indent=2, sort_keys=True) + "\n").encode("utf-8"))
