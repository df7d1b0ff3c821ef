"""Block-sync and state-sync wire bodies: `sync_req`, `sync_resp`, `snap_req`, `snap_resp`.

Wire (canonical msgpack maps, every request carries a requester-chosen `rid` echoed in its answer):
- `sync_req`  `{"rid", "from": h >= 1, "count": 1..MAX_SYNC_BLOCKS}`
- `sync_resp` `{"rid", "status": "ok"|"busy"|"none", "from", "height": server head,
  "first": server's lowest stored block (0: none), "blocks": [[block bytes, certificate bytes], ...]}`;
  `ok` carries >= 1 contiguous blocks starting at `from`, the exact stored bytes; the others carry none.
- `res_req`   `{"rid", "from": h >= 1, "count": 1..MAX_SYNC_BLOCKS, "receipt": i}`: history backfill asks for
  the results of blocks from..from+count-1 (their blocks come by `sync_req`), receipts of block `from`
  starting at index i (to continue an answer that stopped inside a block).
- `res_resp`  `{"rid", "status", "from", "receipt", "height": server head, "first": lowest height the server
  holds with full history (0: genesis included), "results": [[[receipt bytes, ...], events bytes, total],
  ...]}`: `ok` carries >= 1 entries for contiguous heights from `from`; an entry with fewer receipts than
  `total` ends the answer (the frame was full), the requester asks again from there.
- `snap_req`  `{"rid", "kind": "manifest"}` or `{"rid", "kind": "chunk", "height", "index"}`
- `snap_resp` `{"rid", "kind", "status"}` plus, for an `ok` manifest: `height`, `block_hash`,
  `state_root`, `manifest` (canonical bytes of storage's SnapshotManifest), `checkpoint` (the stable
  checkpoint certificate value) and `commit` (the stored commit-certificate bytes of block `height`);
  for an `ok` chunk: `height`, `index`, `chunk` (canonical chunk bytes).

Rule: pure data and strict validation (every field checked, unknown fields rejected). Blocks, commit
certificates, manifests and chunks stay opaque bytes here: the node layer decodes and verifies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.consensus.certs import CheckpointCertificate
from protocol.crypto import HASH_SIZE
from protocol.errors import FieldError
from protocol.fields import expect_map, only_keys, req_bytes, req_int, req_list, req_str
from protocol.limits import BLOCK_CEILING_BYTES, BLOCK_MAX_TXS, VALIDATORS_MAX, certificate_bytes

MAX_RID = 2**63 - 1
MAX_HEIGHT = 2**63 - 1
MAX_SYNC_BLOCKS = 1024  # blocks one sync_req may ask for and one sync_resp may carry
MAX_CERT_BYTES = certificate_bytes(VALIDATORS_MAX)
MAX_WIRE_BLOCK_BYTES = BLOCK_CEILING_BYTES
MAX_CHUNK_WIRE_BYTES = 32 * 1024 * 1024
MAX_MANIFEST_WIRE_BYTES = 48 * 1024 * 1024
MAX_CHUNK_INDEX = 1_000_000
MAX_RESULT_WIRE_BYTES = 32 * 1024 * 1024  # one receipt or one block's events list (the frame bounds the sum)

STATUS_OK = "ok"
STATUS_BUSY = "busy"  # rate limit or full serving queue: ask again later or elsewhere
STATUS_NONE = "none"  # the server does not have what was asked
STATUSES = frozenset({STATUS_OK, STATUS_BUSY, STATUS_NONE})
KIND_MANIFEST = "manifest"
KIND_CHUNK = "chunk"
KINDS = frozenset({KIND_MANIFEST, KIND_CHUNK})


def _rid(m: dict[str, Any]) -> int:
    return req_int(m, "rid", lo=0, hi=MAX_RID)


def _height(m: dict[str, Any], key: str, *, lo: int = 1) -> int:
    return req_int(m, key, lo=lo, hi=MAX_HEIGHT)


def _status(m: dict[str, Any]) -> str:
    s = req_str(m, "status", max_len=8)
    if s not in STATUSES:
        raise FieldError(f"unknown status '{s}'")
    return s


def _kind(m: dict[str, Any]) -> str:
    k = req_str(m, "kind", max_len=16)
    if k not in KINDS:
        raise FieldError(f"unknown snapshot request kind '{k}'")
    return k


@dataclass(frozen=True, slots=True)
class SyncRequest:
    rid: int
    start: int
    count: int

    def to_value(self) -> dict[str, Any]:
        return {"rid": self.rid, "from": self.start, "count": self.count}

    @classmethod
    def from_value(cls, v: Any) -> SyncRequest:
        m = expect_map(v, "sync_req")
        only_keys(m, {"rid", "from", "count"}, "sync_req")
        return cls(rid=_rid(m), start=_height(m, "from"),
                   count=req_int(m, "count", lo=1, hi=MAX_SYNC_BLOCKS))


@dataclass(frozen=True, slots=True)
class SyncResponse:
    rid: int
    status: str
    start: int
    height: int
    first: int
    blocks: tuple[tuple[bytes, bytes], ...] = ()

    def to_value(self) -> dict[str, Any]:
        return {"rid": self.rid, "status": self.status, "from": self.start, "height": self.height,
                "first": self.first, "blocks": [[b, c] for b, c in self.blocks]}

    @classmethod
    def from_value(cls, v: Any) -> SyncResponse:
        m = expect_map(v, "sync_resp")
        only_keys(m, {"rid", "status", "from", "height", "first", "blocks"}, "sync_resp")
        status = _status(m)
        blocks: list[tuple[bytes, bytes]] = []
        for item in req_list(m, "blocks", max_len=MAX_SYNC_BLOCKS):
            if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes)
                    or not isinstance(item[1], bytes)):
                raise FieldError("sync_resp blocks must be [block bytes, certificate bytes] pairs")
            if not 0 < len(item[0]) <= MAX_WIRE_BLOCK_BYTES or not 0 < len(item[1]) <= MAX_CERT_BYTES:
                raise FieldError("sync_resp block or certificate size out of range")
            blocks.append((item[0], item[1]))
        if (status == STATUS_OK) != bool(blocks):
            raise FieldError("sync_resp carries blocks exactly when its status is ok")
        return cls(rid=_rid(m), status=status,
                   start=_height(m, "from"), height=_height(m, "height", lo=0),
                   first=_height(m, "first", lo=0), blocks=tuple(blocks))


@dataclass(frozen=True, slots=True)
class ResultsRequest:
    rid: int
    start: int  # first height
    count: int
    receipt: int  # index of the first receipt wanted of block `start` (continuing a partial answer)

    def to_value(self) -> dict[str, Any]:
        return {"rid": self.rid, "from": self.start, "count": self.count, "receipt": self.receipt}

    @classmethod
    def from_value(cls, v: Any) -> ResultsRequest:
        m = expect_map(v, "res_req")
        only_keys(m, {"rid", "from", "count", "receipt"}, "res_req")
        return cls(rid=_rid(m), start=_height(m, "from"), count=req_int(m, "count", lo=1, hi=MAX_SYNC_BLOCKS),
                   receipt=req_int(m, "receipt", lo=0, hi=BLOCK_MAX_TXS))


@dataclass(frozen=True, slots=True)
class BlockResults:
    """One block's results as served: receipts from some index on, its events, and how many it has."""

    receipts: tuple[bytes, ...]
    events: bytes
    total: int  # receipts the block has (the answer is partial when it carries fewer)

    def to_value(self) -> list[Any]:
        return [list(self.receipts), self.events, self.total]

    @classmethod
    def from_value(cls, item: Any) -> BlockResults:
        if not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], list) \
                or not isinstance(item[1], bytes) or not isinstance(item[2], int) or isinstance(item[2], bool):
            raise FieldError("res_resp results are [[receipt bytes, ...], events bytes, total]")
        receipts, events, total = item
        if not 0 <= total <= BLOCK_MAX_TXS or len(receipts) > total or len(events) > MAX_RESULT_WIRE_BYTES \
                or not all(isinstance(r, bytes) and len(r) <= MAX_RESULT_WIRE_BYTES for r in receipts):
            raise FieldError("res_resp results out of range")
        return cls(tuple(receipts), events, total)


