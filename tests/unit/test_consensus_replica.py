"""One replica driven by hand: write-ahead order, restart safety, batching, timers, hostile input."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from protocol.block import GENESIS_PARENT, Block
from protocol.consensus import (
    TIMER_BATCH,
    TIMER_VIEW,
    BlockBuilt,
    BlockExecuted,
    BlockValidated,
    Broadcast,
    BuildBlock,
    Checkpoint,
    Commit,
    CommitBlock,
    CommitCertificate,
    CommitProof,
    ConsensusParams,
    Evidence,
    MessageReceived,
    NeedSync,
    NewView,
    Persist,
    Prepare,
    PrePrepare,
    Replica,
    Send,
    SetTimer,
    StableCheckpoint,
    Suspect,
    SyncedTo,
    TimerFired,
    ValidateBlock,
    ViewChange,
    WorkPending,
)
from protocol.crypto import sha256
from tests.sim.net import CHAIN, sim_key

KEYS = [sim_key(i) for i in range(4)]
VALIDATORS = tuple(k.public_key for k in KEYS)
PARAMS = ConsensusParams(max_block_txs=10, batch_timeout_ms=20, view_timeout_ms=100, view_timeout_cap_ms=800,
                         checkpoint_interval=2, future_height_window=8, future_view_window=4, per_sender_buffer=8)
ROOT = sha256(b"root")


def replica(i: int | None, records: tuple[bytes, ...] = ()) -> Replica:
    return Replica(CHAIN, VALIDATORS, KEYS[i] if i is not None else None, PARAMS, 0, GENESIS_PARENT, records)


def block(view: int = 0, txs: tuple[bytes, ...] = (b"tx",), height: int = 1,
          parent: bytes = GENESIS_PARENT) -> Block:
    return Block.build(chain=CHAIN, height=height, parent=parent, proposer=VALIDATORS[view % 4], view=view,
                       time=5, state_root=ROOT, results_root=ROOT, txs=txs)


def recv(r: Replica, msg: Any, now: int = 0) -> list[Any]:
    return r.handle(MessageReceived(b"peer", msg), now)


def of(actions: list[Any], cls: type) -> list[Any]:
    return [a for a in actions if isinstance(a, cls)]


def sent(actions: list[Any], cls: type) -> list[Any]:
    return [a.msg for a in of(actions, Broadcast) if isinstance(a.msg, cls)]


def time_out(r: Replica, now: int) -> list[Any]:
    """r's view timer runs out and two other validators suspect the view too (n - f = 3): r leaves it."""
    assert r.index is not None
    w, h = r.view + 1, r.height
    out = r.handle(TimerFired(TIMER_VIEW, r.timers[TIMER_VIEW]), now)
    for i in [i for i in range(4) if i != r.index][:2]:
        out += recv(r, Suspect.create(KEYS[i], CHAIN, w, h, i), now)
    return out


def accept_and_validate(r: Replica, b: Block, view: int = 0) -> list[Any]:
    out = recv(r, PrePrepare.create(KEYS[view % 4], CHAIN, view, b, view % 4))
    assert of(out, ValidateBlock)[0].block == b
    return r.handle(BlockValidated(b.hash, True, ""), 1)


def test_a_backup_persists_its_prepare_before_sending_it_and_commits_with_a_verifiable_certificate() -> None:
    r = replica(1)
    b = block()
    out = accept_and_validate(r, b)
    kinds = [type(a).__name__ for a in out if isinstance(a, Persist | Broadcast)]
    assert kinds == ["Persist", "Broadcast"]
    assert sent(out, Prepare)[0].block_hash == b.hash
    for i in (0, 2):
        out = recv(r, Prepare.create(KEYS[i], CHAIN, 0, 1, b.hash, i))
    kinds = [type(a).__name__ for a in out if isinstance(a, Persist | Broadcast)]
    assert kinds == ["Persist", "Broadcast"] and sent(out, Commit)
    for i in (0, 2):
        out = recv(r, Commit.create(KEYS[i], CHAIN, 0, 1, b.hash, i))
    commit = of(out, CommitBlock)[0]
    assert commit.block == b and commit.certificate.verify(VALIDATORS, CHAIN)
    assert r.committed == 1


