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
from protocol.block import BLOCK_LIMITS, Block
from protocol.consensus.certs import PreparedCertificate
from protocol.consensus.messages import Commit, NewView, Prepare, PrePrepare, ViewChange
from protocol.consensus.params import VC_HISTORY
from protocol.errors import FieldError
from protocol.fields import expect_map, only_keys, req_str

WAL_LIMITS = codec.Limits(max_bytes=2 * BLOCK_LIMITS.max_bytes + 1024 * 1024, max_depth=12,
                          max_bin=BLOCK_LIMITS.max_bin, max_array=BLOCK_LIMITS.max_array, max_map=64)

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

    def encode(self) -> bytes:
        v: dict[str, Any] = {"k": self.msg.T, "msg": self.msg.to_value()}
        if self.prepared is not None:
            v["prepared"] = self.prepared.to_value()
        if self.block is not None:
            v["block"] = self.block.to_value()
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
    block = Block.from_value(m["block"]) if "block" in m else None
    if isinstance(msg, Commit) and (prepared is None or block is None):
        raise FieldError("a commit record carries its prepared certificate and block")
    return WalRecord(msg=msg, prepared=prepared, block=block)


def compact_records(records: Sequence[bytes], committed_height: int) -> list[bytes]:
    """The records a replica restored at `committed_height` still needs, in their original order:
    every record about a height above it, the one record with the highest view (it keeps the replica from
    ever going back to a lower view) and that view's NEW-VIEW, and its VIEW-CHANGEs of the VC_HISTORY highest views (re-sent to
    peers that lost them in a restart)."""
    decoded = [(i, decode_record(r)) for i, r in enumerate(records)]
    if not decoded:
        return []
    top = max(decoded, key=lambda ir: (ir[1].view, not isinstance(ir[1].msg, ViewChange), ir[0]))[0]
    top_view = decoded[top][1].view
    # the NEW-VIEW of the top view: without it a restarted primary could sign a second one
    nvs = [i for i, rec in decoded if isinstance(rec.msg, NewView) and rec.view == top_view]
    top_nv = nvs[-1] if nvs else -1
    vc_views = sorted({rec.view for _, rec in decoded if isinstance(rec.msg, ViewChange)})[-VC_HISTORY:]
    return [records[i] for i, rec in decoded
            if i in (top, top_nv) or rec.height > committed_height
            or (isinstance(rec.msg, ViewChange) and rec.view in vc_views)]
