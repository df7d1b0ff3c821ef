"""Write-ahead records of what this validator signed, so a restarted replica never signs differently.

A record is canonical msgpack `{"k": kind, "msg": <signed message value>}`; a COMMIT record also carries
the prepared certificate and block it was based on (`"prepared"`, `"block"`), so a restarted replica still
reports that prepared block in its VIEW-CHANGE. Kinds: preprepare, prepare, commit, viewchange, newview
(its own NEW-VIEW, or a received one it accepted: a restart comes back into that view with its constraints).
Rule: records are produced only by the replica (as `Persist` actions) and read back only by it; the
driver stores them opaquely and may shrink them with `compact_records`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocol import codec
from protocol.block import Block
from protocol.consensus.certs import PreparedCertificate
from protocol.consensus.messages import Commit, NewView, Prepare, PrePrepare, ViewChange
from protocol.consensus.params import VC_HISTORY
from protocol.errors import FieldError
from protocol.fields import expect_map, only_keys, req_str
from protocol.limits import BLOCK_CEILING_BYTES, BLOCK_MAX_TX_BYTES, BLOCK_MAX_TXS, VALIDATORS_MAX, SizeLimits

_CEILING = SizeLimits.derive(BLOCK_MAX_TXS, BLOCK_MAX_TX_BYTES, VALIDATORS_MAX)
WAL_LIMITS = codec.Limits(max_bytes=_CEILING.wal_record_bytes, max_depth=12, max_bin=BLOCK_CEILING_BYTES,
                          max_array=BLOCK_MAX_TXS, max_map=64)

OwnMessage = PrePrepare | Prepare | Commit | ViewChange | NewView


@dataclass(frozen=True, slots=True)
class WalRecord:
    msg: OwnMessage
    prepared: PreparedCertificate | None = None  # commit records: the certificate the COMMIT rests on
    block: Block | None = None                   # commit records: the block it commits

    @property
    def view(self) -> int:
        return self.msg.view

    @property
    def height(self) -> int:
        """The height the signature is about (a VIEW-CHANGE is about committed height + 1)."""
        return self.msg.height + 1 if isinstance(self.msg, ViewChange) else self.msg.height

    @property
    def meta(self) -> WalMeta:
        return WalMeta(self.msg.T, self.view, self.height)

    def encode(self) -> bytes:
        v: dict[str, Any] = {"k": self.msg.T, "msg": self.msg.to_value()}
        if self.prepared is not None:
            v["prepared"] = self.prepared.to_value()
        if self.block is not None:
            v["block"] = self.block.raw
        return codec.encode(v)


_KINDS: dict[str, Any] = {PrePrepare.T: PrePrepare, Prepare.T: Prepare, Commit.T: Commit,
                          ViewChange.T: ViewChange, NewView.T: NewView}


def decode_record(data: bytes) -> WalRecord:
    m = expect_map(codec.decode(data, WAL_LIMITS), "wal record")
    only_keys(m, {"k", "msg", "prepared", "block"}, "wal record")
    kind = req_str(m, "k", max_len=16)
    if kind not in _KINDS:
        raise FieldError("unknown wal record kind")
    msg: OwnMessage = _KINDS[kind].from_value(m.get("msg"))
    prepared = PreparedCertificate.from_value(m["prepared"]) if "prepared" in m else None
    block = Block.from_field(m["block"]) if "block" in m else None
    if isinstance(msg, Commit) and (prepared is None or block is None):
        raise FieldError("a commit record carries its prepared certificate and block")
    return WalRecord(msg=msg, prepared=prepared, block=block)


@dataclass(frozen=True, slots=True)
class WalMeta:
    """What compaction needs to know of a record without decoding it again."""

    kind: str
    view: int
    height: int  # the height its signature is about (a VIEW-CHANGE: committed height + 1)


def compact_plan(metas: Sequence[WalMeta], committed_height: int) -> list[int]:
    """Indices (in `metas`, ascending) of the records a replica restored at `committed_height` still needs:
    the one record with the highest view (it keeps the replica from ever going back to a lower view) and
    that view's NEW-VIEW; its records of that view above the committed height (what it signed there);
    the COMMIT above the committed height with the highest view (its prepared certificate goes into a
    VIEW-CHANGE); and its VIEW-CHANGEs of the VC_HISTORY highest views (re-sent to peers that lost them
    in a restart). Everything else (lower views of the open height, heights already committed) can
    never be signed again or reported, so the WAL stays a few records long whatever the block size."""
    if not metas:
        return []
    top = max(range(len(metas)), key=lambda i: (metas[i].view, metas[i].kind != ViewChange.T, i))
    top_view = metas[top].view
    keep = {top}
    nvs = [i for i, m in enumerate(metas) if m.kind == NewView.T and m.view == top_view]
    if nvs:
        keep.add(nvs[-1])
    commits = [i for i, m in enumerate(metas) if m.kind == Commit.T and m.height > committed_height]
    if commits:
        keep.add(max(commits, key=lambda i: (metas[i].view, i)))
    vc_views = sorted({m.view for m in metas if m.kind == ViewChange.T})[-VC_HISTORY:]
    for i, m in enumerate(metas):
        if (m.height > committed_height and m.view == top_view) or (m.kind == ViewChange.T and m.view in vc_views):
            keep.add(i)
    return sorted(keep)


def compact_records(records: Sequence[bytes], committed_height: int) -> list[bytes]:
    """`compact_plan` over encoded records: the ones still needed, in their original order."""
    metas = [decode_record(r).meta for r in records]
    return [records[i] for i in compact_plan(metas, committed_height)]
