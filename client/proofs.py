"""Checking an account's Merkle proofs (`GET /accounts/{id}?proof=1`) against a state root, locally.

Rule: pure: bytes in, a verdict out; trusting the root is the caller's choice (`Client.verified_account`
takes it from the header of the next committed block, which commits to the state after `height`).
"""

from __future__ import annotations

from typing import Any

from client.errors import ClientError
from protocol import api
from protocol.errors import ProtocolError
from protocol.merkle import Proof, verify_proof


def proof_of(doc: api.Account | dict[str, Any]) -> dict[str, Any]:
    proof = doc.proof if isinstance(doc, api.Account) else doc.get("proof")
    if not isinstance(proof, dict) or not isinstance(proof.get("proofs"), list):
        raise ClientError("the answer carries no proof (ask with proof=1)", code="no_proof")
    return proof


def verify_account_proof(doc: api.Account | dict[str, Any], state_root: str | bytes | None = None) -> bool:
    """Check every proof in an account answer against `state_root` (hex or bytes; default: the root the
    answer names; pass a root from a committed header to trust only the chain)."""
    proof = proof_of(doc)
    root_hex = state_root.hex() if isinstance(state_root, bytes) else (state_root or proof.get("state_root"))
    try:
        root = bytes.fromhex(str(root_hex))
        for item in proof["proofs"]:
            value = item.get("value")
            p = Proof.from_value({"key": bytes.fromhex(item["key"]),
                                  "value": bytes.fromhex(value) if value is not None else None,
                                  "entries": [bytes.fromhex(e) for e in item["entries"]],
                                  "siblings": [bytes.fromhex(s) for s in item["siblings"]]})
            if not verify_proof(root, p):
                return False
    except (ValueError, KeyError, TypeError, AttributeError, ProtocolError):
        return False
    return True
