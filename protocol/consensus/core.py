"""Replica state and the primitives every part of the replica uses: verification with a cache, write-ahead
sends, evidence, catch-up help, timers, restoring from WAL records, and the documented size bounds.

Rule: this module holds state and primitives only; the protocol steps live in `views.py` (view change,
checkpoints) and `replica.py` (normal case, commits, timers). No I/O, no clock, no set iteration.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from protocol.block import Block
from protocol.consensus import events as ev
from protocol.consensus.book import Buffer, SigCache, VoteBook, VoteMsg
from protocol.consensus.certs import CommitCertificate, PreparedCertificate
from protocol.consensus.messages import (
    Checkpoint,
    Commit,
    CommitProof,
    NewView,
    Prepare,
    PrePrepare,
    SignedMessage,
    Suspect,
    ViewChange,
)
from protocol.consensus.params import VC_HISTORY, ConsensusParams, max_faulty, quorum
from protocol.consensus.wal import WalRecord, decode_record
from protocol.crypto import PrivateKey, verify


class ReplicaCore(ABC):
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
        self.vc_history: dict[int, ViewChange] = {}  # own VIEW-CHANGEs of the last VC_HISTORY views
        self.my_nv: NewView | None = None
        self.vcs: dict[int, dict[int, ViewChange]] = {}
        self.failures = 0             # consecutive view changes without a commit
        self.suspects: dict[int, Suspect] = {}  # validator -> its newest SUSPECT (ours included)
        self.my_suspect: Suspect | None = None
        # current height
        self.book = VoteBook(params.per_sender_buffer)
        self.blocks: dict[bytes, Block] = {}
        self.proposal: dict[int, bytes] = {}   # view -> hash of the accepted proposal
        self.valid: dict[bytes, bool | None] = {}  # None = asked the driver
        self.mine: dict[tuple[str, int], VoteMsg] = {}  # own signed (kind, view) at this height
        self.prepared: tuple[PreparedCertificate, Block] | None = None
        self.building = False
        self.batch_due = False
        self.last_build: int | None = None  # `now` of this replica's last BuildBlock (the batch interval)
        self.announce = False         # broadcast our newest commit certificate at the next retransmit
        self.synced_for: int = committed_height
        # elsewhere
        self.buffer = Buffer(params.per_sender_buffer)
        self.ckpts: dict[int, dict[int, Checkpoint]] = {}
        self.stable_height = 0
        self.evidence: list[ev.Evidence] = []
        self.evidence_keys: list[tuple[str, int, int, int]] = []
        self.last_help: dict[int, int] = {}
        self.last_vc_help: dict[int, int] = {}
        self.pending_txs = 0
        self.pending_bytes = 0
        # view catch-up: quorum-backed evidence that validators are in a view above ours
        self.view_hint = committed_cert.view if committed_cert is not None else 0  # a commit certificate's view
        self.peer_views: dict[int, int] = {}  # validator -> highest view of a validly signed vote of it
        self.last_query: int | None = None
        self.timers: dict[str, int] = {}
        self._token = 0
        self._booted = False
        self._restored_nv: NewView | None = None
        self._restore(records)

    @property
    def primary(self) -> int:
        return self.view % self.n

    @property
    def height(self) -> int:
        """The height being agreed on now."""
        return self.committed + 1

    def sizes(self) -> dict[str, int]:
        """Current sizes of every collection that grows with input (checked against `size_bounds`)."""
        return {"votes": len(self.book), "buffer": len(self.buffer),
                "viewchanges": sum(len(v) for v in self.vcs.values()),
                "checkpoints": sum(len(v) for v in self.ckpts.values()), "blocks": len(self.blocks),
                "evidence": len(self.evidence), "sig_cache": len(self._sigs), "help": len(self.last_help) + len(self.last_vc_help),
                "mine": len(self.mine), "valid": len(self.valid), "proposal": len(self.proposal),
                "vc_history": len(self.vc_history), "peer_views": len(self.peer_views),
                "suspects": len(self.suspects)}

    def size_bounds(self) -> dict[str, int]:
        p, n = self.p, self.n
        return {"votes": n * p.per_sender_buffer, "buffer": n * p.per_sender_buffer,
                "viewchanges": n * p.per_sender_buffer,
                "checkpoints": n * (p.future_height_window // p.checkpoint_interval + 1),
                "blocks": n * p.per_sender_buffer + 2, "evidence": p.max_evidence, "sig_cache": p.sig_cache_size,
                "help": 2 * n, "mine": 6, "valid": n * p.per_sender_buffer + 2,
                "proposal": n * p.per_sender_buffer + 1, "vc_history": VC_HISTORY, "peer_views": n,
                "suspects": n}

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
        for r in recs:
            if isinstance(r.msg, ViewChange):
                self._remember_vc(r.msg)
        if vcs and self.index is not None:
            self.my_vc = vcs[-1]
            self.vcs[top] = {self.index: self.my_vc}  # our own VIEW-CHANGE counts towards the quorum
        if top == 0:
            self.normal = True
        elif nvs:
            self._restored_nv = nvs[-1]  # ours, or a received one we persisted before acting on it
            if self._restored_nv.index == self.index:
                self.my_nv = self._restored_nv
            self.normal = False
        else:
            self.normal = False  # wait for this view's NEW-VIEW, or time out to the next view

    def _note_prepared(self, cert: PreparedCertificate, block: Block) -> None:
        if self.prepared is None or cert.view > self.prepared[0].view:
            self.prepared = (cert, block)

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
        self.out.append(ev.Persist.of(WalRecord(msg, prepared, block)))
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

    def _remember_vc(self, vc: ViewChange) -> None:
        self.vc_history[vc.view] = vc
        while len(self.vc_history) > VC_HISTORY:
            del self.vc_history[min(self.vc_history)]

    def _need_sync(self, target: int, signers: Sequence[int]) -> None:
        if target <= self.committed:
            return
        if target > self.sync_target:
            self.sync_target = target
        peers = tuple(self.validators[i] for i in sorted(set(signers)) if i != self.index)
        self.out.append(ev.NeedSync(self.sync_target, peers or tuple(
            v for i, v in enumerate(self.validators) if i != self.index)))

    def _set(self, kind: str, delay: int) -> None:
        self._token += 1
        self.timers[kind] = self._token
        self.out.append(ev.SetTimer(kind, self._token, delay))

    def _cancel(self, kind: str) -> None:
        if self.timers.pop(kind, None) is not None:
            self.out.append(ev.CancelTimer(kind))

    @abstractmethod
    def _enter_height(self) -> None:
        """Adopt what the current view already fixes for the open height."""

    @abstractmethod
    def _replay(self) -> None:
        """Re-feed buffered messages after the height or view moved."""
