"""Deterministic network of consensus replicas on virtual time: the simulator's driver.

Every replica runs in this process; time is an integer of virtual milliseconds; every random choice comes
from one `random.Random(seed)`; the event queue orders by (time, sequence number). The driver obeys the
contract of protocol/consensus/__init__.py: actions run in order, Persist is durable at once, CommitBlock is
stored at once and answered with WorkPending, then executed in height order after a random delay
(`Faults.execute`, which may exceed a round: heights are agreed on while earlier ones execute) and
answered with BlockExecuted; a crash loses unexecuted work, and a restart re-executes the stored blocks
before the replica boots. BuildBlock/ValidateBlock/NeedSync are answered after a small delay; a block is
valid when its header carries the state root after `state_root_height` of its height. Rule: never iterate a set; the same seed gives the same trace hash.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from protocol import codec
from protocol.block import GENESIS_PARENT, Block, state_root_height
from protocol.consensus import (
    BlockBuilt,
    BlockExecuted,
    BlockValidated,
    Broadcast,
    BuildBlock,
    CancelTimer,
    CommitBlock,
    CommitCertificate,
    ConsensusParams,
    Evidence,
    MessageReceived,
    NeedSync,
    Persist,
    Replica,
    Send,
    SetTimer,
    StableCheckpoint,
    SyncedTo,
    TimerFired,
    ValidateBlock,
    WorkPending,
    compact_records,
    decode_message,
    decode_record,
)
from protocol.crypto import PrivateKey, sha256, verify
from protocol.results import GENESIS_RESULTS

CHAIN = "sim-chain"
GENESIS_ROOT = sha256(b"genesis-state")

SIM_PARAMS = ConsensusParams(max_block_txs=16, max_block_bytes=4096, batch_timeout_ms=0, view_timeout_ms=400,
                             view_timeout_cap_ms=3_200, retransmit_ms=250, checkpoint_interval=10,
                             future_view_window=16, future_height_window=40, per_sender_buffer=32,
                             max_evidence=16, sig_cache_size=2_048, help_interval_ms=200)


_VERIFIED: dict[tuple[bytes, bytes, bytes, bytes], bool] = {}


def shared_verify(public_key: bytes, domain: bytes, message: bytes, sig: bytes) -> bool:
    """`crypto.verify` memoized across all replicas of the process: a pure function, so sharing the
    result changes nothing but the simulator's speed (each signature is checked once, not n times)."""
    key = (public_key, domain, message, sig)
    ok = _VERIFIED.get(key)
    if ok is None:
        if len(_VERIFIED) > 200_000:
            _VERIFIED.clear()
        ok = _VERIFIED[key] = verify(public_key, domain, message, sig)
    return ok


MAX_EVENTS = 2_000_000  # far above any healthy run (a few ten thousand events)


def sim_key(i: int) -> PrivateKey:
    return PrivateKey(sha256(b"sim-validator-%d" % i))


@dataclass
class Faults:
    """Network faults active until `until_ms`; afterwards the network is reliable and prompt."""

    until_ms: int = 0
    loss: float = 0.0          # probability a delivery is lost
    dup: float = 0.0           # probability a delivery is duplicated
    delay: tuple[int, int] = (1, 10)  # base latency range in ms
    jitter: int = 0            # extra random delay (reordering)
    partitions: list[tuple[int, int, list[int]]] = field(default_factory=list)  # (start, end, side A nodes)
    crashes: list[tuple[int, int, int]] = field(default_factory=list)  # (at, restart_at, node)
    skew: dict[int, tuple[int, int]] = field(default_factory=dict)  # node -> timer factor num/den
    execute: tuple[int, int] = (1, 3)  # ms a block's execution takes (always, not only during the faults)
    wipe: list[int] = field(default_factory=list)  # nodes restarted with empty WAL and blocks when safe
    slow: dict[int, tuple[int, int]] = field(default_factory=dict)  # node -> extra delay range (ms) on its links