def test_a_replica_rebuilt_from_its_records_never_prepares_a_second_block_for_the_same_view_and_height() -> None:
    r = replica(1)
    b = block()
    out = accept_and_validate(r, b)
    records = tuple(a.record for a in of(out, Persist))
    first = sent(out, Prepare)[0]
    again = replica(1, records)
    other = block(txs=(b"other",))
    out = recv(again, PrePrepare.create(KEYS[0], CHAIN, 0, other, 0))
    out += again.handle(BlockValidated(other.hash, True, ""), 2)
    assert not sent(out, Prepare)
    out = again.handle(TimerFired("retransmit", again.timers["retransmit"]), 300)
    assert sent(out, Prepare) == [first]


def test_a_replica_rebuilt_after_a_view_change_stays_in_that_view_and_resends_the_same_view_change() -> None:
    r = replica(2)
    r.handle(WorkPending(1, 10), 0)
    out = time_out(r, 100)
    vc = sent(out, ViewChange)[0]
    records = tuple(a.record for a in of(out, Persist))
    again = replica(2, records)
    out = again.handle(WorkPending(1, 10), 200)
    assert again.view == 1 and not again.normal
    assert sent(out, ViewChange) == [vc]
    assert again.vcs[1] == {2: vc}  # it still counts towards the quorum for view 1


def test_with_a_batch_interval_a_partial_block_waits_out_its_rest_and_a_full_one_goes_at_once() -> None:
    r = replica(0)  # PARAMS: a 20 ms batch interval
    out = r.handle(WorkPending(3, 100), 0)  # nothing proposed before: no interval to wait out
    b1 = block(txs=(b"a",))
    assert [a.height for a in of(out, BuildBlock)] == [1]
    r.handle(BlockBuilt(b1), 1)
    assert of(_commit_quorum(r, b1), CommitBlock)
    out = r.handle(WorkPending(3, 100), 5)  # 5 ms after the last proposal: wait the 15 ms left
    assert not of(out, BuildBlock)
    timer = next(a for a in of(out, SetTimer) if a.kind == TIMER_BATCH)
    assert timer.delay_ms == PARAMS.batch_timeout_ms - 5
    out = r.handle(TimerFired(TIMER_BATCH, timer.token), 20)
    build = of(out, BuildBlock)[0]
    b2 = Block.build(chain=CHAIN, height=build.height, parent=build.parent, proposer=VALIDATORS[0], view=build.view,
                     time=20, state_root=ROOT, results_root=ROOT,
                     txs=(b"b", b"c", b"d"))
    out = r.handle(BlockBuilt(b2), 21)
    kinds = [type(a.msg if isinstance(a, Broadcast) else a).__name__ for a in out if isinstance(a, Persist | Broadcast)]
    assert kinds == ["Persist", "PrePrepare", "Persist", "Prepare"]
    assert of(_commit_quorum(r, b2), CommitBlock)
    r.handle(BlockExecuted(1, b1.hash, ROOT), 22)  # block 3 carries the root after block 1
    out = r.handle(WorkPending(PARAMS.max_block_txs, 100), 23)  # a full block does not wait
    assert [(a.height, a.max_txs) for a in of(out, BuildBlock)] == [(3, PARAMS.max_block_txs)]


def test_a_clock_that_went_back_never_makes_a_proposal_wait_longer_than_the_batch_interval() -> None:
    r = replica(0)
    r.handle(WorkPending(1, 10), 1_000)
    b1 = block(txs=(b"a",))
    r.handle(BlockBuilt(b1), 1_001)
    assert of(_commit_quorum(r, b1), CommitBlock)
    out = r.handle(WorkPending(1, 10), 400)  # the driver's clock stepped back by 600 ms
    assert [a.height for a in of(out, BuildBlock)] == [2]


