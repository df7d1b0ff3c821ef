"""Light-client checks: an answer is trusted only as far as proofs reach back to the genesis validators.

The chain of trust, link by link (each broken link raises `ProofError` with its own code):
1. `Trust`: the chain's genesis document, which every participant of this permissioned chain is handed
   when it joins (the file its nodes run with), read locally and optionally checked against a genesis
   hash the user gives (`genesis_mismatch`). It names the chain id and the validator keys.
2. The commit certificate of block h+2 (`certifying_height(h)`: pipelining, block h+2 is the first
   whose header carries the state root after block h; `protocol.block.state_root_height`): n - f COMMIT
   signatures of those validators over that block's hash on that chain (`bad_certificate` otherwise), so
   the block's header is committed.
3. That header's `state_root`, the state after block h: every Merkle proof of the answer must verify
   against it (`bad_proof`: a wrong root, or a proof for another value).
4. Every field of the answer, decoded from the proven values (`answer_mismatch` when the answer says
   something else, `unproven` when a field has no proof).

Rule: nothing the node says is taken on its word. The verified account holds only fields a proof
covers; what a node leaves out (an asset it does not list) a proof of the others cannot show.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.errors import ProofError
from protocol import codec
from protocol.block import BLOCK_LIMITS, STATE_ROOT_LAG, Block, BlockHeader
from protocol.consensus.certs import CommitCertificate
from protocol.crypto import sha256
from protocol.errors import ProtocolError
from protocol.ledger import keys
from protocol.ledger.model import Params
from protocol.ledger.store import STATS, score_of
from protocol.merkle import Proof, verify_proof

MAX_GENESIS_BYTES = 16 * 1024 * 1024
CERT_LIMITS = codec.Limits(max_bytes=256 * 1024, max_depth=4, max_str=64, max_bin=64, max_array=2048, max_map=8)
ANSWER_LIMITS = codec.Limits(max_bytes=BLOCK_LIMITS.max_bytes + CERT_LIMITS.max_bytes + 1024, max_depth=2,
                             max_str=64, max_bin=BLOCK_LIMITS.max_bytes, max_array=0, max_map=2)


@dataclass(frozen=True, slots=True)
class Trust:
    """What a light client trusts: the chain id and validator keys of one genesis, and its hash."""

    chain_id: str
    validators: tuple[bytes, ...]
    genesis_hash: bytes

    @classmethod
    def from_genesis(cls, doc: Any, expect_hash: bytes | None = None) -> Trust:
        """From a genesis document (the parsed genesis.json); its hash is the node's: SHA-256 of the
        canonical msgpack of the whole document."""
        if not isinstance(doc, dict):
            raise ProofError("the genesis document must be a JSON object", code="bad_genesis")
        try:
            digest = sha256(codec.encode(doc))
        except ProtocolError as exc:
            raise ProofError(f"the genesis document is not canonically encodable: {exc.message}",
                             code="bad_genesis") from None
        if expect_hash is not None and digest != expect_hash:
            raise ProofError(f"the genesis document hashes to {digest.hex()}, not the expected "
                             f"{expect_hash.hex()}", code="genesis_mismatch")
        chain_id, raw = doc.get("chain_id"), doc.get("validators")
        if not isinstance(chain_id, str) or not chain_id or not isinstance(raw, list) or not raw:
            raise ProofError("the genesis document needs a chain_id and validators", code="bad_genesis")
        validators = []
        for i, v in enumerate(raw):
            pk = v.get("public_key") if isinstance(v, dict) else None
            try:
                key = bytes.fromhex(pk) if isinstance(pk, str) else b""
            except ValueError:
                key = b""
            if len(key) != 32:
                raise ProofError(f"genesis validators[{i}].public_key must be 64 hex characters",
                                 code="bad_genesis")
            validators.append(key)
        return cls(chain_id=chain_id, validators=tuple(validators), genesis_hash=digest)

    @classmethod
    def load(cls, path: str | Path, expect_hash: bytes | None = None) -> Trust:
        p = Path(path)
        try:
            if p.stat().st_size > MAX_GENESIS_BYTES:
                raise ProofError(f"{p} is larger than {MAX_GENESIS_BYTES} bytes", code="bad_genesis")
            doc = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ProofError(f"no genesis file at {p}", code="bad_genesis") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProofError(f"{p} is not valid JSON: {exc}", code="bad_genesis") from None
        except OSError as exc:
            raise ProofError(f"cannot read {p}: {exc.strerror}", code="bad_genesis") from None
        return cls.from_genesis(doc, expect_hash)


def certifying_height(height: int) -> int:
    """The first block whose header carries the state root after block `height`: height + 2, since block
    h carries the root after h-2 (`protocol.block.state_root_height`)."""
    return height + STATE_ROOT_LAG


def committed_header(trust: Trust, answer: bytes, height: int) -> BlockHeader:
    """The header of block `height` from a `GET /blocks/{height}?format=msgpack` answer, once its commit
    certificate verifies against the trusted validators; `bad_certificate` otherwise."""
    try:
        doc = codec.decode(answer, ANSWER_LIMITS)
        if not isinstance(doc, dict) or set(doc) != {"block", "certificate"}:
            raise ProofError("the block answer is not {block, certificate}", code="bad_certificate")
        block = Block.decode(doc["block"])
        cert = CommitCertificate.from_value(codec.decode(doc["certificate"], CERT_LIMITS))
    except (ProtocolError, TypeError) as exc:
        raise ProofError(f"block {height}: undecodable block or certificate ({exc})", code="bad_certificate") from None
    if block.header.height != height or block.header.chain != trust.chain_id:
        raise ProofError(f"block {height}: the node sent block {block.header.height} of chain "
                         f"{block.header.chain!r}", code="bad_certificate")
    if cert.height != height or cert.block_hash != block.hash:
        raise ProofError(f"block {height}: the certificate is for another block", code="bad_certificate")
    if not cert.verify(trust.validators, trust.chain_id):
        raise ProofError(f"block {height}: the commit certificate does not carry n - f valid signatures of "
                         "the genesis validators", code="bad_certificate")
    return block.header


def proof_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The `proof` part of an account answer: {height, state_root, header_height, proofs}; `no_proof`
    without it. Only `height` is used: the root comes from the certified header, whose height the client
    computes itself (`certifying_height`)."""
    proof = doc.get("proof")
    if not isinstance(proof, dict) or not isinstance(proof.get("proofs"), list) \
            or not isinstance(proof.get("height"), int) or isinstance(proof.get("height"), bool):
        raise ProofError("the answer carries no proof (ask with proof=1)", code="no_proof")
    if proof["height"] < 0:
        raise ProofError(f"the proof names height {proof['height']}", code="bad_proof")
    return proof