@dataclass(frozen=True, slots=True)
class ResultsResponse:
    rid: int
    status: str
    start: int
    receipt: int
    height: int
    first: int
    results: tuple[BlockResults, ...] = ()

    def to_value(self) -> dict[str, Any]:
        return {"rid": self.rid, "status": self.status, "from": self.start, "receipt": self.receipt,
                "height": self.height, "first": self.first, "results": [r.to_value() for r in self.results]}

    @classmethod
    def from_value(cls, v: Any) -> ResultsResponse:
        m = expect_map(v, "res_resp")
        only_keys(m, {"rid", "status", "from", "receipt", "height", "first", "results"}, "res_resp")
        status = _status(m)
        results = tuple(BlockResults.from_value(r) for r in req_list(m, "results", max_len=MAX_SYNC_BLOCKS))
        if (status == STATUS_OK) != bool(results):
            raise FieldError("res_resp carries results exactly when its status is ok")
        return cls(rid=_rid(m), status=status, start=_height(m, "from"),
                   receipt=req_int(m, "receipt", lo=0, hi=BLOCK_MAX_TXS), height=_height(m, "height", lo=0),
                   first=_height(m, "first", lo=0), results=results)


@dataclass(frozen=True, slots=True)
class SnapRequest:
    rid: int
    kind: str
    height: int = 0  # chunk requests only
    index: int = 0  # chunk requests only

    def to_value(self) -> dict[str, Any]:
        if self.kind == KIND_MANIFEST:
            return {"rid": self.rid, "kind": self.kind}
        return {"rid": self.rid, "kind": self.kind, "height": self.height, "index": self.index}

    @classmethod
    def from_value(cls, v: Any) -> SnapRequest:
        m = expect_map(v, "snap_req")
        kind = _kind(m)
        rid = _rid(m)
        if kind == KIND_MANIFEST:
            only_keys(m, {"rid", "kind"}, "snap_req")
            return cls(rid=rid, kind=kind)
        only_keys(m, {"rid", "kind", "height", "index"}, "snap_req")
        return cls(rid=rid, kind=kind, height=_height(m, "height"),
                   index=req_int(m, "index", lo=0, hi=MAX_CHUNK_INDEX))


