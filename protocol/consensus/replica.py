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

from collections.abc import Callable, Sequence

from protocol.block import Block
from protocol.consensus import events as ev
from protocol.consensus.book import ADDED, CONFLICT, DUPLICATE, Buffer, SigCache, VoteBook, VoteMsg
from protocol.consensus.certs import CheckpointCertificate, CommitCertificate, PreparedCertificate
from protocol.consensus.messages import (
    Checkpoint,
    Commit,
    CommitProof,
    NewView,
    Prepare,
    PrePrepare,
    SignedMessage,
    ViewChange,
)
from protocol.consensus.params import ConsensusParams, max_faulty, quorum
from protocol.consensus.viewchange import Selection, newview_ok, select, viewchange_ok
from protocol.consensus.wal import WalRecord, decode_record
from protocol.crypto import PrivateKey, verify


class Replica:
    def __init__(self, chain_id: str, validators: tuple[bytes, ...], key: PrivateKey | None,
                 params: ConsensusParams, committed_height: int, committed_hash: bytes,
                 records: Sequence[bytes] = (), committed_cert: CommitCertificate | None = None,
                 verifier: Callable[[bytes, bytes, bytes, bytes], bool] = verify) -> None:
        """`verifier(public_key, domain, message, signature)` defaults to `protocol.crypto.verify`; a driver
        may pass a memoized equivalent shared with other components."""
        if committed_height > 0 and (committed_cert is None or committed_cert.height != committed_height):
            raise ValueError("a replica above height 0 needs the commit certificate of its last block")
        self.chain = chain_id
        self.validators = tuple(validators)
        self.n = len(self.validators)
        self.f = max_faulty(self.n)
        self.q = quorum(self.n)
        self.p = params
        self.key = key
        self.index: int | None = None
        if key is not None and key.public_key in self.validators:
            self.index = self.validators.index(key.public_key)
        self.now = 0
        self.out: list[ev.Action] = []
        self.stats: dict[str, int] = {}
        self._sigs = SigCache(params.sig_cache_size)
        self._crypto_verify = verifier
        # chain position
        self.committed = committed_height
        self.committed_hash = committed_hash
        self.cert: CommitCertificate | None = committed_cert
        self.executed = committed_height
        self.sync_target = committed_height
        # view
        self.view = 0
        self.normal = True            # view installed (view 0, or its NEW-VIEW accepted)
        self.nv_start = 0             # fresh proposals in this view only at heights >= nv_start
        self.nv_block: Block | None = None
        self.nv_msg: NewView | None = None
        self.my_vc: ViewChange | None = None
        self.my_nv: NewView | None = None
        self.vcs: dict[int, dict[int, ViewChange]] = {}
        self.failures = 0             # consecutive view changes without a commit
        # current height
        self.book = VoteBook(params.per_sender_buffer)
        self.blocks: dict[bytes, Block] = {}
        self.proposal: dict[int, bytes] = {}   # view -> hash of the accepted proposal
        self.valid: dict[bytes, bool | None] = {}  # None = asked the driver
        self.mine: dict[tuple[str, int], VoteMsg] = {}  # own signed (kind, view) at this height
        self.prepared: tuple[PreparedCertificate, Block] | None = None
        self.building = False
        self.batch_due = False
        self.announce = False         # broadcast our newest commit certificate at the next retransmit
        self.synced_for: int = committed_height
        # elsewhere
        self.buffer = Buffer(params.per_sender_buffer)
        self.ckpts: dict[int, dict[int, Checkpoint]] = {}
        self.stable_height = 0
        self.stable_cert: CheckpointCertificate | None = None
        self.evidence: list[ev.Evidence] = []
        self.evidence_keys: list[tuple[str, int, int, int]] = []
        self.last_help: dict[int, int] = {}
        self.pending_txs = 0
        self.pending_bytes = 0
        self.timers: dict[str, int] = {}
        self._token = 0
        self._booted = False
        self._restored_nv: NewView | None = None
        self._restore(records)

    # ------------------------------------------------------------------ public

    @property
    def primary(self) -> int:
        return self.view % self.n

    @property
    def height(self) -> int:
        """The height being agreed on now."""
        return self.committed + 1

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
        self._progress()
        self._arm_timers()
        out, self.out = self.out, []
        return out

    def sizes(self) -> dict[str, int]:
        """Current sizes of every collection that grows with input (checked against `size_bounds`)."""
        return {"votes": len(self.book), "buffer": len(self.buffer),
                "viewchanges": sum(len(v) for v in self.vcs.values()),
                "checkpoints": sum(len(v) for v in self.ckpts.values()), "blocks": len(self.blocks),
                "evidence": len(self.evidence), "sig_cache": len(self._sigs), "help": len(self.last_help),
                "mine": len(self.mine), "valid": len(self.valid), "proposal": len(self.proposal)}

    def size_bounds(self) -> dict[str, int]:
        p, n = self.p, self.n
        return {"votes": n * p.per_sender_buffer, "buffer": n * p.per_sender_buffer,
                "viewchanges": n * p.per_sender_buffer,
                "checkpoints": n * (p.future_height_window // p.checkpoint_interval + 1),
                "blocks": n * p.per_sender_buffer + 2, "evidence": p.max_evidence, "sig_cache": p.sig_cache_size,
                "help": n, "mine": 6, "valid": n * p.per_sender_buffer + 2,
                "proposal": n * p.per_sender_buffer + 1}

    # ------------------------------------------------------------------ restore

    def _restore(self, records: Sequence[bytes]) -> None:
        recs = [decode_record(r) for r in records]
        if not recs:
            return
        top = max(r.view for r in recs)
        self.view = top
        h = self.height
        for r in recs:
            m = r.msg
            if isinstance(m, ViewChange | NewView):
                continue
            if m.height == h and m.view == top:
                self.mine[(m.T, m.view)] = m
                if isinstance(m, PrePrepare):
                    self.blocks[m.block.hash] = m.block
                else:
                    self.book.add(m)
            if m.height == h and isinstance(m, Commit) and r.prepared is not None and r.block is not None:
                self._note_prepared(r.prepared, r.block)
        at_top = [r for r in recs if r.view == top]
        nvs = [r.msg for r in at_top if isinstance(r.msg, NewView)]
        vcs = [r.msg for r in at_top if isinstance(r.msg, ViewChange)]
        if vcs:
            self.my_vc = vcs[-1]
        if top == 0:
            self.normal = True
        elif nvs:
            self.my_nv = self._restored_nv = nvs[-1]
            self.normal = False
        else:
            self.normal = False  # wait for this view's NEW-VIEW, or time out to the next view

    def _boot(self) -> None:
        self._booted = True
        nv = self._restored_nv
        if nv is not None:
            self._install(nv, Selection(nv.height, None, None, -1), nv.block)
            self._send_all(nv)
        elif self.my_vc is not None and not self.normal:
            self._send_all(self.my_vc)
        self._enter_height()

    # ------------------------------------------------------------------ helpers

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _verify(self, index: int, domain: bytes, message: bytes, sig: bytes) -> bool:
        if not 0 <= index < self.n:
            return False
        key = (index, domain + message, sig)
        hit = self._sigs.get(key)
        if hit is None:
            hit = self._crypto_verify(self.validators[index], domain, message, sig)
            self._sigs.put(key, hit)
        return hit

    def _check_sig(self, msg: SignedMessage) -> bool:
        if self._verify(msg.index, msg.domain(), msg.signed_bytes(), msg.sig):
            return True
        self._count("invalid_signature")
        return False

    def _send_all(self, msg: SignedMessage | CommitProof) -> None:
        self.out.append(ev.Broadcast(msg))

    def _persist_send(self, msg: PrePrepare | Prepare | Commit | ViewChange | NewView,
                      prepared: PreparedCertificate | None = None, block: Block | None = None) -> None:
        self.out.append(ev.Persist(WalRecord(msg, prepared, block).encode()))
        self.out.append(ev.Broadcast(msg))

    def _evidence(self, first: SignedMessage, second: SignedMessage, view: int, height: int) -> None:
        key = (first.T, view, height, first.index)
        if key in self.evidence_keys:
            return
        self._count("conflicting_signatures")
        item = ev.Evidence(first.index, first, second)
        self.evidence.append(item)
        self.evidence_keys.append(key)
        if len(self.evidence) > self.p.max_evidence:
            del self.evidence[0]
            del self.evidence_keys[0]
        self.out.append(item)

    def _help(self, index: int, their_height: int, their_view: int) -> None:
        """Send a lagging validator our latest commit certificate and/or this view's NEW-VIEW."""
        last = self.last_help.get(index)
        if last is not None and self.now - last < self.p.help_interval_ms:
            return
        to = self.validators[index]
        sent = False
        if self.cert is not None and their_height < self.committed:
            self.out.append(ev.Send(to, CommitProof(self.cert)))
            sent = True
        if their_view < self.view and self.normal and self.nv_msg is not None:
            self.out.append(ev.Send(to, self.nv_msg))
            sent = True
        if sent:
            self.last_help[index] = self.now

    def _need_sync(self, target: int, signers: Sequence[int]) -> None:
        if target <= self.committed:
            return
        if target > self.sync_target:
            self.sync_target = target
        peers = tuple(self.validators[i] for i in sorted(set(signers)) if i != self.index)
        self.out.append(ev.NeedSync(self.sync_target, peers or tuple(
            v for i, v in enumerate(self.validators) if i != self.index)))

    # ------------------------------------------------------------------ messages

    def _on_message(self, msg: object) -> None:
        if isinstance(msg, CommitProof):
            self._on_proof(msg.cert)
            return
        if not isinstance(msg, PrePrepare | Prepare | Commit | Checkpoint | ViewChange | NewView):
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
            if self.executed >= self.committed:
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
        block = self.blocks.get(cert.block_hash)
        if cert.height == self.height and block is not None:
            self._decide(block, cert)
        else:
            self._need_sync(cert.height, cert.signers())

    def _on_checkpoint(self, c: Checkpoint) -> None:
        K = self.p.checkpoint_interval
        if c.height % K != 0 or c.height <= self.stable_height:
            self._count("stale")
            return
        if c.height > self.committed + self.p.future_height_window:
            self._count("dropped_window")
            return
        at = self.ckpts.get(c.height, {})
        old = at.get(c.index)
        if old is not None and old.sig == c.sig:
            self._count("duplicate")
            return
        if not self._check_sig(c):
            return
        if old is not None:
            if (old.block_hash, old.state_root) != (c.block_hash, c.state_root):
                self._evidence(old, c, 0, c.height)
            return
        self.ckpts.setdefault(c.height, {})[c.index] = c
        self._check_stable(c.height)

    def _check_stable(self, height: int) -> None:
        at = self.ckpts.get(height, {})
        groups: dict[tuple[bytes, bytes], list[Checkpoint]] = {}
        for idx in sorted(at):
            groups.setdefault((at[idx].block_hash, at[idx].state_root), []).append(at[idx])
        for (bh, root), cs in sorted(groups.items()):
            if len(cs) >= self.q and height > self.stable_height:
                cert = CheckpointCertificate(height, bh, root, tuple((c.index, c.sig) for c in cs))
                self.stable_height, self.stable_cert = height, cert
                for hh in sorted(self.ckpts):
                    if hh <= height:
                        del self.ckpts[hh]
                self.out.append(ev.StableCheckpoint(height, bh, root, cert))
                self._need_sync(height, [c.index for c in cs])
                return

    # ------------------------------------------------------------------ view change

    def _on_viewchange(self, vc: ViewChange) -> None:
        w = vc.view
        if w > self.view + self.p.future_view_window:
            self._count("dropped_window")
            return
        if w < self.view or (w == self.view and self.normal):
            self._count("old_view")
            self._help(vc.index, vc.height, w - 1)
            return
        old = self.vcs.get(w, {}).get(vc.index)
        if old is not None and old.sig == vc.sig:
            self._count("duplicate")
            return
        if not self._check_sig(vc):
            return
        if old is not None:
            self._evidence(old, vc, w, old.height + 1)
            return
        if not viewchange_ok(vc, self.validators, self.chain, self._verify, need_block=True):
            self._count("bad_viewchange")
            return
        if sum(1 for v in self.vcs.values() if vc.index in v) >= self.p.per_sender_buffer:
            self._count("dropped_sender_limit")
            return
        self.vcs.setdefault(w, {})[vc.index] = vc
        if vc.height > self.committed and vc.cert is not None:
            self._need_sync(vc.height, vc.cert.signers())
        elif vc.height < self.committed:
            self._help(vc.index, vc.height, w)
        self._pull_along()
        self._maybe_new_view()

    def _pull_along(self) -> None:
        """f + 1 validators asking for views above ours: at least one is honest, so follow them."""
        if self.index is None:
            return
        highest: dict[int, int] = {}
        for w in sorted(self.vcs):
            if w > self.view:
                for idx in self.vcs[w]:
                    highest[idx] = w
        views = sorted(highest.values(), reverse=True)
        if len(views) >= self.f + 1:
            self._start_view_change(views[self.f])

    def _start_view_change(self, w: int) -> None:
        if self.index is None or self.key is None or w <= self.view:
            return
        self.view, self.normal = w, False
        self.nv_msg = self.my_nv = None
        self.nv_block = None
        self._prune_views()
        if self.my_vc is None or self.my_vc.view != w:
            pc, pb = self.prepared if self.prepared is not None else (None, None)
            self.my_vc = ViewChange.create(self.key, self.chain, w, self.committed, self.committed_hash, self.cert,
                                           pc, pb, self.index)
            self._persist_send(self.my_vc)
        else:
            self._send_all(self.my_vc)
        self.vcs.setdefault(w, {})[self.index] = self.my_vc
        self._cancel(ev.TIMER_VIEW)  # re-armed by _arm_timers once n - f VIEW-CHANGEs for w are in
        self.failures += 1
        self._count("view_changes")
        self._maybe_new_view()
        self._replay()

    def _maybe_new_view(self) -> None:
        w = self.view
        if self.normal or self.index != w % self.n or self.key is None:
            return
        got = self.vcs.get(w, {})
        if len(got) < self.q:
            return
        vcs = [got[i] for i in sorted(got)]
        sel = select(vcs)
        block: Block | None = None
        if sel.prepared is not None:
            block = got[sel.source].block
        nv = NewView.create(self.key, self.chain, w, sel.start, tuple(vc.without_block() for vc in vcs), block,
                            self.index)
        self.my_nv = nv
        self._persist_send(nv)
        self._install(nv, sel, block)

    def _on_newview(self, nv: NewView) -> None:
        w = nv.view
        if w < self.view or (w == self.view and self.normal):
            self._count("old_view")
            return
        sel = newview_ok(nv, self.validators, self.chain, self._verify)
        if sel is None:
            self._count("bad_newview")
            return
        self._install(nv, sel, nv.block)

    def _install(self, nv: NewView, sel: Selection, block: Block | None) -> None:
        self.view, self.normal = nv.view, True
        self.nv_msg, self.nv_start, self.nv_block = nv, sel.start, block
        self._prune_views()
        for w in sorted(self.vcs):
            if w == nv.view:
                del self.vcs[w]
        self._cancel(ev.TIMER_VIEW)
        if self.committed < sel.start - 1:
            signers = sel.base_cert.signers() if sel.base_cert is not None else ()
            self._need_sync(sel.start - 1, signers)
        self._enter_height()
        self._replay()

    def _prune_views(self) -> None:
        """Entering a higher view: forget what only mattered in lower views at this height."""
        v = self.view
        self.building = self.batch_due = False
        self._cancel(ev.TIMER_BATCH)
        for w in sorted(self.vcs):
            if w < v:
                del self.vcs[w]
        for key in sorted(self.mine):
            if key[1] < v:
                del self.mine[key]
        for w in sorted(self.proposal):
            if w < v:
                del self.proposal[w]
        self.book.drop_below(v)
        keep = self.book.hashes() | set(self.proposal.values())
        if self.prepared is not None:
            keep.add(self.prepared[0].block_hash)
        for bh in sorted(self.blocks):
            if bh not in keep:
                del self.blocks[bh]
        for bh in sorted(self.valid):
            if bh not in keep:
                del self.valid[bh]

    # ------------------------------------------------------------------ height progress

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

    def _maybe_propose(self) -> None:
        v, h = self.view, self.height
        if self.index != self.primary or v in self.proposal or self.building or h < self.nv_start:
            return
        if self.executed < self.committed or self.pending_txs <= 0:
            return
        full = self.pending_txs >= self.p.max_block_txs or self.pending_bytes >= self.p.max_block_bytes
        if full or self.batch_due:
            self.building = True
            self.batch_due = False
            self._cancel(ev.TIMER_BATCH)
            self.out.append(ev.BuildBlock(h, v, self.committed_hash, self.p.max_block_txs, self.p.max_block_bytes))
        elif ev.TIMER_BATCH not in self.timers:
            self._set(ev.TIMER_BATCH, self.p.batch_timeout_ms)

    def _on_built(self, block: Block) -> None:
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

    def _note_prepared(self, cert: PreparedCertificate, block: Block) -> None:
        if self.prepared is None or cert.view > self.prepared[0].view:
            self.prepared = (cert, block)

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
        if self.executed >= self.committed:
            for bh in sorted(self.valid):
                if self.valid[bh] is None:
                    self.out.append(ev.ValidateBlock(self.blocks[bh]))

    def _on_synced(self, e: ev.SyncedTo) -> None:
        if e.height <= self.committed or e.cert.height != e.height or e.cert.block_hash != e.block_hash:
            return
        self.executed = e.height
        self._advance(e.height, e.block_hash, e.cert)

    # ------------------------------------------------------------------ timers

    def _set(self, kind: str, delay: int) -> None:
        self._token += 1
        self.timers[kind] = self._token
        self.out.append(ev.SetTimer(kind, self._token, delay))

    def _cancel(self, kind: str) -> None:
        if self.timers.pop(kind, None) is not None:
            self.out.append(ev.CancelTimer(kind))

    def _on_timer(self, kind: str, token: int) -> None:
        if self.timers.get(kind) != token:
            return
        del self.timers[kind]
        if kind == ev.TIMER_BATCH:
            self.batch_due = True
        elif kind == ev.TIMER_VIEW:
            self._start_view_change(self.view + 1)
        elif kind == ev.TIMER_RETRANSMIT:
            self._retransmit()

    def _retransmit(self) -> None:
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
            or self.sync_target > self.committed or (self.normal and self.my_nv is not None
                                                      and self.my_nv.view == self.view
                                                      and self.height <= self.nv_start)
        if want_rt and ev.TIMER_RETRANSMIT not in self.timers:
            self._set(ev.TIMER_RETRANSMIT, self.p.retransmit_ms)
        elif not want_rt:
            self._cancel(ev.TIMER_RETRANSMIT)