def test_without_a_batch_timer_the_primary_proposes_as_soon_as_the_height_is_open_and_work_is_ready() -> None:
    r = Replica(CHAIN, VALIDATORS, KEYS[0], replace(PARAMS, batch_timeout_ms=0), 0, GENESIS_PARENT, ())
    out = r.handle(WorkPending(1, 10), 0)  # one ready tx, far from a full block: proposed at once
    assert [(a.height, a.max_txs) for a in of(out, BuildBlock)] == [(1, PARAMS.max_block_txs)]
    b1 = block(txs=(b"a",))
    r.handle(BlockBuilt(b1), 1)
    out = r.handle(WorkPending(5, 50), 2)  # work arriving while height 1 is agreed on waits for it
    assert not of(out, BuildBlock)
    assert of(_commit_quorum(r, b1), CommitBlock)
    out = r.handle(WorkPending(5, 50), 3)  # height 2 is open: what arrived meanwhile goes at once
    assert [(a.height, a.parent) for a in of(out, BuildBlock)] == [(2, b1.hash)]
    assert TIMER_BATCH not in r.timers


def test_a_negative_batch_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_timeout_ms must be >= 0"):
        ConsensusParams(batch_timeout_ms=-1)


def test_view_timeouts_double_per_failed_view_up_to_the_cap_and_reset_after_a_commit() -> None:
    assert [PARAMS.view_timeout(k) for k in range(6)] == [100, 200, 400, 800, 800, 800]
    r = replica(1)
    out = r.handle(WorkPending(1, 10), 0)
    assert [a.delay_ms for a in of(out, SetTimer) if a.kind == TIMER_VIEW] == [100]
    assert r.failures == 0
    time_out(r, 100)
    assert r.failures == 1 and r.view == 1
    # the proof of a commit resets the back-off
    b = block()
    cert_sigs = tuple((i, Commit.create(KEYS[i], CHAIN, 0, 1, b.hash, i).sig) for i in range(3))
    cert = CommitCertificate(1, 0, b.hash, cert_sigs)
    out = recv(r, CommitProof(cert), 150)
    assert of(out, NeedSync)[0].target_height == 1
    r.handle(SyncedTo(1, b.hash, cert, ROOT), 160)
    assert r.failures == 0 and r.committed == 1


def test_f_plus_one_view_changes_for_a_higher_view_pull_a_replica_along() -> None:
    r = replica(3)
    vc = [ViewChange.create(KEYS[i], CHAIN, 2, 0, GENESIS_PARENT, None, None, None, i) for i in (1, 2)]
    assert not sent(recv(r, vc[0]), ViewChange)
    out = recv(r, vc[1])
    mine = sent(out, ViewChange)
    assert mine and mine[0].view == 2 and mine[0].index == 3


def test_a_validator_whose_view_timer_runs_out_alone_suspects_the_view_and_keeps_voting_in_it() -> None:
    r = replica(2)
    r.handle(WorkPending(1, 10), 0)
    out = r.handle(TimerFired(TIMER_VIEW, r.timers[TIMER_VIEW]), 100)
    [s] = sent(out, Suspect)
    assert (s.view, s.height, s.index) == (1, 1, 2) and s.verify_sig(VALIDATORS[2])
    assert not sent(out, ViewChange) and not of(out, Persist), "a suspicion binds to nothing: no WAL record"
    assert r.view == 0 and r.normal
    out = recv(r, Suspect.create(KEYS[3], CHAIN, 1, 1, 3), 110)  # f + 1 = 2 suspect: not yet n - f
    assert not sent(out, ViewChange) and r.view == 0
    b = block()
    out = accept_and_validate(r, b)  # the slow primary's proposal arrives: it still votes in view 0
    assert sent(out, Prepare)[0].block_hash == b.hash
    out = r.handle(TimerFired("retransmit", r.timers["retransmit"]), 300)
    assert sent(out, Suspect) == [s], "the suspicion is re-sent until the height moves"