@dataclass(frozen=True, slots=True)
class SnapRefusal:
    """A `busy` or `none` answer to either kind of snapshot request."""

    rid: int
    kind: str
    status: str

    def to_value(self) -> dict[str, Any]:
        return {"rid": self.rid, "kind": self.kind, "status": self.status}


@dataclass(frozen=True, slots=True)
class SnapOffer:
    """The server's latest servable snapshot: its identity, certificates and per-chunk hashes."""

    rid: int
    height: int
    block_hash: bytes
    state_root: bytes
    manifest: bytes
    checkpoint: CheckpointCertificate
    commit: bytes

    def to_value(self) -> dict[str, Any]:
        return {"rid": self.rid, "kind": KIND_MANIFEST, "status": STATUS_OK, "height": self.height,
                "block_hash": self.block_hash, "state_root": self.state_root, "manifest": self.manifest,
                "checkpoint": self.checkpoint.to_value(), "commit": self.commit}


@dataclass(frozen=True, slots=True)
class SnapChunk:
    rid: int
    height: int
    index: int
    data: bytes

    def to_value(self) -> dict[str, Any]:
        return {"rid": self.rid, "kind": KIND_CHUNK, "status": STATUS_OK, "height": self.height,
                "index": self.index, "chunk": self.data}


SnapResponse = SnapRefusal | SnapOffer | SnapChunk


def decode_snap_resp(v: Any) -> SnapResponse:
    """Strictly parse a `snap_resp` body into the one class its kind and status name."""
    m = expect_map(v, "snap_resp")
    kind = _kind(m)
    status = _status(m)
    rid = _rid(m)
    if status != STATUS_OK:
        only_keys(m, {"rid", "kind", "status"}, "snap_resp")
        return SnapRefusal(rid=rid, kind=kind, status=status)
    if kind == KIND_CHUNK:
        only_keys(m, {"rid", "kind", "status", "height", "index", "chunk"}, "snap_resp")
        return SnapChunk(rid=rid, height=_height(m, "height"),
                         index=req_int(m, "index", lo=0, hi=MAX_CHUNK_INDEX),
                         data=req_bytes(m, "chunk", max_size=MAX_CHUNK_WIRE_BYTES))
    only_keys(m, {"rid", "kind", "status", "height", "block_hash", "state_root", "manifest", "checkpoint",
                  "commit"}, "snap_resp")
    if "checkpoint" not in m:
        raise FieldError("missing field 'checkpoint'")
    return SnapOffer(rid=rid, height=_height(m, "height"),
                     block_hash=req_bytes(m, "block_hash", size=HASH_SIZE),
                     state_root=req_bytes(m, "state_root", size=HASH_SIZE),
                     manifest=req_bytes(m, "manifest", max_size=MAX_MANIFEST_WIRE_BYTES),
                     checkpoint=CheckpointCertificate.from_value(m["checkpoint"]),
                     commit=req_bytes(m, "commit", max_size=MAX_CERT_BYTES))
