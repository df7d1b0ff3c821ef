"""Consensus wire messages: frozen values with strict `from_value` and canonical `to_value`.

Every map carries `"t"` (its type). Signed messages carry `"from"` (validator index) and `"sig"`: an
Ed25519 signature over `DOMAIN_CONSENSUS + signed_bytes()` (`DOMAIN_CHECKPOINT` for CHECKPOINT), where
`signed_bytes()` is the canonical encoding of the small signed part (never the block itself: a block is
bound by its hash). Certificates and blocks travel beside the signed part and verify on their own.
`decode_message(value)` turns an already-decoded map into a message. Rule: no I/O, no signature checks
here beyond `verify_sig` (the replica decides when to verify).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

from protocol import codec
from protocol.block import Block
from protocol.consensus.certs import (
    MAX_HEIGHT,
    MAX_VIEW,
    CommitCertificate,
    PreparedCertificate,
    checkpoint_bytes,
    vote_bytes,
)
from protocol.consensus.params import MAX_VALIDATORS
from protocol.crypto import DOMAIN_CHECKPOINT, DOMAIN_CONSENSUS, HASH_SIZE, SIGNATURE_SIZE, PrivateKey, verify
from protocol.errors import FieldError
from protocol.fields import expect_map, only_keys, req_bytes, req_int, req_list, req_str
from protocol.tx import MAX_CHAIN_LEN

_IDX_HI = MAX_VALIDATORS - 1


def _common(m: dict[str, Any], keys: set[str], what: str) -> tuple[str, int, bytes]:
    only_keys(m, keys, what)
    return (req_str(m, "chain", max_len=MAX_CHAIN_LEN, min_len=1), req_int(m, "from", lo=0, hi=_IDX_HI),
            req_bytes(m, "sig", size=SIGNATURE_SIZE))


class Signed:
    """What every signed consensus message shares: its signature covers `DOMAIN + signed_bytes()`."""

    __slots__ = ()
    DOMAIN: ClassVar[bytes] = DOMAIN_CONSENSUS
    sig: bytes

    def signed_bytes(self) -> bytes:
        raise NotImplementedError

    def domain(self) -> bytes:
        return self.DOMAIN

    def verify_sig(self, public_key: bytes) -> bool:
        return verify(public_key, self.DOMAIN, self.signed_bytes(), self.sig)


@dataclass(frozen=True, slots=True)
class Vote(Signed):
    """PREPARE or COMMIT for (view, height, block_hash)."""

    chain: str
    view: int
    height: int
    block_hash: bytes
    index: int
    sig: bytes

    T = "vote"

    def signed_bytes(self) -> bytes:
        return vote_bytes(self.T, self.chain, self.view, self.height, self.block_hash, self.index)

    def to_value(self) -> dict[str, Any]:
        return {"t": self.T, "chain": self.chain, "view": self.view, "height": self.height,
                "hash": self.block_hash, "from": self.index, "sig": self.sig}

    @classmethod
    def from_value(cls, v: Any) -> Self:
        m = expect_map(v, cls.T)
        chain, index, sig = _common(m, {"t", "chain", "view", "height", "hash", "from", "sig"}, cls.T)
        return cls(chain=chain, view=req_int(m, "view", lo=0, hi=MAX_VIEW),
                   height=req_int(m, "height", lo=1, hi=MAX_HEIGHT),
                   block_hash=req_bytes(m, "hash", size=HASH_SIZE), index=index, sig=sig)

    @classmethod
    def create(cls, key: PrivateKey, chain: str, view: int, height: int, block_hash: bytes, index: int) -> Self:
        sig = key.sign(DOMAIN_CONSENSUS, vote_bytes(cls.T, chain, view, height, block_hash, index))
        return cls(chain=chain, view=view, height=height, block_hash=block_hash, index=index, sig=sig)


@dataclass(frozen=True, slots=True)
class Prepare(Vote):
    T = "prepare"


@dataclass(frozen=True, slots=True)
class Commit(Vote):
    T = "commit"


@dataclass(frozen=True, slots=True)
class PrePrepare(Signed):
    """The primary's proposal of `block` at (view, height); signed over the block hash."""

    chain: str
    view: int
    height: int
    block: Block
    index: int
    sig: bytes

    T = "preprepare"

    @property
    def block_hash(self) -> bytes:
        return self.block.hash

    def signed_bytes(self) -> bytes:
        return vote_bytes(self.T, self.chain, self.view, self.height, self.block.hash, self.index)

    def to_value(self) -> dict[str, Any]:
        return {"t": self.T, "chain": self.chain, "view": self.view, "height": self.height,
                "block": self.block.raw, "from": self.index, "sig": self.sig}

    @classmethod
    def from_value(cls, v: Any) -> PrePrepare:
        m = expect_map(v, cls.T)
        chain, index, sig = _common(m, {"t", "chain", "view", "height", "block", "from", "sig"}, cls.T)
        block = Block.from_field(m.get("block"))
        height = req_int(m, "height", lo=1, hi=MAX_HEIGHT)
        if block.height != height:
            raise FieldError("pre-prepare height differs from its block's height")
        return cls(chain=chain, view=req_int(m, "view", lo=0, hi=MAX_VIEW), height=height, block=block,
                   index=index, sig=sig)

    @classmethod
    def create(cls, key: PrivateKey, chain: str, view: int, block: Block, index: int) -> PrePrepare:
        sig = key.sign(DOMAIN_CONSENSUS, vote_bytes(cls.T, chain, view, block.height, block.hash, index))
        return cls(chain=chain, view=view, height=block.height, block=block, index=index, sig=sig)


