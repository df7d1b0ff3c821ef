"""Size limits from one place (protocol/limits.py): the largest block a proposer may build fits every
consensus message, WAL record and P2P frame that carries it; one byte more is refused where it enters."""

from __future__ import annotations

import dataclasses

import pytest

from node.executor import BlockExecutor, BlockRejected, Parent
from node.p2p.channel import OVERHEAD
from protocol import codec
from protocol.block import Block
from protocol.consensus import (
    Commit,
    CommitCertificate,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    ViewChange,
    WalRecord,
    decode_record,
)
from protocol.crypto import PrivateKey
from protocol.errors import FrameTooLarge
from protocol.framing import FrameReader
from protocol.limits import SizeLimits
from protocol.messages import T_CONS, encode_envelope

TOP = 2**63 - 1  # the widest heights and views msgpack can carry
CHAIN = "c" * 64  # the longest chain id


def full_block(limits: SizeLimits, extra: int = 0) -> Block:
    """A block at the chain's limits: max_block_txs txs whose raw bytes add up to max_block_bytes (+ extra)."""
    n, total = limits.max_block_txs, limits.max_block_tx_bytes + extra
    size = total // n
    txs = [bytes([i % 251]) * size for i in range(n - 1)]
    txs.append(b"\x07" * (total - size * (n - 1)))
    return Block.build(chain=CHAIN, height=TOP, parent=b"\xff" * 32, proposer=b"\xee" * 32, view=TOP, time=TOP,
                       state_root=b"\xdd" * 32, results_root=b"\xcc" * 32, txs=txs)


def certs(keys: list[PrivateKey], block: Block) -> tuple[CommitCertificate, PreparedCertificate]:
    n = len(keys)
    commit = CommitCertificate(TOP, TOP, block.hash, tuple(
        (i, Commit.create(keys[i], CHAIN, TOP, TOP, block.hash, i).sig) for i in range(n)))
    prepared = PreparedCertificate(TOP, TOP, block.hash, tuple(
        (i, Prepare.create(keys[i], CHAIN, TOP, TOP, block.hash, i).sig) for i in range(n)))
    return commit, prepared


def framed(msg: object) -> int:
    return len(encode_envelope(T_CONS, msg.to_value())) + OVERHEAD  # type: ignore[attr-defined]


@pytest.mark.parametrize("validators", [1, 4, 7])
def test_the_largest_block_fits_every_message_record_and_frame_that_carries_it(validators: int) -> None:
    limits = SizeLimits.derive(2000, 4 * 1024 * 1024, validators)
    keys = [PrivateKey(bytes([i + 1]) * 32) for i in range(validators)]
    block = full_block(limits)
    assert sum(len(t) for t in block.txs) == limits.max_block_tx_bytes
    assert len(block.raw) <= limits.block_bytes
    commit, prepared = certs(keys, block)
    last = validators - 1
    pp = PrePrepare.create(keys[0], CHAIN, TOP, block, 0)
    vc_full = ViewChange.create(keys[last], CHAIN, TOP, TOP - 1, block.hash, commit, prepared, block, last)
    vcs = tuple(ViewChange.create(keys[i], CHAIN, TOP, TOP - 1, block.hash, commit, prepared, None, i)
                for i in range(validators))
    nv = NewView.create(keys[0], CHAIN, TOP, TOP, vcs, block, 0)
    for msg in (pp, vc_full, nv):
        assert framed(msg) <= limits.frame_bytes, type(msg).__name__
        assert len(codec.encode(msg.to_value())) <= limits.message_bytes, type(msg).__name__
    c = Commit.create(keys[last], CHAIN, TOP, TOP, block.hash, last)
    for rec in (WalRecord(pp), WalRecord(c, prepared, block), WalRecord(vc_full), WalRecord(nv)):
        raw = rec.encode()
        assert len(raw) <= limits.wal_record_bytes, type(rec.msg).__name__
        assert decode_record(raw).msg == rec.msg  # and it reads back
    assert limits.wal_bytes >= 16 * limits.wal_record_bytes


def test_a_block_one_byte_over_the_limit_is_refused_by_validation() -> None:
    limits = SizeLimits.derive(2000, 4 * 1024 * 1024, 4)
    ex = BlockExecutor(CHAIN, None, max_future_ms=TOP, max_block_txs=limits.max_block_txs,  # type: ignore[arg-type]
                       max_block_bytes=limits.max_block_tx_bytes)
    head = Parent(TOP - 1, b"\xff" * 32, 0, b"\xdd" * 32, b"\xcc" * 32)
    over = full_block(limits, extra=1)
    with pytest.raises(BlockRejected) as info:
        ex.precheck(over, head, TOP)
    assert info.value.reason == "block_too_large"
    at = full_block(limits)
    try:
        ex.precheck(at, head, TOP)
    except BlockRejected as exc:  # the txs are not real signed txs: anything but the size check may fail
        assert exc.reason != "block_too_large"


def test_a_frame_one_byte_over_the_limit_ends_the_read() -> None:
    limits = SizeLimits.derive(2000, 4 * 1024 * 1024, 4)
    reader = FrameReader(limits.frame_bytes)
    ok = limits.frame_bytes.to_bytes(4, "big")
    assert reader.feed(ok) == []  # announced exactly at the limit: accepted, waits for the payload
    with pytest.raises(FrameTooLarge):
        FrameReader(limits.frame_bytes).feed((limits.frame_bytes + 1).to_bytes(4, "big"))


def test_limits_refuse_a_block_size_a_single_largest_tx_cannot_fit() -> None:
    with pytest.raises(ValueError, match="max_block_bytes"):
        SizeLimits.derive(2000, 1000, 4)
    with pytest.raises(ValueError, match="max_block_txs"):
        SizeLimits.derive(0, 4 * 1024 * 1024, 4)
    assert dataclasses.asdict(SizeLimits.derive(1, 64 * 1024, 1))["frame_bytes"] > 64 * 1024
