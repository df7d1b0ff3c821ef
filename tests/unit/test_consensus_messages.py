"""Consensus messages, certificates and WAL records: canonical round trips, strict decoding, signatures."""

from __future__ import annotations

import dataclasses

import pytest

from protocol import codec
from protocol.block import GENESIS_PARENT, Block
from protocol.consensus import (
    Checkpoint,
    CheckpointCertificate,
    Commit,
    CommitCertificate,
    CommitProof,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Suspect,
    ViewChange,
    ViewQuery,
    WalRecord,
    compact_records,
    decode_message,
    decode_record,
)
from protocol.crypto import sha256
from protocol.errors import FieldError
from tests.sim.net import CHAIN, sim_key

KEYS = [sim_key(i) for i in range(4)]
VALIDATORS = tuple(k.public_key for k in KEYS)


def block(height: int = 1, view: int = 0, parent: bytes = GENESIS_PARENT, txs: tuple[bytes, ...] = (b"a",)) -> Block:
    return Block.build(chain=CHAIN, height=height, parent=parent, proposer=VALIDATORS[view % 4], view=view,
                       time=1000 + height, state_root=sha256(b"root"), results_root=sha256(b"results"),
                       txs=txs)


def cert(cls: type, b: Block, view: int = 0, signers: range = range(3)) -> CommitCertificate:
    sigs = tuple((i, (Commit if cls is CommitCertificate else Prepare).create(
        KEYS[i], CHAIN, view, b.height, b.hash, i).sig) for i in signers)
    made: CommitCertificate = cls(b.height, view, b.hash, sigs)
    return made


def roundtrip(msg: object) -> object:
    wire = codec.encode(msg.to_value())  # type: ignore[attr-defined]
    return decode_message(codec.decode(wire, codec.Limits(max_bytes=1 << 22)))


def test_every_consensus_message_survives_a_canonical_round_trip_unchanged() -> None:
    b1 = block()
    c1 = cert(CommitCertificate, b1)
    b2 = block(2, 1, b1.hash)
    pc = cert(PreparedCertificate, b2, view=0)
    vc = ViewChange.create(KEYS[1], CHAIN, 1, 1, b1.hash, c1, pc, b2, 1)
    msgs = [
        PrePrepare.create(KEYS[0], CHAIN, 0, b1, 0),
        Prepare.create(KEYS[1], CHAIN, 0, 1, b1.hash, 1),
        Commit.create(KEYS[2], CHAIN, 0, 1, b1.hash, 2),
        Checkpoint.create(KEYS[3], CHAIN, 100, b1.hash, sha256(b"s"), 3),
        vc,
        NewView.create(KEYS[1], CHAIN, 1, 2, (vc.without_block(),), b2, 1),
        ViewQuery.create(KEYS[3], CHAIN, 0, 7, 3),
        Suspect.create(KEYS[2], CHAIN, 4, 9, 2),
        CommitProof(c1),
    ]
    for m in msgs:
        assert roundtrip(m) == m
    q = msgs[-3]
    assert isinstance(q, ViewQuery) and q.verify_sig(VALIDATORS[3])
    assert not dataclasses.replace(q, height=8).verify_sig(VALIDATORS[3])
    s = msgs[-2]
    assert isinstance(s, Suspect) and s.verify_sig(VALIDATORS[2])
    assert not Suspect(CHAIN, 0, 7, 3, q.sig).verify_sig(VALIDATORS[3]), "a VIEW-QUERY's signature is no SUSPECT's"


def test_signatures_verify_for_the_signer_and_fail_after_any_change() -> None:
    p = Prepare.create(KEYS[1], CHAIN, 3, 7, sha256(b"x"), 1)
    assert p.verify_sig(VALIDATORS[1])
    assert not p.verify_sig(VALIDATORS[2])
    assert not dataclasses.replace(p, view=4).verify_sig(VALIDATORS[1])
    assert not dataclasses.replace(p, chain="other").verify_sig(VALIDATORS[1])
    # a PREPARE signature is never a valid COMMIT signature
    assert not Commit(p.chain, p.view, p.height, p.block_hash, p.index, p.sig).verify_sig(VALIDATORS[1])


