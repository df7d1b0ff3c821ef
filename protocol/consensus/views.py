"""View change, NEW-VIEW installation, view catch-up and checkpoints of the replica (PBFT section 4.4
and 4.3).

Rule: a validator whose view timer runs out sends a SUSPECT for the next view and keeps voting in its view;
it leaves (signs a VIEW-CHANGE) when n - f validators suspect the view at its height (or f + 1 signed
VIEW-CHANGEs for higher views), and joins the suspicion of f + 1 (one of them is honest). Once it holds a
VIEW-CHANGE for a higher view, SUSPECTs of the last few heights count too, so a quorum that raced a commit
moves everyone rather than leaving one validator alone ahead (PBFT never goes back a view). After sending
VIEW-CHANGE for w a validator times the new primary only with n - f VIEW-CHANGEs for w in hand; f + 1
VIEW-CHANGEs for higher views pull it along; a NEW-VIEW is accepted only if its selection recomputes from the embedded VIEW-CHANGEs. A validator left behind in an installed view (a restart, a
resync, a stalled loop) learns of it from quorum-backed evidence only (a commit certificate of a higher
view, or validly signed votes of f + 1 validators in higher views) and asks for the NEW-VIEW with a
VIEW-QUERY; it signs nothing that commits it. No I/O, no clock, no set iteration.
"""

from __future__ import annotations

from protocol.block import Block
from protocol.consensus import events as ev
from protocol.consensus.certs import CheckpointCertificate, CommitCertificate
from protocol.consensus.core import ReplicaCore
from protocol.consensus.messages import (
    Checkpoint,
    NewView,
    Suspect,
    ViewChange,
    ViewQuery,
)
from protocol.consensus.params import SUSPECT_KEEP_HEIGHTS
from protocol.consensus.viewchange import Selection, newview_ok, select, viewchange_ok
from protocol.consensus.wal import WalRecord


