"""A validator left behind in view (restart, resync, stalled loop) learns the current view from quorum-backed
evidence, asks for the NEW-VIEW with a VIEW-QUERY, installs it and votes again; one validator alone cannot
pull it anywhere."""

from __future__ import annotations

from typing import Any

from protocol import codec
from protocol.block import GENESIS_PARENT
from protocol.consensus import (
    BlockValidated,
    Commit,
    CommitCertificate,
    NewView,
    Prepare,
    PrePrepare,
    Replica,
    Send,
    SyncedTo,
    TimerFired,
    ValidateBlock,
    ViewChange,
    ViewQuery,
    WorkPending,
    decode_message,
    vote_bytes,
)
from protocol.crypto import DOMAIN_CONSENSUS
from tests.unit.test_consensus_replica import CHAIN, KEYS, PARAMS, ROOT, block, of, recv, replica, sent

W = 2  # the view the others are in (primary 2)


def new_view() -> NewView:
    vcs = tuple(ViewChange.create(KEYS[i], CHAIN, W, 0, GENESIS_PARENT, None, None, None, i) for i in (0, 1, 2))
    return NewView.create(KEYS[W], CHAIN, W, 1, vcs, None, W)


def in_view_w(i: int) -> Any:
    r = replica(i)
    recv(r, new_view(), 10)
    assert r.view == W and r.normal
    return r


def test_votes_of_f_plus_one_validators_in_a_higher_view_make_a_lagging_validator_ask_install_and_vote() -> None:
    lagger, helper = replica(3), in_view_w(1)
    b = block(view=W)
    out = recv(lagger, PrePrepare.create(KEYS[W], CHAIN, W, b, W), 100)
    out += recv(lagger, Prepare.create(KEYS[W], CHAIN, W, 1, b.hash, W), 101)
    assert not sent(out, ViewQuery), "one validator (the primary) is not enough: it may be the faulty one"
    out = recv(lagger, Prepare.create(KEYS[1], CHAIN, W, 1, b.hash, 1), 102)
    [query] = sent(out, ViewQuery)
    assert (query.view, query.height, query.index) == (0, 0, 3) and lagger.view == 0
    wire = decode_message(codec.decode(codec.encode(query.to_value())))
    answer = recv(helper, wire, 103)
    [nv] = [a.msg for a in of(answer, Send) if isinstance(a.msg, NewView)]
    out = recv(lagger, nv, 104)
    assert lagger.view == W and lagger.normal
    assert of(out, ValidateBlock), "the buffered proposal of view W is taken up at once"
    out = lagger.handle(BlockValidated(b.hash, True, ""), 105)
    assert [p.view for p in sent(out, Prepare)] == [W], "it votes again, in the others' view"


def test_a_certificate_of_a_higher_view_from_sync_makes_a_resynced_validator_ask_for_the_new_view() -> None:
    lagger = replica(3)  # a wiped validator: no WAL, view 0
    b = block(view=W)
    sigs = tuple((i, KEYS[i].sign(DOMAIN_CONSENSUS, vote_bytes(Commit.T, CHAIN, W, 1, b.hash, i))) for i in (0, 1, 2))
    cert = CommitCertificate(1, W, b.hash, sigs)
    out = lagger.handle(SyncedTo(1, b.hash, cert, ROOT), 50)
    [query] = sent(out, ViewQuery)
    assert query.height == 1 and lagger.view_target() == W
    out = lagger.handle(SyncedTo(1, b.hash, cert, ROOT), 60)
    assert not sent(out, ViewQuery), "at most one query per help interval"
    retransmit = lagger.timers["retransmit"]
    out = lagger.handle(TimerFired("retransmit", retransmit), 60 + PARAMS.help_interval_ms)
    assert sent(out, ViewQuery), "it keeps asking until it is in that view"


def test_a_replica_constructed_with_a_certificate_of_a_later_view_than_its_wal_asks_at_once() -> None:
    b = block(view=W)
    sigs = tuple((i, KEYS[i].sign(DOMAIN_CONSENSUS, vote_bytes(Commit.T, CHAIN, W, 1, b.hash, i))) for i in (0, 1, 2))
    r = Replica(CHAIN, tuple(k.public_key for k in KEYS), KEYS[3], PARAMS, 1, b.hash, (),
                CommitCertificate(1, W, b.hash, sigs))
    out = r.handle(WorkPending(0, 0), 0)
    assert sent(out, ViewQuery) and r.view == 0


def test_a_query_is_answered_once_per_help_interval_and_a_forged_one_not_at_all() -> None:
    helper = in_view_w(1)
    q = ViewQuery.create(KEYS[3], CHAIN, 0, 0, 3)
    assert [type(a.msg) for a in of(recv(helper, q, 100), Send)] == [NewView]
    assert not of(recv(helper, ViewQuery.create(KEYS[3], CHAIN, 0, 0, 3), 101), Send)
    forged = ViewQuery(CHAIN, 0, 0, 0, KEYS[3].sign(DOMAIN_CONSENSUS, b"something else"))
    assert not of(recv(helper, forged, 100 + 10 * PARAMS.help_interval_ms), Send)
    assert helper.stats["invalid_signature"] >= 1


def test_an_observer_never_asks() -> None:
    obs = replica(None)
    b = block(view=W)
    for i in (1, 2, 0):
        out = recv(obs, Prepare.create(KEYS[i], CHAIN, W, 1, b.hash, i), 100 + i)
        assert not sent(out, ViewQuery)