def test_n_minus_f_validators_suspecting_the_view_make_a_validator_leave_it() -> None:
    r = replica(2)
    r.handle(WorkPending(1, 10), 0)
    out = time_out(r, 100)
    [vc] = sent(out, ViewChange)
    assert vc.view == 1 and r.view == 1 and not r.normal


def test_f_plus_one_suspects_pull_a_validator_whose_timer_has_not_run_out_into_the_suspicion() -> None:
    r = replica(3)
    assert not sent(recv(r, Suspect.create(KEYS[1], CHAIN, 1, 1, 1)), Suspect | ViewChange)
    out = recv(r, Suspect.create(KEYS[2], CHAIN, 1, 1, 2))
    assert [(s.view, s.index) for s in sent(out, Suspect)] == [(1, 3)]
    assert [vc.view for vc in sent(out, ViewChange)] == [1], "with its own suspicion n - f suspect: it leaves"


def test_suspicions_of_a_height_that_then_committed_no_longer_count_on_their_own() -> None:
    r = replica(3)
    recv(r, Suspect.create(KEYS[1], CHAIN, 1, 1, 1))
    b = block()
    cert_sigs = tuple((i, Commit.create(KEYS[i], CHAIN, 0, 1, b.hash, i).sig) for i in range(3))
    r.handle(SyncedTo(1, b.hash, CommitCertificate(1, 0, b.hash, cert_sigs), ROOT), 50)
    assert r.committed == 1
    out = recv(r, Suspect.create(KEYS[2], CHAIN, 1, 1, 2))  # late: about height 1
    assert not sent(out, Suspect | ViewChange) and r.view == 0
    out = recv(r, Suspect.create(KEYS[2], CHAIN, 1, 2, 2))  # one validator stuck at height 2: not enough
    assert not sent(out, Suspect | ViewChange) and r.view == 0


def test_a_view_change_that_raced_a_commit_moves_the_validators_whose_suspicions_lapsed() -> None:
    """0, 1 and 3 suspect view 0 at height 1, then height 1 commits before 1's SUSPECT reaches 3; 2 got the
    SUSPECTs first and left for view 1. Its VIEW-CHANGE makes the lapsed suspicions count again, so 3 (and
    likewise the others) follows it instead of leaving it alone in view 1 for good."""
    r = replica(3)
    r.handle(WorkPending(1, 10), 0)
    r.handle(TimerFired(TIMER_VIEW, r.timers[TIMER_VIEW]), 100)  # 3 suspects (1, 1)
    recv(r, Suspect.create(KEYS[0], CHAIN, 1, 1, 0), 110)
    b = block()
    cert_sigs = tuple((i, Commit.create(KEYS[i], CHAIN, 0, 1, b.hash, i).sig) for i in range(3))
    r.handle(SyncedTo(1, b.hash, CommitCertificate(1, 0, b.hash, cert_sigs), ROOT), 120)
    assert r.committed == 1 and r.view == 0 and r.normal
    out = recv(r, Suspect.create(KEYS[1], CHAIN, 1, 1, 1), 130)  # late, kept
    assert not sent(out, ViewChange) and r.view == 0, "lapsed suspicions alone move no one"
    out = recv(r, ViewChange.create(KEYS[2], CHAIN, 1, 0, GENESIS_PARENT, None, None, None, 2), 140)
    assert [vc.view for vc in sent(out, ViewChange)] == [1] and r.view == 1