@dataclass
class Node:
    id: int
    index: int | None          # validator index (twins share one), None for an observer
    key: PrivateKey | None
    honest: bool
    behaviour: str = "honest"
    replica: Replica | None = None
    incarnation: int = 0
    up: bool = True
    wal: list[bytes] = field(default_factory=list)
    blocks: dict[int, tuple[Block, CommitCertificate]] = field(default_factory=dict)
    roots: dict[int, bytes] = field(default_factory=dict)  # state root after each executed height
    height: int = 0            # committed (stored) height
    executed: int = 0          # executed height (<= height)
    exec_at: int = 0           # virtual time the last scheduled execution finishes
    mempool: dict[bytes, int] = field(default_factory=dict)  # tx -> size, submission order
    timers: dict[str, int] = field(default_factory=dict)
    syncing: bool = False
    crash_cut: bool = False
    events: int = 0
    max_sizes: dict[str, int] = field(default_factory=dict)
    evidence: int = 0
    stable: int = 0
    committed_txs: set[bytes] = field(default_factory=set)

    @property
    def committed_hash(self) -> bytes:
        return self.blocks[self.height][0].hash if self.height else GENESIS_PARENT

    def root_at(self, height: int) -> bytes | None:
        """State root after `height`, None while that block is not executed yet."""
        if height > self.executed:
            return None
        return self.roots.get(height, GENESIS_ROOT)