@dataclass(frozen=True, slots=True)
class Checkpoint(Signed):
    """A validator's statement that block `height` (hash) left the state at `state_root`."""

    chain: str
    height: int
    block_hash: bytes
    state_root: bytes
    index: int
    sig: bytes

    T = "checkpoint"
    DOMAIN = DOMAIN_CHECKPOINT

    def signed_bytes(self) -> bytes:
        return checkpoint_bytes(self.chain, self.height, self.block_hash, self.state_root, self.index)

    def to_value(self) -> dict[str, Any]:
        return {"t": self.T, "chain": self.chain, "height": self.height, "hash": self.block_hash,
                "state_root": self.state_root, "from": self.index, "sig": self.sig}

    @classmethod
    def from_value(cls, v: Any) -> Checkpoint:
        m = expect_map(v, cls.T)
        chain, index, sig = _common(m, {"t", "chain", "height", "hash", "state_root", "from", "sig"}, cls.T)
        return cls(chain=chain, height=req_int(m, "height", lo=1, hi=MAX_HEIGHT),
                   block_hash=req_bytes(m, "hash", size=HASH_SIZE),
                   state_root=req_bytes(m, "state_root", size=HASH_SIZE), index=index, sig=sig)

    @classmethod
    def create(cls, key: PrivateKey, chain: str, height: int, block_hash: bytes, state_root: bytes,
               index: int) -> Checkpoint:
        sig = key.sign(DOMAIN_CHECKPOINT, checkpoint_bytes(chain, height, block_hash, state_root, index))
        return cls(chain=chain, height=height, block_hash=block_hash, state_root=state_root, index=index, sig=sig)