def test_suspicions_older_than_the_kept_heights_or_ahead_of_ours_are_not_taken() -> None:
    r = replica(3)
    assert recv(r, Suspect.create(KEYS[1], CHAIN, 1, 3, 1)) == [] and r.stats["dropped_window"] == 1
    assert 1 not in r.suspects, "an honest validator suspects at its own height: one far ahead is not kept"


def test_a_validator_whose_suspicion_lapsed_by_catching_up_joins_the_others_suspecting_the_new_height() -> None:
    keys = [sim_key(i) for i in range(7)]  # n = 7: f + 1 = 3 join, n - f = 5 leave
    r = Replica(CHAIN, tuple(k.public_key for k in keys), keys[6], PARAMS, 0, GENESIS_PARENT)
    r.handle(WorkPending(1, 10), 0)
    r.handle(TimerFired(TIMER_VIEW, r.timers[TIMER_VIEW]), 100)  # suspects view 0 at height 1
    for i in (0, 1, 2):  # three already at height 2, stuck there
        recv(r, Suspect.create(keys[i], CHAIN, 1, 2, i), 110)
    b = block()
    cert_sigs = tuple((i, Commit.create(keys[i], CHAIN, 0, 1, b.hash, i).sig) for i in range(5))
    out = r.handle(SyncedTo(1, b.hash, CommitCertificate(1, 0, b.hash, cert_sigs), ROOT), 150)
    assert r.committed == 1 and r.view == 0
    assert [(s.view, s.height) for s in sent(out, Suspect)] == [(1, 2)], "its own suspicion of height 1 lapsed"


def test_forged_or_repeated_suspects_count_for_nothing() -> None:
    r = replica(3)
    good = Suspect.create(KEYS[1], CHAIN, 1, 1, 1)
    recv(r, good)
    assert recv(r, good) == [] and r.stats["duplicate"] == 1
    forged = Suspect(CHAIN, 1, 1, 2, KEYS[2].sign(b"x", b"something else"))
    assert not sent(recv(r, forged), Suspect | ViewChange)
    assert r.stats["invalid_signature"] == 1 and 2 not in r.suspects
    far = Suspect.create(KEYS[2], CHAIN, 1 + PARAMS.future_view_window + 1, 1, 2)
    assert recv(r, far) == [] and r.stats["dropped_window"] == 1
    assert r.view == 0 and r.sizes()["suspects"] <= r.size_bounds()["suspects"]


def test_an_observer_ignores_suspects() -> None:
    r = replica(None)
    for i in (0, 1, 2):
        assert recv(r, Suspect.create(KEYS[i], CHAIN, 1, 1, i)) == []
    assert r.view == 0 and r.suspects == {}


def test_invalid_signatures_are_dropped_and_counted() -> None:
    r = replica(1)
    b = block()
    bad = Prepare(CHAIN, 0, 1, b.hash, 2, b"\x00" * 64)
    assert recv(r, bad) == []
    assert r.stats["invalid_signature"] == 1
    assert len(r.book) == 0


def test_duplicates_are_idempotent_and_conflicting_votes_become_evidence_once() -> None:
    r = replica(1)
    p = Prepare.create(KEYS[2], CHAIN, 0, 1, sha256(b"a"), 2)
    recv(r, p)
    assert recv(r, p) == [] and r.stats["duplicate"] == 1
    q = Prepare.create(KEYS[2], CHAIN, 0, 1, sha256(b"b"), 2)
    ev = of(recv(r, q), Evidence)
    assert len(ev) == 1 and ev[0].index == 2 and {ev[0].first, ev[0].second} == {p, q}
    assert of(recv(r, q), Evidence) == []
    assert r.book.tally("prepare", 0, sha256(b"b")) == {}