def _proofs(doc: dict[str, Any], root: bytes, height: int) -> dict[bytes, bytes | None]:
    """key -> proven value (None: proven absent) of every proof in the answer."""
    items = proof_of(doc)["proofs"]
    out: dict[bytes, bytes | None] = {}
    for item in items:
        try:
            value = item.get("value")
            p = Proof.from_value({"key": bytes.fromhex(item["key"]),
                                  "value": bytes.fromhex(value) if value is not None else None,
                                  "entries": [bytes.fromhex(e) for e in item["entries"]],
                                  "siblings": [bytes.fromhex(s) for s in item["siblings"]]})
        except (ValueError, KeyError, TypeError, AttributeError, ProtocolError):
            raise ProofError("the answer has a malformed proof", code="bad_proof") from None
        if not verify_proof(root, p):
            raise ProofError(f"the proof of state key {p.key!r} does not verify against the state root "
                             f"{root.hex()} committed by block {certifying_height(height)}", code="bad_proof")
        out[p.key] = p.value
    return out


def verify_account(doc: dict[str, Any], account_id: bytes, root: bytes) -> dict[str, Any]:
    """The fields of an `/accounts/{id}?proof=1` answer (as JSON builtins), each checked against its proof
    under `root` (the state root committed by the header of block `certifying_height(proof.height)`).
    Returns only proven fields, and `verified_height` (the height of that header)."""
    height = proof_of(doc)["height"]
    proven = _proofs(doc, root, height)

    def value(key: bytes, what: str) -> Any:
        if key not in proven:
            raise ProofError(f"the answer has no proof for {what}", code="unproven")
        raw = proven[key]
        try:
            return None if raw is None else codec.decode(raw)
        except ProtocolError:
            raise ProofError(f"the proven value of {what} is not canonical msgpack", code="bad_proof") from None

    def same(field: str, claimed: Any, real: Any) -> Any:
        if claimed != real:
            raise ProofError(f"the answer says {field} is {claimed!r}, the proof says {real!r}",
                             code="answer_mismatch")
        return real

    out: dict[str, Any] = {"id": same("id", doc.get("id"), account_id.hex())}
    rec = value(keys.participant(account_id), "the participant record")
    out["registered"] = same("registered", doc.get("registered"), rec is not None)
    out["nonce"] = same("nonce", doc.get("nonce"), value(keys.nonce(account_id), "the nonce") or 0)
    claimed = doc.get("balances")
    if not isinstance(claimed, dict):
        raise ProofError("the answer has no balances map", code="answer_mismatch")
    if not all(isinstance(a, str) and a.isascii() for a in claimed):
        raise ProofError("the answer names a balance in a malformed asset id", code="answer_mismatch")
    out["balances"] = {a: same(f"the balance of {a}", amount, value(keys.balance(account_id, a), f"the balance of {a}"))
                       for a, amount in sorted(claimed.items())}
    if rec is not None:
        for f in ("name", "roles", "kyc", "frozen"):
            out[f] = same(f, doc.get(f), rec[f])
        signing: bytes = rec["key"]
        out["signing_key"] = same("signing_key", doc.get("signing_key"), signing.hex())
        out["signing_key_nonce"] = same("signing_key_nonce", doc.get("signing_key_nonce"),
                                        value(keys.nonce(signing), "the signing key's nonce") or 0)
        out["credit_score"] = same("credit_score", doc.get("credit_score"), _score(value, account_id))
    out["verified_height"] = certifying_height(height)
    return out


def _score(value: Callable[[bytes, str], Any], account_id: bytes) -> int:
    """The score the ledger shows: the credit record's, or the base score of an empty history."""
    stats = value(keys.credit(account_id), "the credit record")
    if stats is not None:
        return int(stats["score"])
    params = value(keys.PARAMS, "the ledger params")
    p = Params() if params is None else Params.from_value(params)
    return score_of(dict.fromkeys(STATS, 0), p)
