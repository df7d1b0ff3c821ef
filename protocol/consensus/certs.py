"""Quorum certificates: sets of validator signatures over one vote, verifiable by anyone with the set.

A vote's signed bytes are the canonical encoding of `{"t", "chain", "view", "height", "hash", "from"}`
(plus `state_root` for checkpoints) signed with `DOMAIN_CONSENSUS` (`DOMAIN_CHECKPOINT` for checkpoints).
A certificate holds `(validator_index, signature)` pairs sorted by index, all distinct; it is valid when
at least n - f of them verify against the validator set. Rule: pure values, no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self

from protocol import codec
from protocol.consensus.params import MAX_VALIDATORS, quorum
from protocol.crypto import DOMAIN_CHECKPOINT, DOMAIN_CONSENSUS, HASH_SIZE, SIGNATURE_SIZE, verify
from protocol.errors import FieldError
from protocol.fields import expect_map, only_keys, req_bytes, req_int, req_list

MAX_HEIGHT = 2**63 - 1
MAX_VIEW = 2**63 - 1

# (validator index, domain, signed bytes, signature) -> valid?  The replica passes a caching verifier.
Verifier = Callable[[int, bytes, bytes, bytes], bool]
Signatures = tuple[tuple[int, bytes], ...]


def vote_bytes(t: str, chain: str, view: int, height: int, block_hash: bytes, index: int) -> bytes:
    """Canonical signed bytes of a PREPARE / COMMIT / PRE-PREPARE vote."""
    return codec.encode({"t": t, "chain": chain, "view": view, "height": height, "hash": block_hash,
                         "from": index})


def checkpoint_bytes(chain: str, height: int, block_hash: bytes, state_root: bytes, index: int) -> bytes:
    return codec.encode({"t": "checkpoint", "chain": chain, "height": height, "hash": block_hash,
                         "state_root": state_root, "from": index})


def plain_verifier(validators: Sequence[bytes]) -> Verifier:
    def check(index: int, domain: bytes, message: bytes, sig: bytes) -> bool:
        return 0 <= index < len(validators) and verify(validators[index], domain, message, sig)
    return check


def _sigs_to_value(sigs: Signatures) -> list[Any]:
    return [[i, s] for i, s in sigs]


def _sigs_from_value(m: dict[str, Any], key: str) -> Signatures:
    out: list[tuple[int, bytes]] = []
    for item in req_list(m, key, max_len=MAX_VALIDATORS):
        if not isinstance(item, list) or len(item) != 2:
            raise FieldError(f"field '{key}' holds [index, signature] pairs")
        idx, sig = item
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < MAX_VALIDATORS:
            raise FieldError(f"field '{key}' has a bad validator index")
        if not isinstance(sig, bytes) or len(sig) != SIGNATURE_SIZE:
            raise FieldError(f"field '{key}' has a bad signature")
        if out and idx <= out[-1][0]:
            raise FieldError(f"field '{key}' must be sorted by distinct validator index")
        out.append((idx, sig))
    return tuple(out)


def _count_valid(sigs: Signatures, n: int, domain: bytes, make: Callable[[int], bytes],
                 verifier: Verifier) -> int:
    seen = 0
    last = -1
    for idx, sig in sigs:
        if idx <= last or idx >= n:
            return 0
        last = idx
        if verifier(idx, domain, make(idx), sig):
            seen += 1
    return seen


@dataclass(frozen=True, slots=True)
class VoteCertificate:
    """n - f signatures of one phase over (view, height, block_hash)."""

    height: int
    view: int
    block_hash: bytes
    sigs: Signatures

    PHASE = "vote"

    def signed_bytes(self, chain_id: str, index: int) -> bytes:
        return vote_bytes(self.PHASE, chain_id, self.view, self.height, self.block_hash, index)

    def verify(self, validators: Sequence[bytes], chain_id: str, verifier: Verifier | None = None) -> bool:
        check = verifier or plain_verifier(validators)
        n = len(validators)
        if len(self.sigs) < quorum(n):
            return False
        ok = _count_valid(self.sigs, n, DOMAIN_CONSENSUS, lambda i: self.signed_bytes(chain_id, i), check)
        return ok >= quorum(n)

    def signers(self) -> tuple[int, ...]:
        return tuple(i for i, _ in self.sigs)

    def to_value(self) -> dict[str, Any]:
        return {"height": self.height, "view": self.view, "hash": self.block_hash,
                "sigs": _sigs_to_value(self.sigs)}

    @classmethod
    def from_value(cls, v: Any) -> Self:
        m = expect_map(v, cls.__name__)
        only_keys(m, {"height", "view", "hash", "sigs"}, cls.__name__)
        return cls(height=req_int(m, "height", lo=1, hi=MAX_HEIGHT), view=req_int(m, "view", lo=0, hi=MAX_VIEW),
                   block_hash=req_bytes(m, "hash", size=HASH_SIZE), sigs=_sigs_from_value(m, "sigs"))


@dataclass(frozen=True, slots=True)
class CommitCertificate(VoteCertificate):
    """Proof that a block is committed at `height`: n - f COMMIT signatures for it in one view."""

    PHASE = "commit"


@dataclass(frozen=True, slots=True)
class PreparedCertificate(VoteCertificate):
    """Proof that n - f validators PREPAREd a block at (view, height): carried by VIEW-CHANGE."""

    PHASE = "prepare"


@dataclass(frozen=True, slots=True)
class CheckpointCertificate:
    """n - f CHECKPOINT signatures over (height, block_hash, state_root): a stable checkpoint."""

    height: int
    block_hash: bytes
    state_root: bytes
    sigs: Signatures

    def verify(self, validators: Sequence[bytes], chain_id: str, verifier: Verifier | None = None) -> bool:
        check = verifier or plain_verifier(validators)
        n = len(validators)
        if len(self.sigs) < quorum(n):
            return False
        ok = _count_valid(self.sigs, n, DOMAIN_CHECKPOINT,
                          lambda i: checkpoint_bytes(chain_id, self.height, self.block_hash, self.state_root, i),
                          check)
        return ok >= quorum(n)

    def to_value(self) -> dict[str, Any]:
        return {"height": self.height, "hash": self.block_hash, "state_root": self.state_root,
                "sigs": _sigs_to_value(self.sigs)}

    @classmethod
    def from_value(cls, v: Any) -> CheckpointCertificate:
        m = expect_map(v, "checkpoint certificate")
        only_keys(m, {"height", "hash", "state_root", "sigs"}, "checkpoint certificate")
        return cls(height=req_int(m, "height", lo=1, hi=MAX_HEIGHT), block_hash=req_bytes(m, "hash", size=HASH_SIZE),
                   state_root=req_bytes(m, "state_root", size=HASH_SIZE), sigs=_sigs_from_value(m, "sigs"))