def test_messages_for_far_future_views_and_heights_are_bounded_per_sender() -> None:
    r = replica(1)
    for k in range(200):
        recv(r, Prepare.create(KEYS[2], CHAIN, k % 3, 2 + k % 6, sha256(b"%d" % k), 2))
        recv(r, Prepare.create(KEYS[2], CHAIN, 0, 100 + k, sha256(b"%d" % k), 2))
        recv(r, ViewChange.create(KEYS[2], CHAIN, 1 + k, 0, GENESIS_PARENT, None, None, None, 2))
    sizes, bounds = r.sizes(), r.size_bounds()
    assert all(sizes[k] <= bounds[k] for k in sizes)
    assert len(r.buffer) == PARAMS.per_sender_buffer
    assert r.stats["dropped_window"] > 0 and r.stats["dropped_buffer_full"] > 0
    assert r.view == 0  # one validator alone cannot move anyone to another view


def test_n_minus_f_matching_checkpoints_make_a_stable_checkpoint_and_older_votes_are_dropped() -> None:
    r = replica(1)
    h = PARAMS.checkpoint_interval
    bh = sha256(b"block")
    out: list[Any] = []
    for i in (0, 2, 3):
        out += recv(r, Checkpoint.create(KEYS[i], CHAIN, h, bh, ROOT, i))
    stable = of(out, StableCheckpoint)
    assert len(stable) == 1 and stable[0].height == h and stable[0].certificate.verify(VALIDATORS, CHAIN)
    assert of(out, NeedSync)  # the checkpoint is above our height: fetch the blocks
    assert r.ckpts == {}


def test_a_validator_signs_a_checkpoint_after_executing_every_kth_height() -> None:
    r = replica(1)
    b1 = block()
    accept_and_validate(r, b1)
    for i in (0, 2):
        recv(r, Prepare.create(KEYS[i], CHAIN, 0, 1, b1.hash, i))
    for i in (0, 2):
        recv(r, Commit.create(KEYS[i], CHAIN, 0, 1, b1.hash, i))
    out = r.handle(BlockExecuted(1, b1.hash, ROOT), 5)
    assert not sent(out, Checkpoint)
    b2 = block(height=2, parent=b1.hash)
    accept_and_validate(r, b2)
    for i in (0, 2):
        recv(r, Prepare.create(KEYS[i], CHAIN, 0, 2, b2.hash, i))
        recv(r, Commit.create(KEYS[i], CHAIN, 0, 2, b2.hash, i))
    out = r.handle(BlockExecuted(2, b2.hash, ROOT), 6)
    assert sent(out, Checkpoint)[0].height == 2


def test_an_observer_follows_commits_but_never_signs_or_votes() -> None:
    r = replica(None)
    b = block()
    out = recv(r, PrePrepare.create(KEYS[0], CHAIN, 0, b, 0))
    out += r.handle(BlockValidated(b.hash, True, ""), 1)
    for i in (0, 1, 2):
        out += recv(r, Prepare.create(KEYS[i], CHAIN, 0, 1, b.hash, i))
        out += recv(r, Commit.create(KEYS[i], CHAIN, 0, 1, b.hash, i))
    assert not of(out, Persist) and not of(out, Broadcast)
    assert of(out, CommitBlock)[0].block == b


def test_a_replica_that_accepted_a_new_view_comes_back_into_that_view_after_a_restart() -> None:
    vcs = tuple(ViewChange.create(KEYS[i], CHAIN, 1, 0, GENESIS_PARENT, None, None, None, i) for i in (0, 1, 3))
    nv = NewView.create(KEYS[1], CHAIN, 1, 1, vcs, None, 1)
    r = replica(2)
    out = recv(r, nv)
    assert r.view == 1 and r.normal
    records = tuple(a.record for a in of(out, Persist))
    assert records
    again = replica(2, records)
    again.handle(WorkPending(0, 0), 10)
    assert again.view == 1 and again.normal
    b = block(view=1)
    out = recv(again, PrePrepare.create(KEYS[1], CHAIN, 1, b, 1), 11)
    assert of(out, ValidateBlock)
    # a NEW-VIEW whose selection does not match its VIEW-CHANGEs is refused
    forged = NewView.create(KEYS[2], CHAIN, 2, 5, tuple(
        ViewChange.create(KEYS[i], CHAIN, 2, 0, GENESIS_PARENT, None, None, None, i) for i in (0, 1, 3)), None, 2)
    r3 = replica(3)
    recv(r3, forged)
    assert r3.view == 0 and r3.stats["bad_newview"] == 1