@dataclass(frozen=True, slots=True)
class ViewChange(Signed):
    """Move to `view`. States the sender's committed (height, hash), proven by `cert` (None at height 0),
    and the highest-view prepared block at height + 1, proven by `prepared` (block carried beside it;
    a NEW-VIEW strips the block from the VIEW-CHANGEs it embeds and carries the re-proposal once)."""

    chain: str
    view: int
    height: int
    block_hash: bytes
    cert: CommitCertificate | None
    prepared: PreparedCertificate | None
    block: Block | None
    index: int
    sig: bytes

    T = "viewchange"

    def signed_bytes(self) -> bytes:
        return viewchange_bytes(self.chain, self.view, self.height, self.block_hash, self.prepared, self.index)

    def without_block(self) -> ViewChange:
        return ViewChange(self.chain, self.view, self.height, self.block_hash, self.cert, self.prepared, None,
                          self.index, self.sig)

    def to_value(self) -> dict[str, Any]:
        v: dict[str, Any] = {"t": self.T, "chain": self.chain, "view": self.view, "height": self.height,
                             "hash": self.block_hash, "from": self.index, "sig": self.sig}
        if self.cert is not None:
            v["cert"] = self.cert.to_value()
        if self.prepared is not None:
            v["prepared"] = self.prepared.to_value()
        if self.block is not None:
            v["block"] = self.block.raw
        return v

    @classmethod
    def from_value(cls, v: Any) -> ViewChange:
        m = expect_map(v, cls.T)
        chain, index, sig = _common(m, {"t", "chain", "view", "height", "hash", "from", "sig", "cert",
                                        "prepared", "block"}, cls.T)
        height = req_int(m, "height", lo=0, hi=MAX_HEIGHT)
        cert = CommitCertificate.from_value(m["cert"]) if "cert" in m else None
        prepared = PreparedCertificate.from_value(m["prepared"]) if "prepared" in m else None
        block = Block.from_field(m["block"]) if "block" in m else None
        if (cert is None) != (height == 0):
            raise FieldError("view-change carries a commit certificate exactly when its height is above 0")
        if block is not None and prepared is None:
            raise FieldError("view-change carries a block only with a prepared certificate")
        return cls(chain=chain, view=req_int(m, "view", lo=1, hi=MAX_VIEW), height=height,
                   block_hash=req_bytes(m, "hash", size=HASH_SIZE), cert=cert, prepared=prepared, block=block,
                   index=index, sig=sig)

    @classmethod
    def create(cls, key: PrivateKey, chain: str, view: int, height: int, block_hash: bytes,
               cert: CommitCertificate | None, prepared: PreparedCertificate | None, block: Block | None,
               index: int) -> ViewChange:
        sig = key.sign(DOMAIN_CONSENSUS, viewchange_bytes(chain, view, height, block_hash, prepared, index))
        return cls(chain=chain, view=view, height=height, block_hash=block_hash, cert=cert, prepared=prepared,
                   block=block, index=index, sig=sig)


def viewchange_bytes(chain: str, view: int, height: int, block_hash: bytes, prepared: PreparedCertificate | None,
                     index: int) -> bytes:
    signed: dict[str, Any] = {"t": ViewChange.T, "chain": chain, "view": view, "height": height,
                              "hash": block_hash, "from": index}
    if prepared is not None:
        signed["p_view"] = prepared.view
        signed["p_hash"] = prepared.block_hash
    return codec.encode(signed)


@dataclass(frozen=True, slots=True)
class NewView(Signed):
    """The new primary's proof that `view` starts: n - f VIEW-CHANGEs for it, and the block it
    re-proposes at `height` (the highest certified committed height + 1) when one was prepared."""

    chain: str
    view: int
    height: int
    view_changes: tuple[ViewChange, ...]
    block: Block | None
    index: int
    sig: bytes

    T = "newview"

    def signed_bytes(self) -> bytes:
        return newview_bytes(self.chain, self.view, self.height, self.view_changes, self.block, self.index)

    def to_value(self) -> dict[str, Any]:
        v: dict[str, Any] = {"t": self.T, "chain": self.chain, "view": self.view, "height": self.height,
                             "vcs": [vc.to_value() for vc in self.view_changes], "from": self.index,
                             "sig": self.sig}
        if self.block is not None:
            v["block"] = self.block.raw
        return v

    @classmethod
    def from_value(cls, v: Any) -> NewView:
        m = expect_map(v, cls.T)
        chain, index, sig = _common(m, {"t", "chain", "view", "height", "vcs", "block", "from", "sig"}, cls.T)
        vcs = tuple(ViewChange.from_value(x) for x in req_list(m, "vcs", max_len=MAX_VALIDATORS))
        for vc in vcs:
            if vc.block is not None:
                raise FieldError("view-changes inside a new-view carry no block")
        block = Block.from_field(m["block"]) if "block" in m else None
        return cls(chain=chain, view=req_int(m, "view", lo=1, hi=MAX_VIEW),
                   height=req_int(m, "height", lo=1, hi=MAX_HEIGHT), view_changes=vcs, block=block,
                   index=index, sig=sig)

    @classmethod
    def create(cls, key: PrivateKey, chain: str, view: int, height: int, view_changes: tuple[ViewChange, ...],
               block: Block | None, index: int) -> NewView:
        sig = key.sign(DOMAIN_CONSENSUS, newview_bytes(chain, view, height, view_changes, block, index))
        return cls(chain=chain, view=view, height=height, view_changes=view_changes, block=block, index=index,
                   sig=sig)


