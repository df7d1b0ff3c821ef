"""The PBFT replica: one object per node, fed events with the driver's `now_ms`, returning actions.

Normal case at height h = committed + 1 in view v: the primary (v mod n) proposes a block (PRE-PREPARE);
each validator that accepted and validated it signs PREPARE; with n - f matching PREPAREs it is prepared
and the validator signs COMMIT; n - f matching COMMITs (any view) decide it, and they are the commit
certificate. View changes, checkpoints, retransmission and catch-up are described in docs/consensus.md.

Rules: never await, never read a clock, never iterate a set or an arrival-ordered map to decide anything
(sorted keys or the order of already-ordered events only); every own PRE-PREPARE/PREPARE/COMMIT/
VIEW-CHANGE/NEW-VIEW is emitted as `Persist` before the message leaves; a signature for a
(kind, view, height) is made at most once, also across restarts (restored from the WAL records).
"""

from __future__ import annotations

from protocol.block import Block, state_root_height
from protocol.consensus import events as ev
from protocol.consensus.book import ADDED, CONFLICT, DUPLICATE, VoteMsg
from protocol.consensus.certs import CommitCertificate, PreparedCertificate
from protocol.consensus.messages import (
    Checkpoint,
    Commit,
    CommitProof,
    NewView,
    Prepare,
    PrePrepare,
    Suspect,
    ViewChange,
    ViewQuery,
)
from protocol.consensus.viewchange import Selection
from protocol.consensus.views import ViewChanging


