"""Sync wire bodies: every message round-trips through canonical msgpack and anything malformed is refused."""

from __future__ import annotations

from typing import Any

import pytest

from protocol import codec
from protocol.consensus import CheckpointCertificate
from protocol.errors import FieldError
from protocol.syncmsg import (
    MAX_SYNC_BLOCKS,
    SnapChunk,
    SnapOffer,
    SnapRefusal,
    SnapRequest,
    SyncRequest,
    SyncResponse,
    decode_snap_resp,
)

CP = CheckpointCertificate(10, b"\x01" * 32, b"\x02" * 32, ((0, b"\x03" * 64), (2, b"\x04" * 64)))


def wire(v: Any) -> Any:
    return codec.decode(codec.encode(v))


def test_every_sync_message_survives_a_round_trip_through_canonical_msgpack() -> None:
    req = SyncRequest(7, 1, 64)
    assert SyncRequest.from_value(wire(req.to_value())) == req
    resp = SyncResponse(7, "ok", 1, 90, 1, ((b"blk", b"cert"), (b"blk2", b"cert2")))
    assert SyncResponse.from_value(wire(resp.to_value())) == resp
    none = SyncResponse(8, "none", 200, 90, 1)
    assert SyncResponse.from_value(wire(none.to_value())) == none
    for sreq in (SnapRequest(1, "manifest"), SnapRequest(2, "chunk", 10, 3)):
        assert SnapRequest.from_value(wire(sreq.to_value())) == sreq
    for sresp in (SnapRefusal(3, "chunk", "busy"), SnapChunk(4, 10, 3, b"data"),
                  SnapOffer(5, 10, b"\x01" * 32, b"\x02" * 32, b"manifest", CP, b"commit")):
        assert decode_snap_resp(wire(sresp.to_value())) == sresp


@pytest.mark.parametrize("body", [
    {"rid": 1, "from": 0, "count": 1},  # heights start at 1
    {"rid": 1, "from": 1, "count": 0},
    {"rid": 1, "from": 1, "count": MAX_SYNC_BLOCKS + 1},
    {"rid": -1, "from": 1, "count": 1},
    {"rid": 1, "from": 1, "count": 1, "extra": 1},
    {"rid": 1, "from": 1},
    {"rid": 1, "from": True, "count": 1},
])
def test_a_malformed_sync_request_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(FieldError):
        SyncRequest.from_value(body)


@pytest.mark.parametrize("change", [
    {"status": "ok", "blocks": []},  # ok without blocks
    {"status": "none", "blocks": [[b"b", b"c"]]},  # blocks without ok
    {"status": "maybe"},
    {"blocks": [[b"b"]]},
    {"blocks": [[b"", b"c"]]},
    {"blocks": [["b", b"c"]]},
    {"blocks": [[b"b", b"c"]] * (MAX_SYNC_BLOCKS + 1)},
    {"extra": 1},
])
def test_a_malformed_sync_response_is_refused(change: dict[str, Any]) -> None:
    body = {**SyncResponse(1, "ok", 1, 5, 1, ((b"b", b"c"),)).to_value(), **change}
    with pytest.raises(FieldError):
        SyncResponse.from_value(body)


@pytest.mark.parametrize("body", [
    {"rid": 1, "kind": "manifest", "index": 0},  # manifest requests carry nothing else
    {"rid": 1, "kind": "chunk", "height": 5},
    {"rid": 1, "kind": "chunk", "height": 0, "index": 0},
    {"rid": 1, "kind": "everything"},
])
def test_a_malformed_snapshot_request_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(FieldError):
        SnapRequest.from_value(body)


@pytest.mark.parametrize("body", [
    {"rid": 1, "kind": "chunk", "status": "busy", "chunk": b"x"},
    {"rid": 1, "kind": "chunk", "status": "ok", "height": 1, "index": 0},
    {"rid": 1, "kind": "manifest", "status": "ok", "height": 10, "block_hash": b"\x01" * 32,
     "state_root": b"\x02" * 32, "manifest": b"m", "commit": b"c"},  # no checkpoint
    {**SnapOffer(5, 10, b"\x01" * 32, b"\x02" * 32, b"m", CP, b"c").to_value(), "state_root": b"\x02" * 31},
    {**SnapOffer(5, 10, b"\x01" * 32, b"\x02" * 32, b"m", CP, b"c").to_value(), "checkpoint": {"height": 1}},
])
def test_a_malformed_snapshot_response_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(FieldError):
        decode_snap_resp(body)