class Sim:
    def __init__(self, seed: int, n: int, faults: Faults, params: ConsensusParams = SIM_PARAMS,
                 observers: int = 0) -> None:
        self.seed, self.n, self.faults, self.params = seed, n, faults, params
        self.rng = random.Random(seed)
        self.keys = [sim_key(i) for i in range(n)]
        self.validators = tuple(k.public_key for k in self.keys)
        self.nodes: list[Node] = [Node(i, i, self.keys[i], True) for i in range(n)]
        for j in range(observers):
            self.nodes.append(Node(n + j, None, None, True))
        self.now = 0
        self.queue: list[tuple[int, int, str, int, int, Any]] = []
        self.seq = 0
        self.processed = 0
        self.storm = False
        self.trace = hashlib.sha256()
        self.trace_lines = 0
        self.tx_counter = 0
        self.byz: dict[int, Any] = {}  # node id -> behaviour object
        self.signed: dict[tuple[str, int, int, int], bytes] = {}
        self.double_signed: list[str] = []
        self.cert_ok: dict[tuple[int, int, bytes, tuple[tuple[int, bytes], ...]], bool] = {}
        self.overlapped = 0  # votes sent for a height while the block before it was still executing
        self.commits: dict[int, list[tuple[int, int, int]]] = {}  # honest node -> own COMMITs (time, view, height)
        self.restarted: dict[int, int] = {}  # node -> time of its last restart
        self.wiped: list[int] = []
        self.lagger = -1  # viewlag: the validator that comes back behind in view

    # ---------------------------------------------------------------- setup

    def add_twin(self, of: int) -> Node:
        twin = Node(len(self.nodes), of, self.keys[of], False, behaviour="twin")
        self.nodes.append(twin)
        self.nodes[of].honest = False
        self.nodes[of].behaviour = "twin"
        return twin

    def start(self) -> None:
        for node in self.nodes:
            self._boot(node)
        for at, restart, nid in self.faults.crashes:
            self.schedule(at, "crash", nid, 0, restart)

    def _boot(self, node: Node) -> None:
        node.incarnation += 1
        node.up, node.timers, node.syncing = True, {}, False
        self._execute_stored(node)  # stored but unexecuted blocks run before the replica starts
        cert = node.blocks[node.height][1] if node.height else None
        records = compact_records(node.wal, node.height)
        node.wal = list(records)
        node.replica = Replica(CHAIN, self.validators, node.key, self.params, node.height, node.committed_hash,
                               records, cert, verifier=shared_verify)
        self.feed(node, WorkPending(len(node.mempool), sum(node.mempool.values())))

    # ---------------------------------------------------------------- queue

    def schedule(self, at: int, kind: str, nid: int, inc: int, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, kind, nid, inc, payload))

    def log(self, *parts: object) -> None:
        self.trace.update(repr((self.now, *parts)).encode())
        self.trace_lines += 1

    def run_until(self, t_end: int, stop: Any = None) -> None:
        while self.queue and self.queue[0][0] <= t_end:
            self.processed += 1
            if self.processed > MAX_EVENTS:
                self.storm = True  # a message storm: reported as a failure instead of running forever
                return
            at, _, kind, nid, inc, payload = heapq.heappop(self.queue)
            self.now = at
            node = self.nodes[nid]
            if kind == "crash":
                self._crash(node, payload)
            elif kind == "restart":
                if node.up:
                    node.crash_cut = False
                    self._down(node)
                self.log("restart", nid)
                if nid in self.faults.wipe and self._may_wipe(node):
                    self._wipe(node)
                self.restarted[nid] = self.now
                self._boot(node)
            elif kind == "call":
                payload()
            elif node.up and inc in (0, node.incarnation):
                self._dispatch(node, kind, payload)
            if stop is not None and stop():
                return
        self.now = max(self.now, t_end)

    def _dispatch(self, node: Node, kind: str, payload: Any) -> None:
        if kind == "msg":
            self.feed(node, MessageReceived(b"", payload))
        elif kind == "timer":
            k, token = payload
            if node.timers.get(k) == token:
                del node.timers[k]
                self.feed(node, TimerFired(k, token))
        elif kind == "event":
            self.feed(node, payload)
        elif kind == "sync":
            self._sync(node, payload)
        elif kind == "work":
            self.feed(node, self._work(node))
        elif kind == "execute" and payload == node.executed + 1 <= node.height:  # else done by a sync
            self._execute_one(node)
            self.feed(node, BlockExecuted(payload, node.blocks[payload][0].hash, node.roots[payload]))

    # ---------------------------------------------------------------- driver

    def feed(self, node: Node, event: Any) -> None:
        assert node.replica is not None
        actions = node.replica.handle(event, self.now)
        node.events += 1
        if node.honest and node.events % 4 == 0:
            sizes = node.replica.sizes()
            for k in sorted(sizes):
                if sizes[k] > node.max_sizes.get(k, 0):
                    node.max_sizes[k] = sizes[k]
        behaviour = self.byz.get(node.id)
        if behaviour is not None:
            actions = behaviour.transform(self, node, actions)
        if node.crash_cut:
            node.crash_cut = False
            persists = [i for i, a in enumerate(actions) if isinstance(a, Persist)]
            cut = self.rng.choice(persists) if persists and self.rng.random() < 0.7 else \
                self.rng.randrange(len(actions) + 1)
            self.log("crash_cut", node.id, cut, len(actions))
            self._execute(node, actions[:cut])
            self._down(node)
            return
        self._execute(node, actions)

    def _execute(self, node: Node, actions: list[Any]) -> None:
        inc = node.incarnation
        for a in actions:
            if isinstance(a, Broadcast):
                if getattr(a.msg, "height", 0) > node.executed + 1 and a.msg.T in ("preprepare", "prepare", "commit"):
                    self.overlapped += 1
                self.transmit(node, a.msg, [m.id for m in self.nodes if m.id != node.id])
            elif isinstance(a, Send):
                self.transmit(node, a.msg, [m.id for m in self.nodes if m.key is not None
                                            and m.key.public_key == a.to and m.id != node.id])
            elif isinstance(a, Persist):
                node.wal.append(a.record)
            elif isinstance(a, CommitBlock):
                self._commit(node, a.block, a.certificate)
                self.schedule(self.now + 1, "work", node.id, inc, None)  # mempool totals at delivery
                lo, hi = self.faults.execute
                node.exec_at = max(node.exec_at, self.now) + self.rng.randint(lo, hi)  # one executor, in order
                self.schedule(node.exec_at, "execute", node.id, inc, a.block.height)
            elif isinstance(a, SetTimer):
                node.timers[a.kind] = a.token
                num, den = self.faults.skew.get(node.id, (1, 1)) if self.now < self.faults.until_ms else (1, 1)
                self.schedule(self.now + max(1, a.delay_ms * num // den), "timer", node.id, inc, (a.kind, a.token))
            elif isinstance(a, CancelTimer):
                node.timers.pop(a.kind, None)
            elif isinstance(a, BuildBlock):
                self.schedule(self.now + 1, "event", node.id, inc, BlockBuilt(self.build(node, a)))
            elif isinstance(a, ValidateBlock):
                want = node.root_at(state_root_height(a.block.height))
                assert want is not None, (node.id, a.block.height, node.executed)  # the replica waits for it
                ok = a.block.header.state_root == want and a.block.header.parent == node.committed_hash
                self.schedule(self.now + self.rng.randint(1, 3), "event", node.id, inc,
                              BlockValidated(a.block.hash, ok, "" if ok else "bad state root"))
            elif isinstance(a, NeedSync):
                if not node.syncing:
                    node.syncing = True
                    self.schedule(self.now + self.rng.randint(5, 20), "sync", node.id, inc, a)
            elif isinstance(a, StableCheckpoint):
                node.stable = max(node.stable, a.height)
            elif isinstance(a, Evidence):
                node.evidence += 1

    def _work(self, node: Node) -> WorkPending:
        return WorkPending(len(node.mempool), sum(node.mempool.values()))

    def build(self, node: Node, a: BuildBlock) -> Block:
        txs = []
        size = 0
        pool = list(node.mempool)
        if node.behaviour == "twin" and node.id >= self.n:
            pool.reverse()  # the twin proposes a different block from the same mempool
        for tx in pool:
            if len(txs) >= a.max_txs or size + len(tx) > a.max_bytes:
                break
            txs.append(tx)
            size += len(tx)
        assert node.key is not None
        root = node.root_at(state_root_height(a.height))
        assert root is not None, (node.id, a.height, node.executed)  # the replica asks only then
        return Block.build(chain=CHAIN, height=a.height, parent=a.parent, proposer=node.key.public_key,
                           view=a.view, time=self.now, state_root=root, results_root=GENESIS_RESULTS, txs=txs)

    def verify_cert(self, cert: CommitCertificate) -> bool:
        key = (cert.height, cert.view, cert.block_hash, cert.sigs)
        ok = self.cert_ok.get(key)
        if ok is None:
            ok = self.cert_ok[key] = cert.verify(self.validators, CHAIN)
        return ok

    def _execute_one(self, node: Node) -> None:
        h = node.executed + 1
        prev = node.root_at(h - 1)
        assert prev is not None
        node.roots[h] = sha256(prev + node.blocks[h][0].hash)
        node.executed = h
        self.log("executed", node.id, h)

    def _execute_stored(self, node: Node) -> None:
        while node.executed < node.height:
            self._execute_one(node)

    def _commit(self, node: Node, block: Block, cert: CommitCertificate) -> None:
        h = block.height
        assert h == node.height + 1, (node.id, h, node.height)
        node.blocks[h] = (block, cert)
        node.height = h
        for tx in block.txs:
            node.mempool.pop(tx, None)
            node.committed_txs.add(tx)
        self.log("commit", node.id, h, block.hash[:6])

    def _sync(self, node: Node, need: NeedSync) -> None:
        node.syncing = False
        sources = [m for m in self.nodes if m.up and m.key is not None and m.key.public_key in need.peers
                   and m.height > node.height and self.reachable(m.id, node.id)]
        if not sources:
            return
        src = max(sources, key=lambda m: (m.height, -m.id))
        top = min(src.height, max(need.target_height, node.height + 1))
        last = None
        for h in range(node.height + 1, top + 1):
            block, cert = src.blocks[h]
            if block.header.parent != node.committed_hash or cert.block_hash != block.hash \
                    or not self.verify_cert(cert):
                break
            self._commit(node, block, cert)
            last = (block, cert)
        if last is not None:
            self._execute_stored(node)  # SyncedTo means stored and executed
            self.log("synced", node.id, node.height)
            self.feed(node, SyncedTo(node.height, last[0].hash, last[1], node.roots[node.height]))
            if node.up:
                self.feed(node, self._work(node))

    # ---------------------------------------------------------------- network

    def reachable(self, a: int, b: int) -> bool:
        for start, end, side in self.faults.partitions:
            if start <= self.now < end and ((a in side) != (b in side)):
                return False
        return True

    def transmit(self, src: Node, msg: Any, dests: list[int]) -> None:
        value = msg.to_value()
        decoded = decode_message(codec.decode(codec.encode(value), codec.Limits(max_bytes=8 << 20, max_bin=1 << 20)))
        self.log("send", src.id, msg.T, getattr(msg, "sig", b"")[:4], len(dests))
        if src.honest and hasattr(msg, "sig") and msg.index == src.index:  # own, not relayed
            if msg.T not in ("viewquery", "suspect"):  # these commit their signer to nothing: re-signing is fine
                self._check_single_signature(src, msg)
            if msg.T == "commit":
                self.commits.setdefault(src.id, []).append((self.now, msg.view, msg.height))
        f = self.faults
        faulty = self.now < f.until_ms
        for d in dests:
            if not self.reachable(src.id, d):
                continue
            copies = 1
            if faulty:
                if self.rng.random() < f.loss:
                    continue
                if self.rng.random() < f.dup:
                    copies = 2
            for _ in range(copies):
                lo, hi = f.delay if faulty else (1, 10)
                delay = self.rng.randint(lo, hi) + (self.rng.randint(0, f.jitter) if faulty and f.jitter else 0)
                extra = (f.slow.get(src.id) or f.slow.get(d)) if faulty else None
                if extra is not None:
                    delay += self.rng.randint(*extra)
                self.schedule(self.now + delay, "msg", d, 0, decoded)

    def _check_single_signature(self, src: Node, msg: Any) -> None:
        """An honest validator never signs two different things for one (kind, view, height)."""
        key = (msg.T, msg.index, getattr(msg, "view", -1), getattr(msg, "height", -1))
        if msg.T == "viewchange":
            key = (msg.T, msg.index, msg.view, -1)
        signed = msg.signed_bytes()
        first = self.signed.setdefault(key, signed)
        if first != signed:
            self.double_signed.append(f"node {src.id} signed two different {msg.T} for {key[2:]}")

    def _crash(self, node: Node, restart_at: int) -> None:
        if not node.up:
            return
        node.crash_cut = True  # the next handled event loses the tail of its actions
        self.schedule(restart_at, "restart", node.id, 0, None)

    def _may_wipe(self, node: Node) -> bool:
        """Wiping a validator's WAL loses what it signed; the simulator wipes only one that signed nothing
        but view-0 votes at heights every other honest node has committed (so it can never contradict
        itself), and never the view-0 primary."""
        others = [m.height for m in self.nodes if m.honest and m.up and m.id != node.id]
        records = [decode_record(r) for r in node.wal]
        return node.index != 0 and bool(others) and all(
            r.view == 0 and getattr(r.msg, "height", 0) <= min(others) for r in records)

    def _wipe(self, node: Node) -> None:
        self.log("wipe", node.id)
        self.wiped.append(node.id)
        node.wal, node.blocks, node.roots, node.height, node.executed = [], {}, {}, 0, 0
        node.committed_txs = set()

    def _down(self, node: Node) -> None:
        self.log("down", node.id)
        node.up = False
        node.incarnation += 1
        node.mempool.clear()
        node.timers.clear()

    # ---------------------------------------------------------------- clients

    def submit(self, count: int, tag: str) -> list[bytes]:
        txs = []
        for _ in range(count):
            self.tx_counter += 1
            txs.append(b"%s-%d-%d" % (tag.encode(), self.seed, self.tx_counter))
        for node in self.nodes:
            if node.up:
                for tx in txs:
                    node.mempool[tx] = len(tx)
                self.feed(node, self._work(node))
        return txs