class ViewChanging(ReplicaCore):
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
                self.stable_height = height
                for hh in sorted(self.ckpts):
                    if hh <= height:
                        del self.ckpts[hh]
                self.out.append(ev.StableCheckpoint(height, bh, root, cert))
                self._need_sync(height, [c.index for c in cs])
                return

    def _on_viewchange(self, vc: ViewChange) -> None:
        w = vc.view
        if w > self.view + self.p.future_view_window:
            self._count("dropped_window")
            return
        if w < self.view or (w == self.view and self.normal):
            self._count("old_view")
            self._help(vc.index, vc.height, w - 1)
            mine = self.vc_history.get(w)
            last = self.last_vc_help.get(vc.index)
            if mine is not None and w < self.view and (last is None or self.now - last >= self.p.help_interval_ms):
                # peers that restarted may have lost our VIEW-CHANGE for w while still collecting a
                # quorum for it: re-send what we signed then (never a new signature), rate-limited
                self.last_vc_help[vc.index] = self.now
                self.out.append(ev.Send(self.validators[vc.index], mine))
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

    # ---- suspicion: leaving a view takes n - f validators ----------------------------------------------

    def _suspect(self, w: int) -> None:
        """Our view timer ran out (in view w - 1, or waiting for its NEW-VIEW): say so, and stay."""
        if self.index is None or self.key is None or w <= self.view:
            return
        s = self.my_suspect
        if s is None or (s.height, s.view) < (self.height, w):
            s = Suspect.create(self.key, self.chain, w, self.height, self.index)
            self.my_suspect = self.suspects[self.index] = s
            self._count("suspects")
        self._send_all(s)
        self._count_suspects()  # our own may complete the quorum within this event

    def _on_suspect(self, s: Suspect) -> None:
        if self.index is None:
            return  # an observer takes no part in view changes
        if s.view <= self.view or s.height < self.height - SUSPECT_KEEP_HEIGHTS:
            self._count("stale")
            return
        if s.view > self.view + self.p.future_view_window or s.height > self.height + 1:
            self._count("dropped_window")  # an honest validator suspects at its own height; ahead, we sync
            return
        old = self.suspects.get(s.index)
        if old is not None and (old.height, old.view) >= (s.height, s.view):
            self._count("duplicate")
            return
        if not self._check_sig(s):
            return
        self.suspects[s.index] = s  # counted by `handle` after every event (`_count_suspects`)

    def _count_suspects(self) -> None:
        """n - f validators suspecting views above ours (a VIEW-CHANGE suspects its view): leave for the
        highest view n - f of them want; f + 1: join the f + 1 highest. SUSPECTs count from our height up,
        or, once a VIEW-CHANGE for a higher view is in, from `SUSPECT_KEEP_HEIGHTS` below: its sender left
        on a quorum (honest) and the suspicions it counted may have lapsed here by a commit that raced them;
        counting them moves us along instead of leaving it alone ahead (a timeout certificate)."""
        if self.index is None:
            return
        want: dict[int, int] = {}
        for w in sorted(self.vcs):
            if w > self.view:
                for idx in sorted(self.vcs[w]):
                    want[idx] = max(want.get(idx, 0), w)
        low = self.height - SUSPECT_KEEP_HEIGHTS if want else self.height
        for idx in sorted(self.suspects):
            s = self.suspects[idx]
            if s.view > self.view and s.height >= low:
                want[idx] = max(want.get(idx, 0), s.view)
        views = sorted(want.values(), reverse=True)
        if len(views) >= self.q:
            self._start_view_change(views[self.q - 1])
        elif len(views) > self.f and want.get(self.index, 0) < views[self.f]:
            self._suspect(views[self.f])

    def _drop_stale_suspects(self) -> None:
        """After a commit or a view change: suspicions of views up to ours, or of heights more than
        `SUSPECT_KEEP_HEIGHTS` below, go; our own stops being re-sent once its height committed."""
        for idx in sorted(self.suspects):
            s = self.suspects[idx]
            if s.view <= self.view or s.height < self.height - SUSPECT_KEEP_HEIGHTS:
                del self.suspects[idx]
        mine = self.my_suspect
        if mine is not None and (mine.index not in self.suspects or mine.height < self.height):
            self.my_suspect = None

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
            self._remember_vc(self.my_vc)
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
        if self.my_nv is not None and self.my_nv.view == w:  # restored: never sign a second NEW-VIEW
            self._send_all(self.my_nv)
            self._install(self.my_nv, Selection(self.my_nv.height, None, None, -1), self.my_nv.block)
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
        if self.index is not None:  # a restart must come back into this view with its constraints
            self.out.append(ev.Persist.of(WalRecord(nv)))
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

    # ---- view catch-up ---------------------------------------------------------------------------------

    def _note_vote_view(self, index: int, view: int) -> None:
        """A validly signed PRE-PREPARE/PREPARE/COMMIT of `index` in `view` (above ours)."""
        if view > self.peer_views.get(index, -1):
            self.peer_views[index] = view

    def _note_cert_view(self, cert: CommitCertificate) -> None:
        """q validators committed in `cert.view`: at least f + 1 honest ones have installed it."""
        self.view_hint = max(self.view_hint, cert.view)

    def view_target(self) -> int:
        """The highest view quorum-backed evidence puts an honest validator in: a commit certificate's view,
        or the (f + 1)-th highest view in which validators signed votes."""
        views = sorted((v for v in self.peer_views.values() if v > self.view), reverse=True)
        return max(self.view_hint, views[self.f] if len(views) > self.f else 0)

    def _maybe_query(self) -> None:
        """Behind in view: ask for the current NEW-VIEW (at most once per help interval)."""
        if self.index is None or self.key is None or self.view_target() <= self.view:
            return
        if self.last_query is not None and self.now - self.last_query < self.p.help_interval_ms:
            return
        self.last_query = self.now
        self._count("view_queries")
        self._send_all(ViewQuery.create(self.key, self.chain, self.view, self.committed, self.index))

    def _on_query(self, q: ViewQuery) -> None:
        """Answer a lagging validator with our NEW-VIEW and/or newest commit certificate (`_help` bounds it)."""
        behind = q.view < self.view and self.normal and self.nv_msg is not None
        last = self.last_help.get(q.index)
        if not (behind or q.height < self.committed) or (last is not None
                                                           and self.now - last < self.p.help_interval_ms):
            self._count("stale")
            return
        if self._check_sig(q):
            self._help(q.index, q.height, q.view)

    def _prune_views(self) -> None:
        """Entering a higher view: forget what only mattered in lower views at this height."""
        v = self.view
        self._drop_stale_suspects()
        self.building = self.batch_due = False
        self._cancel(ev.TIMER_BATCH)
        for idx in sorted(self.peer_views):
            if self.peer_views[idx] <= v:
                del self.peer_views[idx]
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