def newview_bytes(chain: str, view: int, height: int, vcs: tuple[ViewChange, ...], block: Block | None,
                  index: int) -> bytes:
    return codec.encode({"t": NewView.T, "chain": chain, "view": view, "height": height,
                         "hash": block.hash if block is not None else b"",
                         "vcs": [[vc.index, vc.sig] for vc in vcs], "from": index})


@dataclass(frozen=True, slots=True)
class _ViewAtHeight(Signed):
    """A signed (view, height) of one validator that commits its signer to nothing, so re-signing one is
    never equivocation. `T` names the kind."""

    chain: str
    view: int
    height: int
    index: int
    sig: bytes

    T: ClassVar[str] = ""

    def signed_bytes(self) -> bytes:
        return codec.encode({"t": self.T, "chain": self.chain, "view": self.view, "height": self.height,
                             "from": self.index})

    def to_value(self) -> dict[str, Any]:
        return {"t": self.T, "chain": self.chain, "view": self.view, "height": self.height, "from": self.index,
                "sig": self.sig}

    @classmethod
    def from_value(cls, v: Any) -> Self:
        m = expect_map(v, cls.T)
        chain, index, sig = _common(m, {"t", "chain", "view", "height", "from", "sig"}, cls.T)
        return cls(chain=chain, view=req_int(m, "view", lo=0, hi=MAX_VIEW),
                   height=req_int(m, "height", lo=0, hi=MAX_HEIGHT), index=index, sig=sig)

    @classmethod
    def create(cls, key: PrivateKey, chain: str, view: int, height: int, index: int) -> Self:
        unsigned = cls(chain=chain, view=view, height=height, index=index, sig=b"")
        return cls(chain=chain, view=view, height=height, index=index,
                   sig=key.sign(DOMAIN_CONSENSUS, unsigned.signed_bytes()))


@dataclass(frozen=True, slots=True)
class ViewQuery(_ViewAtHeight):
    """"My view is `view` and my height `height`, but validators are voting in a higher view": asks the
    receivers for their NEW-VIEW (and newest commit certificate)."""

    T: ClassVar[str] = "viewquery"


@dataclass(frozen=True, slots=True)
class Suspect(_ViewAtHeight):
    """"My view timer ran out at height `height`: I would move to view `view`." A validator leaves its view
    only when n - f validators suspect it (f + 1 pull the others along), so one with slow links, whose
    timer runs out while the others still commit, stays in their view and keeps voting. Before it, a
    validator sends no VIEW-CHANGE, which would bind it to leave."""

    T: ClassVar[str] = "suspect"


@dataclass(frozen=True, slots=True)
class CommitProof:
    """An unsigned envelope for a commit certificate, sent to a validator seen lagging behind."""

    cert: CommitCertificate

    T = "proof"

    def to_value(self) -> dict[str, Any]:
        return {"t": self.T, "cert": self.cert.to_value()}

    @classmethod
    def from_value(cls, v: Any) -> CommitProof:
        m = expect_map(v, cls.T)
        only_keys(m, {"t", "cert"}, cls.T)
        return cls(cert=CommitCertificate.from_value(m.get("cert")))


SignedMessage = PrePrepare | Prepare | Commit | Checkpoint | ViewChange | NewView | ViewQuery | Suspect
Message = SignedMessage | CommitProof

_DECODERS: dict[str, Any] = {
    PrePrepare.T: PrePrepare.from_value, Prepare.T: Prepare.from_value, Commit.T: Commit.from_value,
    Checkpoint.T: Checkpoint.from_value, ViewChange.T: ViewChange.from_value, NewView.T: NewView.from_value,
    ViewQuery.T: ViewQuery.from_value, Suspect.T: Suspect.from_value, CommitProof.T: CommitProof.from_value,
}


def decode_message(value: Any) -> Message:
    """Build a consensus message from an already-decoded canonical map; raises FieldError."""
    m = expect_map(value, "consensus message")
    t = m.get("t")
    if not isinstance(t, str) or t not in _DECODERS:
        raise FieldError("unknown consensus message type", code="bad_message_type")
    msg: Message = _DECODERS[t](m)
    return msg


def encode_message(msg: Message) -> bytes:
    return codec.encode(msg.to_value())