class Replica(ViewChanging):
    """Construct with `Replica(chain_id, validators, key, params, committed_height, committed_hash, records,
    committed_cert=None, verifier=crypto.verify)`; then only `handle(event, now_ms)`."""

    def handle(self, event: ev.Event, now_ms: int) -> list[ev.Action]:
        self.now = now_ms
        self.out = []
        if not self._booted:
            self._boot()
        if isinstance(event, ev.MessageReceived):
            self._on_message(event.msg)
        elif isinstance(event, ev.TimerFired):
            self._on_timer(event.kind, event.token)
        elif isinstance(event, ev.WorkPending):
            self.pending_txs, self.pending_bytes = max(0, event.txs), max(0, event.bytes)
        elif isinstance(event, ev.BlockBuilt):
            self._on_built(event.block)
        elif isinstance(event, ev.BlockValidated):
            if event.block_hash in self.valid and self.valid[event.block_hash] is None:
                self.valid[event.block_hash] = event.ok
        elif isinstance(event, ev.BlockExecuted):
            self._on_executed(event)
        elif isinstance(event, ev.SyncedTo):
            self._on_synced(event)
        self._count_suspects()  # after any event: a SUSPECT or VIEW-CHANGE came in, or a commit or sync
        #                         brought us to the height others suspect at
        self._progress()
        self._maybe_query()
        self._arm_timers()
        out, self.out = self.out, []
        return out

    def _boot(self) -> None:
        self._booted = True
        nv = self._restored_nv
        if nv is not None:
            self._install(nv, Selection(nv.height, None, None, -1), nv.block)
            if nv.index == self.index:
                self._send_all(nv)
        elif self.my_vc is not None and not self.normal:
            self._send_all(self.my_vc)
        self._enter_height()

    def _on_message(self, msg: object) -> None:
        if isinstance(msg, CommitProof):
            self._on_proof(msg.cert)
            return
        if not isinstance(msg, PrePrepare | Prepare | Commit | Checkpoint | ViewChange | NewView | ViewQuery | Suspect):
            self._count("bad_message")
            return
        if msg.chain != self.chain or msg.index >= self.n:
            self._count("bad_message")
            return
        if self.index is not None and msg.index == self.index:
            return  # our own message echoed back (or a twin of ours)
        if isinstance(msg, Checkpoint):
            self._on_checkpoint(msg)
        elif isinstance(msg, ViewChange):
            self._on_viewchange(msg)
        elif isinstance(msg, NewView):
            self._on_newview(msg)
        elif isinstance(msg, ViewQuery):
            self._on_query(msg)
        elif isinstance(msg, Suspect):
            self._on_suspect(msg)
        else:
            self._on_vote(msg, verified=False)

    def _on_vote(self, msg: VoteMsg, verified: bool) -> None:
        h = self.height
        if msg.height < h:
            self._count("stale")
            if msg.height < self.committed or not isinstance(msg, Commit):  # late COMMITs are normal
                self._help(msg.index, msg.height - 1, msg.view)
            return
        if msg.height > h + self.p.future_height_window or msg.view > self.view + self.p.future_view_window:
            self._count("dropped_window")
            return
        current = msg.height == h and (msg.view < self.view or (msg.view == self.view and self.normal)
                                       or (msg.view == self.view and isinstance(msg, Commit)))
        status, old = ADDED, None
        if current:
            status, old = self.book.lookup(msg)
            if status == DUPLICATE:
                self._count("duplicate")
                return
        elif self.buffer.contains(msg):
            self._count("duplicate")
            return
        if not verified and not self._check_sig(msg):
            return
        if msg.view > self.view:
            self._note_vote_view(msg.index, msg.view)
        if not current:
            if self.buffer.add(msg) != ADDED:
                self._count("dropped_buffer_full")
            elif isinstance(msg, Commit) and msg.height > h:
                self._future_commit_quorum(msg.height)
            return
        if msg.view < self.view and not isinstance(msg, Commit):
            self._count("old_view")
            self._help(msg.index, msg.height - 1, msg.view)
            return
        if status == CONFLICT and old is not None:
            self._evidence(old, msg, msg.view, msg.height)
            return
        if isinstance(msg, PrePrepare) and not self._proposal_ok(msg):
            self._count("bad_proposal")
            return
        if self.book.add(msg) != ADDED:
            self._count("dropped_sender_limit")
            return
        if isinstance(msg, PrePrepare):
            self._accept(msg.view, msg.block, trusted=False)

    def _proposal_ok(self, pp: PrePrepare) -> bool:
        b = pp.block
        hd = b.header
        if pp.index != pp.view % self.n or hd.chain != self.chain or hd.parent != self.committed_hash:
            return False
        if hd.view != pp.view or hd.proposer != self.validators[pp.index] or b.height != self.height:
            return False
        if b.height < self.nv_start:
            return False
        return not (b.height == self.nv_start and self.nv_block is not None)

    def _accept(self, view: int, block: Block, trusted: bool) -> None:
        if view in self.proposal:
            return
        self.proposal[view] = block.hash
        self.blocks[block.hash] = block
        if trusted:
            self.valid[block.hash] = True
        elif block.hash not in self.valid:
            self.valid[block.hash] = None
            if self._root_known():
                self.out.append(ev.ValidateBlock(block))

    def _future_commit_quorum(self, height: int) -> None:
        for (_view, _hash), sigs in sorted(self.buffer.commits_for(height).items()):
            if len(sigs) >= self.q:
                self._need_sync(height, sorted(sigs))
                return

    def _on_proof(self, cert: CommitCertificate) -> None:
        if cert.height <= self.committed:
            return
        if not cert.verify(self.validators, self.chain, self._verify):
            self._count("invalid_signature")
            return
        self._note_cert_view(cert)
        block = self.blocks.get(cert.block_hash)
        if cert.height == self.height and block is not None:
            self._decide(block, cert)
        else:
            self._need_sync(cert.height, cert.signers())

    def _enter_height(self) -> None:
        """Adopt whatever the current view already fixes for the current height."""
        if self.normal and self.nv_block is not None and self.height == self.nv_start:
            self._accept(self.view, self.nv_block, trusted=True)
        own = self.mine.get((PrePrepare.T, self.view))
        if self.normal and isinstance(own, PrePrepare):
            self._accept(self.view, own.block, trusted=True)

    def _replay(self) -> None:
        for m in self.buffer.drain():
            if isinstance(m, PrePrepare | Prepare | Commit):
                self._on_vote(m, verified=True)

    def _progress(self) -> None:
        if self.index is not None and self.key is not None and self.normal:
            self._maybe_propose()
            self._maybe_vote()
        self._maybe_decide()

    def _root_known(self) -> bool:
        """The state root a block at the current height carries is known: the block it follows from
        (`state_root_height`) is executed. Execution of the last committed block may still run, so
        agreement on this height overlaps it (pipelining, docs/consensus.md)."""
        return self.executed >= state_root_height(self.height)

    def _maybe_propose(self) -> None:
        v, h = self.view, self.height
        if self.index != self.primary or v in self.proposal or self.building or h < self.nv_start:
            return
        if not self._root_known() or self.pending_txs <= 0:
            return
        full = self.pending_txs >= self.p.max_block_txs or self.pending_bytes >= self.p.max_block_bytes
        since = None if self.last_build is None else self.now - self.last_build
        # (a clock that went back counts as a passed interval: a proposal never waits longer than one)
        if full or self.batch_due or since is None or not 0 <= since < self.p.batch_timeout_ms:
            self.building = True
            self.batch_due = False
            self.last_build = self.now
            self._cancel(ev.TIMER_BATCH)
            self.out.append(ev.BuildBlock(h, v, self.committed_hash, self.p.max_block_txs, self.p.max_block_bytes))
        elif ev.TIMER_BATCH not in self.timers:  # a partial block waits out the rest of the batch interval
            self._set(ev.TIMER_BATCH, self.p.batch_timeout_ms - since)

    def _on_built(self, block: Block | None) -> None:
        if block is None:  # nothing to propose after all; the next WorkPending above zero tries again
            if self.building:
                self.building = False
                self.pending_txs = self.pending_bytes = 0
            return
        hd = block.header
        if not self.building or self.key is None or self.index is None or not self.normal:
            return
        if (hd.height, hd.view, hd.parent) != (self.height, self.view, self.committed_hash):
            return
        self.building = False
        if (PrePrepare.T, self.view) in self.mine or self.view in self.proposal:
            return
        pp = PrePrepare.create(self.key, self.chain, self.view, block, self.index)
        self.mine[(PrePrepare.T, self.view)] = pp
        self._persist_send(pp)
        self._accept(self.view, block, trusted=True)

    def _maybe_vote(self) -> None:
        assert self.key is not None and self.index is not None
        v, h = self.view, self.height
        bh = self.proposal.get(v)
        if bh is None or self.valid.get(bh) is not True:
            return
        mine_p = self.mine.get((Prepare.T, v))
        if mine_p is None:
            mine_p = Prepare.create(self.key, self.chain, v, h, bh, self.index)
            self.mine[(Prepare.T, v)] = mine_p
            self._persist_send(mine_p)
        if mine_p.block_hash != bh:
            return
        self.book.add(mine_p)
        sigs = self.book.tally(Prepare.T, v, bh)
        if len(sigs) < self.q or (Commit.T, v) in self.mine:
            return
        cert = PreparedCertificate(h, v, bh, tuple(sorted(sigs.items())))
        block = self.blocks[bh]
        c = Commit.create(self.key, self.chain, v, h, bh, self.index)
        self.mine[(Commit.T, v)] = c
        self._note_prepared(cert, block)
        self._persist_send(c, cert, block)
        self.book.add(c)

    def _maybe_decide(self) -> None:
        for view, bh in self.book.quorums(Commit.T, self.q):
            sigs = self.book.tally(Commit.T, view, bh)
            cert = CommitCertificate(self.height, view, bh, tuple(sorted(sigs.items())))
            block = self.blocks.get(bh) or self.buffer.find_block(bh)
            if block is None:
                if self.synced_for < self.height:
                    self.synced_for = self.height
                    self._need_sync(self.height, sorted(sigs))
                return
            self._decide(block, cert)
            return

    def _decide(self, block: Block, cert: CommitCertificate) -> None:
        self.out.append(ev.CommitBlock(block, cert))
        self._count("committed")
        self.announce = self.index is not None
        self._advance(block.height, block.hash, cert)

    def _advance(self, height: int, block_hash: bytes, cert: CommitCertificate) -> None:
        self.committed, self.committed_hash, self.cert = height, block_hash, cert
        self._note_cert_view(cert)
        self.synced_for = max(self.synced_for, height)
        self.book.clear()
        self.blocks.clear()
        self.proposal.clear()
        self.valid.clear()
        self.mine.clear()
        self.prepared = None
        self.building = self.batch_due = False
        self.pending_txs = self.pending_bytes = 0
        self.failures = 0
        self._drop_stale_suspects()
        self._cancel(ev.TIMER_BATCH)
        if self.normal:
            self._cancel(ev.TIMER_VIEW)
        self._enter_height()
        self._replay()
        self._maybe_decide()

    def _on_executed(self, e: ev.BlockExecuted) -> None:
        if not self.executed < e.height <= self.committed:
            return
        self.executed = e.height
        K = self.p.checkpoint_interval
        if e.height % K == 0 and self.key is not None and self.index is not None:
            c = Checkpoint.create(self.key, self.chain, e.height, e.block_hash, e.state_root, self.index)
            self._send_all(c)
            if e.height > self.stable_height:
                self.ckpts.setdefault(e.height, {})[self.index] = c
                self._check_stable(e.height)
        if self._root_known():
            for bh in sorted(self.valid):
                if self.valid[bh] is None:
                    self.out.append(ev.ValidateBlock(self.blocks[bh]))

    def _on_synced(self, e: ev.SyncedTo) -> None:
        if e.height <= self.committed or e.cert.height != e.height or e.cert.block_hash != e.block_hash:
            return
        self.executed = e.height
        self._advance(e.height, e.block_hash, e.cert)

    def _on_timer(self, kind: str, token: int) -> None:
        if self.timers.get(kind) != token:
            return
        del self.timers[kind]
        if kind == ev.TIMER_BATCH:
            self.batch_due = True
        elif kind == ev.TIMER_VIEW:
            self._suspect(self.view + 1)
        elif kind == ev.TIMER_RETRANSMIT:
            self._retransmit()

    def _open_suspicion(self) -> Suspect | None:
        """Our SUSPECT while it still stands (its view above ours, its height not committed)."""
        s = self.my_suspect
        return s if s is not None and s.view > self.view and s.height >= self.height else None

    def _retransmit(self) -> None:
        s = self._open_suspicion()
        if s is not None:
            self._send_all(s)
        if not self.normal and self.my_vc is not None and self.my_vc.view == self.view:
            self._send_all(self.my_vc)
        if self.normal and self.my_nv is not None and self.my_nv.view == self.view and self.height <= self.nv_start:
            self._send_all(self.my_nv)
        if self.normal:
            for kind in (PrePrepare.T, Prepare.T, Commit.T):
                m = self.mine.get((kind, self.view))
                if m is not None:
                    self._send_all(m)
        if self.sync_target > self.committed:
            self._need_sync(self.sync_target, ())
        self._maybe_query()
        if self.announce and self.cert is not None:
            self.announce = False  # lets observers and lagging validators of an idle chain catch up
            self._send_all(CommitProof(self.cert))

    def _arm_timers(self) -> None:
        if self.normal:
            want_view = self.pending_txs > 0 or bool(self.mine) or bool(self.proposal)
        else:  # PBFT: after our VIEW-CHANGE, wait for n - f of them before timing the new primary
            mine = self.my_vc is not None and self.my_vc.view == self.view
            want_view = not mine or len(self.vcs.get(self.view, {})) >= self.q
        want_view = want_view and self.index is not None
        if want_view and ev.TIMER_VIEW not in self.timers:
            self._set(ev.TIMER_VIEW, self.p.view_timeout(max(0, self.failures - (not self.normal))))
        elif not want_view:
            self._cancel(ev.TIMER_VIEW)
        want_rt = (not self.normal and self.my_vc is not None) or bool(self.mine) or self.announce \
            or self._open_suspicion() is not None \
            or self.sync_target > self.committed or (self.index is not None and self.view_target() > self.view) \
            or (self.normal and self.my_nv is not None
                                                      and self.my_nv.view == self.view
                                                      and self.height <= self.nv_start)
        if want_rt and ev.TIMER_RETRANSMIT not in self.timers:
            self._set(ev.TIMER_RETRANSMIT, self.p.retransmit_ms)
        elif not want_rt:
            self._cancel(ev.TIMER_RETRANSMIT)