def test_a_validator_re_sends_its_old_view_change_to_a_peer_still_collecting_that_view_at_a_limited_rate() -> None:
    r = replica(2)
    r.handle(WorkPending(1, 10), 0)
    out = time_out(r, 100)
    vc1 = sent(out, ViewChange)[0]
    for i in (0, 1):
        recv(r, ViewChange.create(KEYS[i], CHAIN, 2, 0, GENESIS_PARENT, None, None, None, i), 110)
    assert r.view == 2
    peer_vc1 = ViewChange.create(KEYS[3], CHAIN, 1, 0, GENESIS_PARENT, None, None, None, 3)
    out = recv(r, peer_vc1, 120)
    resent = [a for a in out if isinstance(a, Send) and a.msg == vc1]
    assert len(resent) == 1 and resent[0].to == VALIDATORS[3]
    assert not [a for a in recv(r, peer_vc1, 130) if isinstance(a, Send) and a.msg == vc1]
    assert [a for a in recv(r, peer_vc1, 130 + PARAMS.help_interval_ms) if isinstance(a, Send) and a.msg == vc1]


def _commit_quorum(r: Replica, b: Block, view: int = 0) -> list[Any]:
    """COMMITs for `b` from the three other validators: a quorum on their own."""
    out: list[Any] = []
    for i in (i for i in range(4) if i != r.index):
        out += recv(r, Commit.create(KEYS[i], CHAIN, view, b.height, b.hash, i), 2)
    return out


def test_the_primary_proposes_the_next_height_while_the_last_block_still_executes_but_not_two_ahead() -> None:
    r = replica(0)
    built = of(r.handle(WorkPending(1, 10), 0), BuildBlock)
    b1 = block(txs=(b"a",))
    r.handle(BlockBuilt(b1), 21)
    assert of(_commit_quorum(r, b1), CommitBlock) and built
    out = r.handle(WorkPending(10, 100), 30)  # block 1 is stored, not executed: block 2 carries genesis' root
    assert [(a.height, a.parent) for a in of(out, BuildBlock)] == [(2, b1.hash)]
    b2 = block(txs=(b"b",), height=2, parent=b1.hash)
    r.handle(BlockBuilt(b2), 31)
    assert of(_commit_quorum(r, b2), CommitBlock)
    out = r.handle(WorkPending(10, 100), 40)  # block 3 carries the root after block 1: not executed yet
    assert not of(out, BuildBlock)
    out = r.handle(BlockExecuted(1, b1.hash, ROOT), 41)
    assert [a.height for a in of(out, BuildBlock)] == [3]


def test_a_backup_validates_a_proposal_only_once_the_block_its_state_root_follows_is_executed() -> None:
    r = replica(1)
    b1 = block(txs=(b"a",))
    accept_and_validate(r, b1)
    assert of(_commit_quorum(r, b1), CommitBlock)
    b2 = block(view=0, txs=(b"b",), height=2, parent=b1.hash)
    accept_and_validate(r, b2)  # block 2 carries genesis' root: no need to wait for block 1
    assert of(_commit_quorum(r, b2), CommitBlock)
    b3 = block(view=0, txs=(b"c",), height=3, parent=b2.hash)
    out = recv(r, PrePrepare.create(KEYS[0], CHAIN, 0, b3, 0))
    assert not of(out, ValidateBlock)  # its root is the state after block 1, still executing
    out = r.handle(BlockExecuted(1, b1.hash, ROOT), 5)
    assert [a.block for a in of(out, ValidateBlock)] == [b3]