def test_decoding_rejects_unknown_types_extra_fields_and_bad_sizes() -> None:
    good = Prepare.create(KEYS[1], CHAIN, 0, 1, sha256(b"x"), 1).to_value()
    with pytest.raises(FieldError):
        decode_message({**good, "t": "nope"})
    with pytest.raises(FieldError):
        decode_message({**good, "extra": 1})
    with pytest.raises(FieldError):
        decode_message({**good, "hash": b"short"})
    with pytest.raises(FieldError):
        decode_message({**good, "sig": b"\x00" * 63})
    with pytest.raises(FieldError):
        decode_message({**good, "height": 0})
    with pytest.raises(FieldError):
        decode_message("not a map")


def test_a_view_change_carries_a_commit_certificate_exactly_above_height_zero() -> None:
    vc = ViewChange.create(KEYS[1], CHAIN, 1, 0, GENESIS_PARENT, None, None, None, 1).to_value()
    assert decode_message(vc).height == 0  # type: ignore[union-attr]
    with pytest.raises(FieldError):
        decode_message({**vc, "height": 3})


def test_a_commit_certificate_needs_n_minus_f_distinct_valid_signers() -> None:
    b = block()
    assert cert(CommitCertificate, b).verify(VALIDATORS, CHAIN)
    assert not cert(CommitCertificate, b, signers=range(2)).verify(VALIDATORS, CHAIN)
    assert not cert(CommitCertificate, b).verify(VALIDATORS, "other-chain")
    good = cert(CommitCertificate, b)
    forged = CommitCertificate(b.height, 0, b.hash, (*good.sigs[:2], (3, b"\x01" * 64)))
    assert not forged.verify(VALIDATORS, CHAIN)
    dup = CommitCertificate(b.height, 0, b.hash, (good.sigs[0], good.sigs[0], good.sigs[1]))
    assert not dup.verify(VALIDATORS, CHAIN)
    with pytest.raises(FieldError):
        CommitCertificate.from_value(dup.to_value())
    # prepare signatures do not make a commit certificate
    prep = cert(PreparedCertificate, b)
    assert not CommitCertificate(b.height, 0, b.hash, prep.sigs).verify(VALIDATORS, CHAIN)


def test_a_checkpoint_certificate_verifies_against_the_validator_set() -> None:
    root = sha256(b"state")
    cs = [Checkpoint.create(KEYS[i], CHAIN, 100, sha256(b"b"), root, i) for i in range(3)]
    cc = CheckpointCertificate(100, sha256(b"b"), root, tuple((c.index, c.sig) for c in cs))
    assert cc.verify(VALIDATORS, CHAIN)
    assert CheckpointCertificate.from_value(cc.to_value()) == cc
    assert not dataclasses.replace(cc, state_root=sha256(b"other")).verify(VALIDATORS, CHAIN)


def test_wal_records_round_trip_and_compaction_keeps_the_highest_view_and_its_open_height() -> None:
    b1 = block()
    pc = cert(PreparedCertificate, b1)
    recs = [
        WalRecord(Prepare.create(KEYS[1], CHAIN, 0, 1, b1.hash, 1)).encode(),
        WalRecord(Commit.create(KEYS[1], CHAIN, 0, 1, b1.hash, 1), pc, b1).encode(),
        WalRecord(Prepare.create(KEYS[1], CHAIN, 0, 2, sha256(b"2"), 1)).encode(),
        WalRecord(ViewChange.create(KEYS[1], CHAIN, 1, 1, b1.hash, cert(CommitCertificate, b1), None, None,
                                    1)).encode(),
    ]
    assert decode_record(recs[1]).prepared == pc
    # view 1 is the top view: the view-0 PREPARE at the open height can never be signed again
    assert compact_records(recs, 1) == [recs[3]]
    assert compact_records(recs, 0) == [recs[1], recs[3]]  # the COMMIT at the open height keeps its certificate
    assert compact_records(recs, 5) == [recs[3]]
    with pytest.raises(FieldError):
        decode_record(codec.encode({"k": "commit", "msg": Commit.create(KEYS[1], CHAIN, 0, 1, b1.hash, 1)
                                    .to_value()}))


def test_compaction_keeps_the_new_view_of_the_highest_view_so_a_restarted_primary_never_signs_another() -> None:
    vcs = tuple(ViewChange.create(KEYS[i], CHAIN, 1, 0, GENESIS_PARENT, None, None, None, i) for i in (0, 2, 3))
    nv = WalRecord(NewView.create(KEYS[1], CHAIN, 1, 1, vcs, None, 1)).encode()
    later = [WalRecord(Prepare.create(KEYS[1], CHAIN, 1, h, sha256(b"%d" % h), 1)).encode() for h in (1, 2, 3)]
    assert compact_records([nv, *later], 5) == [nv, later[-1]]
