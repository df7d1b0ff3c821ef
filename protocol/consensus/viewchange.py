"""View-change rules as pure functions: when a VIEW-CHANGE is well-formed, and what a set of n - f of
them forces the new view to start with.

With one height in flight, "prepared certificates since the last stable checkpoint" reduce to: the
sender's highest committed height (proven by a commit certificate) and its highest-view prepared
certificate at the height above. The new view starts at H = max certified committed height + 1; if any
VIEW-CHANGE holds a prepared certificate at H, the one with the highest view is re-proposed, else the
new primary proposes freely. Any block committed at H in an earlier view was prepared by f + 1 honest
validators, one of which is in every quorum of VIEW-CHANGEs, and no certificate of a higher view can
name another block, so the re-proposal is that block. Rule: no state, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocol.consensus.certs import CommitCertificate, PreparedCertificate, Verifier
from protocol.consensus.messages import NewView, ViewChange
from protocol.consensus.params import quorum


def viewchange_ok(vc: ViewChange, validators: Sequence[bytes], chain: str, verifier: Verifier,
                  need_block: bool) -> bool:
    """Signature, commit certificate and prepared certificate of one VIEW-CHANGE all check out."""
    if vc.chain != chain or vc.index >= len(validators):
        return False
    if not verifier(vc.index, vc.domain(), vc.signed_bytes(), vc.sig):
        return False
    if vc.cert is not None:
        c = vc.cert
        if c.height != vc.height or c.block_hash != vc.block_hash or not c.verify(validators, chain, verifier):
            return False
    p = vc.prepared
    if p is not None:
        if p.height != vc.height + 1 or p.view >= vc.view or not p.verify(validators, chain, verifier):
            return False
        if need_block and vc.block is None:
            return False
        if vc.block is not None:
            b = vc.block
            if b.hash != p.block_hash or b.height != p.height or b.header.parent != vc.block_hash:
                return False
    return True


@dataclass(frozen=True, slots=True)
class Selection:
    start: int                              # first height of the new view
    base_cert: CommitCertificate | None     # proves height start - 1 (None when start == 1)
    prepared: PreparedCertificate | None    # the block to re-propose at `start`, if any
    source: int                             # index of the VIEW-CHANGE that holds it (or -1)


def select(vcs: Sequence[ViewChange]) -> Selection:
    """Deterministic outcome of a quorum of valid VIEW-CHANGEs (any order)."""
    ordered = sorted(vcs, key=lambda vc: vc.index)
    top = max(ordered, key=lambda vc: vc.height)  # first (lowest index) among the highest
    start = top.height + 1
    best: ViewChange | None = None
    for vc in ordered:
        p = vc.prepared
        if p is not None and p.height == start and (best is None or best.prepared is None
                                                      or p.view > best.prepared.view):
            best = vc
    return Selection(start=start, base_cert=top.cert, prepared=best.prepared if best else None,
                     source=best.index if best else -1)


def newview_ok(nv: NewView, validators: Sequence[bytes], chain: str, verifier: Verifier) -> Selection | None:
    """The selection a NEW-VIEW proves, or None when it is not a valid NEW-VIEW."""
    n = len(validators)
    if nv.chain != chain or nv.index != nv.view % n:
        return None
    if not verifier(nv.index, nv.domain(), nv.signed_bytes(), nv.sig):
        return None
    seen: set[int] = set()
    for vc in nv.view_changes:
        if vc.view != nv.view or vc.index in seen:
            return None
        seen.add(vc.index)
        if not viewchange_ok(vc, validators, chain, verifier, need_block=False):
            return None
    if len(seen) < quorum(n):
        return None
    sel = select(nv.view_changes)
    if nv.height != sel.start:
        return None
    if sel.prepared is None:
        return sel if nv.block is None else None
    b = nv.block
    if b is None or b.hash != sel.prepared.block_hash or b.height != sel.start:
        return None
    src = next(vc for vc in nv.view_changes if vc.index == sel.source)
    return sel if b.header.parent == src.block_hash else None
