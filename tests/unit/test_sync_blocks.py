"""Block sync between real P2P nodes on loopback: ordered delivery, certified blocks, lying peers replaced.

Each node has its own LevelDB in a tmp dir, a `SyncService` and a test driver that stores and executes
delivered blocks (a deterministic change set per block), so roots can be compared across nodes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry

from node.chain import ChainStatus, ChainStore
from node.genesis import Genesis, Validator
from node.p2p import P2P, P2PSettings, PeerAddr
from node.sync import SnapshotPlan, SyncEnv, SyncService, SyncSettings
from protocol import codec
from protocol.block import Block, state_root_height
from protocol.consensus import CheckpointCertificate, CommitCertificate, checkpoint_bytes, vote_bytes
from protocol.crypto import DOMAIN_CHECKPOINT, DOMAIN_CONSENSUS, PrivateKey, sha256
from protocol.ledger import keys
from protocol.ledger.results import index_entries, parse_results_roots
from protocol.ledger.store import enc
from protocol.results import GENESIS_RESULTS, NO_EVENTS, results_root
from storage import schema
from storage.blocks import BlockStore, tx_hash_of
from storage.db import Database
from storage.state import StateStore
from storage.wal import ConsensusWal

CHAIN = "sync-test"
VALS = [PrivateKey(bytes([40 + i]) * 32) for i in range(4)]
GENESIS = Genesis(chain_id=CHAIN, genesis_time=0,
                  validators=tuple(Validator(f"v{i}", k.public_key) for i, k in enumerate(VALS)),
                  consensus={"checkpoint_interval": 5}, ledger={}, hash=sha256(b"sync-test genesis"))
GENESIS_STATE = {b"acct/%05d" % i: b"balance-%d" % (i * 7919) for i in range(300)}
NET = P2PSettings(handshake_timeout=2.0, backoff_initial=0.02, backoff_max=0.2, ping_interval=0.5, idle_timeout=10.0)
FAST = SyncSettings(batch_blocks=8, request_timeout=2.0, stall_timeout=8.0, retry_interval=0.2,
                    busy_backoff=0.05, timeout_penalty=0.5, misbehave_penalty=30.0, manifest_timeout=1.0,
                    chunk_bytes=1024, history_batch_blocks=6)


def sign_commit(block: Block, signers: Sequence[int] = (0, 1, 2), view: int = 0) -> CommitCertificate:
    h, bh = block.height, block.hash
    sigs = tuple((i, VALS[i].sign(DOMAIN_CONSENSUS, vote_bytes("commit", CHAIN, view, h, bh, i))) for i in signers)
    return CommitCertificate(h, view, bh, sigs)


def sign_checkpoint(height: int, block_hash: bytes, root: bytes) -> CheckpointCertificate:
    sigs = tuple((i, VALS[i].sign(DOMAIN_CHECKPOINT, checkpoint_bytes(CHAIN, height, block_hash, root, i)))
                 for i in (0, 1, 3))
    return CheckpointCertificate(height, block_hash, root, sigs)


def fake_receipts(block: Block) -> tuple[bytes, ...]:
    """The 'receipts' of a block in these tests: one ok receipt per tx with one event that echoes the tx
    twice (so results can outgrow their block, as memos can)."""
    out = []
    for i, raw in enumerate(block.txs):
        th = tx_hash_of(raw)
        out.append(enc({"tx_hash": th, "status": "ok", "code": "ok", "message": "", "events": [
            {"height": block.height, "index": i, "kind": "test_moved", "tx": th, "accounts": [sha256(raw)],
             "data": {"n": i, "memo": raw, "copy": raw}}]}))
    return tuple(out)


def fake_results_root(block: Block) -> bytes:
    return results_root(fake_receipts(block), NO_EVENTS)


def changes_for(block: Block, before: bytes) -> dict[bytes, bytes | None]:
    """The deterministic 'execution' of a block in these tests: its derived indexes, and the results roots
    of the block before (`before`) and of this one kept in state, as the ledger keeps them."""
    h = block.height
    receipts = fake_receipts(block)
    return {b"height/%08d" % h: block.hash, b"acct/%05d" % (h * 37 % 300): b"v%d" % h,
            keys.RESULTS: enc([before, fake_results_root(block)]), **dict(index_entries(h, receipts, NO_EVENTS))}


def commit_fake(blocks: BlockStore, block: Block, cert: bytes, executed: Block | None = None,
                raw: bytes | None = None) -> None:
    """Commit `block` with the results of executing `executed` (default: itself), as a node would."""
    done = executed or block
    before = blocks.results_root_at(done.height - 1) or GENESIS_RESULTS
    blocks.commit(block, cert, fake_receipts(block), blocks.state.stage(changes_for(done, before)),
                  block_bytes=raw, block_events=NO_EVENTS, results_root=fake_results_root(done))


@dataclass
class SyncNode:
    """A sync service over its own store, with a test driver in place of consensus (the handover)."""

    store: ChainStore
    p2p: P2P
    signer: PrivateKey
    status: ChainStatus = field(default_factory=ChainStatus)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    delivered: list[int] = field(default_factory=list)
    installed: list[SnapshotPlan] = field(default_factory=list)
    sync: SyncService = field(init=False)
    task: asyncio.Task[None] | None = None

    @property
    def blocks(self) -> BlockStore:
        return self.store.blocks

    @property
    def db(self) -> Database:
        return self.store.db

    @property
    def key(self) -> bytes:
        return self.signer.public_key

    def commit(self, block: Block, cert_bytes: bytes) -> None:
        commit_fake(self.blocks, block, cert_bytes)
        self.store.set_head(self.store.read_head())
        self.sync.note_committed(block.height, block.hash, self.store.state.root())

    async def deliver_block(self, block: Block, cert: CommitCertificate) -> None:
        assert block.height == self.blocks.height() + 1, "blocks must arrive in height order"
        assert cert.verify(GENESIS.validator_keys, CHAIN) and cert.block_hash == block.hash
        self.commit(block, codec.encode(cert.to_value()))
        self.delivered.append(block.height)

    async def install_snapshot(self, plan: SnapshotPlan) -> None:  # as the consensus driver does
        before, last = parse_results_roots(plan.importer.staged_value(keys.RESULTS))
        extra = self.blocks.head_ops(plan.height, plan.block_hash, plan.state_root)
        extra += [(schema.certificate_key(plan.height), codec.encode(plan.cert.to_value())),
                  self.blocks.history_from_op(plan.height + 1), self.blocks.results_root_op(plan.height, last),
                  self.blocks.results_root_op(plan.height - 1, before)]
        plan.importer.finish(extra_ops=extra)
        self.store.set_head(self.store.read_head())
        self.installed.append(plan)


def grow(node: SyncNode, count: int, *, stable_upto: int | None = None,
         make: Callable[[SyncNode, int, bytes], tuple[Block, bytes]] | None = None,
         txs: Callable[[int], tuple[bytes, ...]] = lambda h: ()) -> None:
    """Append `count` certified blocks; checkpoints at multiples of K up to `stable_upto` become stable."""
    state = node.store.state
    for _ in range(count):
        h = node.blocks.height() + 1
        parent = node.blocks.last_block_hash()
        assert parent is not None
        if make is not None:
            block, cert = make(node, h, parent)
        else:
            block = Block.build(chain=CHAIN, height=h, parent=parent, proposer=VALS[h % 4].public_key, view=0,
                                time=1_000 * h, state_root=header_root(node, h),
                                results_root=header_results(node, h), txs=txs(h))
            cert = codec.encode(sign_commit(block).to_value())
        node.commit(block, cert)
        if h % 5 == 0 and stable_upto is not None and h <= stable_upto:
            node.sync.note_stable_checkpoint(h, block.hash, state.root(),
                                             sign_checkpoint(h, block.hash, state.root()).to_value())


def header_root(node: SyncNode, height: int) -> bytes:
    """The state root block `height` carries: the one after `state_root_height(height)`."""
    root = node.blocks.state_root_at(state_root_height(height))
    assert root is not None
    return root


def header_results(node: SyncNode, height: int) -> bytes:
    """The results root block `height` carries: that of `state_root_height(height)`."""
    root = node.blocks.results_root_at(state_root_height(height))
    assert root is not None
    return root


def copy_chain(src: SyncNode, dst: SyncNode, upto: int,
               swap: Callable[[int, bytes, bytes], tuple[bytes, bytes]] | None = None) -> None:
    """Commit src's stored blocks 1..upto into dst (optionally replacing what is stored at some heights)."""
    for h, raw, cert in src.blocks.iter_blocks(1, upto + 1):
        assert cert is not None
        good = Block.decode(raw)
        if swap is not None:
            raw, cert = swap(h, raw, cert)
        block = Block.decode(raw)
        commit_fake(dst.blocks, block, cert, executed=good, raw=raw)
    dst.store.set_head(dst.store.read_head())


class Net:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.nodes: list[SyncNode] = []

    async def add(self, i: int, *, state_sync: bool = False, settings: SyncSettings = FAST,
                  p2p: P2PSettings = NET) -> SyncNode:
        """A node over the database in n<i>/ (created with the genesis state, or reopened: a restart)."""
        home = self.tmp / f"n{i}"
        home.mkdir(exist_ok=True)
        db = Database.open(home / "db")
        state = StateStore(db, index_prefixes=keys.INDEX_PREFIXES)
        blocks = BlockStore(db, state)
        if blocks.last_block_hash() is None:
            blocks.commit_genesis(state.stage(dict(GENESIS_STATE)), GENESIS.hash)
        store = ChainStore(db, state, blocks, ConsensusWal(db))
        link = P2P(VALS[i], CHAIN, validators=GENESIS.validator_keys, settings=p2p)
        await link.start()
        node = SyncNode(store, link, VALS[i])
        env = SyncEnv(store, link, CHAIN, tuple(GENESIS.validator_keys), node.status)
        node.sync = SyncService(env, node, checkpoint_interval=5, registry=node.registry,
                                log=structlog.get_logger().bind(node=f"n{i}"), settings=settings,
                                state_sync=state_sync)
        node.task = asyncio.create_task(node.sync.run())
        self.nodes.append(node)
        return node

    async def link(self, a: SyncNode, b: SyncNode) -> None:
        target = PeerAddr(b.key, "127.0.0.1", b.p2p.listen_port or 0)
        a.p2p.dial_targets.append(target)
        a.p2p._spawn(a.p2p._dial_loop(target), "dial")
        await until(lambda: a.p2p.is_connected(b.key) and b.p2p.is_connected(a.key))

    async def stop(self, node: SyncNode) -> None:
        """Stop one node (its sync, P2P and database), as a process exit would."""
        self.nodes.remove(node)
        if node.task is not None:
            node.task.cancel()
            await asyncio.gather(node.task, return_exceptions=True)
        await node.p2p.stop()
        await node.store.close()

    async def close(self) -> None:
        for n in self.nodes:
            if n.task is not None:
                n.task.cancel()
        await asyncio.gather(*(n.task for n in self.nodes if n.task is not None), return_exceptions=True)
        await asyncio.gather(*(n.p2p.stop() for n in self.nodes))
        for n in self.nodes:
            await n.store.close()


async def until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def failures(node: SyncNode, reason: str) -> float:
    v = node.registry.get_sample_value("smeledger_sync_peer_failures_total", {"reason": reason})
    return v or 0.0


def served(node: SyncNode, msg_type: str = "sync_resp", status: str = "ok") -> float:
    v = node.registry.get_sample_value("smeledger_sync_served_total", {"type": msg_type, "status": status})
    return v or 0.0


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    n = Net(tmp_path)
    yield n
    await n.close()


async def test_a_lagging_node_gets_every_block_in_height_order_from_two_peers(net: Net) -> None:
    a, b, c = await net.add(0), await net.add(1), await net.add(2)
    grow(a, 120)
    copy_chain(a, b, 120)
    await net.link(c, a)
    await net.link(c, b)
    c.sync.request(120, [a.key, b.key])
    await until(lambda: c.blocks.height() == 120)
    assert c.delivered == list(range(1, 121))
    assert c.blocks.state_root() == a.blocks.state_root()
    assert c.blocks.last_block_hash() == a.blocks.last_block_hash()
    assert served(a) > 0 and served(b) > 0, "both peers served batches"
    assert c.registry.get_sample_value("smeledger_sync_blocks_fetched_total") == 120
    await until(lambda: not c.status.syncing)
    assert c.status.sync_progress == 120 and c.status.sync_target == 120


async def test_a_raised_target_extends_the_running_sync_and_repeated_requests_coalesce(net: Net) -> None:
    a, c = await net.add(0), await net.add(2)
    grow(a, 60)
    await net.link(c, a)
    for _ in range(5):
        c.sync.request(30, [a.key])
    c.sync.request(20, [a.key])  # a lower target never lowers it
    await until(lambda: c.blocks.height() == 30)
    c.sync.request(60, [a.key])
    await until(lambda: c.blocks.height() == 60)
    assert c.delivered == list(range(1, 61))
    assert c.sync.rounds <= 2


async def test_a_peer_serving_blocks_with_sub_quorum_certificates_is_penalised_and_another_serves_them(
        net: Net) -> None:
    a, b, c = await net.add(0), await net.add(1), await net.add(2)
    grow(a, 40)

    def weak(h: int, raw: bytes, cert: bytes) -> tuple[bytes, bytes]:  # two signatures out of four
        return raw, codec.encode(sign_commit(Block.decode(raw), signers=(0, 1)).to_value())

    copy_chain(a, b, 40, swap=weak)
    await net.link(c, a)
    await net.link(c, b)
    c.sync.request(40, [b.key, a.key])  # the liar is asked first
    await until(lambda: c.blocks.height() == 40)
    assert c.delivered == list(range(1, 41))
    assert c.blocks.state_root() == a.blocks.state_root()
    assert failures(c, "bad_certificate") >= 1
    assert c.sync.book.get(b.key).until > time.monotonic() + 10, "the liar is left alone for a while"


async def test_a_block_whose_certificate_is_for_another_block_is_rejected(net: Net) -> None:
    a, b, c = await net.add(0), await net.add(1), await net.add(2)
    grow(a, 20)
    certs = {h: cert for h, _raw, cert in a.blocks.iter_blocks(1, 21)}

    copy_chain(a, b, 20)
    served = b.blocks.iter_blocks

    def shifted(start: int, stop: int | None = None) -> Iterator[tuple[int, bytes, bytes | None]]:
        """b serves a valid certificate, but of the next block (its own storage would refuse to)."""
        for h, raw, cert in served(start, stop):
            yield h, raw, certs[h + 1] if h == 3 else cert

    b.blocks.iter_blocks = shifted  # type: ignore[method-assign]
    await net.link(c, a)
    await net.link(c, b)
    c.sync.request(20, [b.key, a.key])
    await until(lambda: c.blocks.height() == 20)
    assert c.delivered == list(range(1, 21))
    assert failures(c, "certificate_mismatch") >= 1


async def test_a_certified_block_with_a_wrong_parent_is_rejected_and_fetched_from_another_peer(net: Net) -> None:
    a, b, c = await net.add(0), await net.add(1), await net.add(2)
    grow(a, 40)

    def fork(h: int, raw: bytes, cert: bytes) -> tuple[bytes, bytes]:
        if h != 3:
            return raw, cert
        good = Block.decode(raw)
        bad = Block(dataclasses.replace(good.header, parent=b"\x55" * 32), good.txs)
        return bad.encode(), codec.encode(sign_commit(bad).to_value())

    copy_chain(a, b, 40, swap=fork)
    await net.link(c, a)
    await net.link(c, b)
    c.sync.request(40, [b.key, a.key])
    await until(lambda: c.blocks.height() == 40)
    assert c.delivered == list(range(1, 41))
    assert c.blocks.state_root() == a.blocks.state_root()
    assert c.blocks.get_block_bytes(3) == a.blocks.get_block_bytes(3)
    assert failures(c, "wrong_parent") >= 1


async def test_sync_stops_at_what_peers_have_and_reports_it_in_the_chain_status(net: Net) -> None:
    a, c = await net.add(0), await net.add(2)
    grow(a, 10)
    await net.link(c, a)
    c.sync.request(25, [a.key])
    await until(lambda: c.blocks.height() == 10)
    await until(lambda: c.status.sync_target == 25)
    assert c.status.syncing and c.status.sync_progress == 10
    grow(a, 15)  # the peer catches up: the retried round finishes the job
    await until(lambda: c.blocks.height() == 25)
    await until(lambda: not c.status.syncing)


async def test_responses_stay_within_the_byte_budget_and_partial_ranges_are_asked_again(net: Net) -> None:
    a = await net.add(0, settings=dataclasses.replace(FAST, max_response_bytes=1024))
    grow(a, 30)
    c = await net.add(2)
    await net.link(c, a)
    c.sync.request(30, [a.key])
    await until(lambda: c.blocks.height() == 30)
    assert c.delivered == list(range(1, 31))
    assert served(a) >= 15, "about one ~550-byte block per 1 KiB response"


async def test_a_peer_that_never_answers_times_out_and_its_range_goes_to_another_peer(net: Net) -> None:
    a = await net.add(0)
    grow(a, 20)
    c = await net.add(2, settings=dataclasses.replace(FAST, request_timeout=0.3))
    mute = P2P(VALS[3], CHAIN, validators=GENESIS.validator_keys, settings=NET)  # no sync handlers at all
    await mute.start()
    try:
        await net.link(c, a)
        c.p2p.dial_targets.append(PeerAddr(mute.public_key, "127.0.0.1", mute.listen_port or 0))
        c.p2p._spawn(c.p2p._dial_loop(c.p2p.dial_targets[-1]), "dial")
        await until(lambda: c.p2p.is_connected(mute.public_key))
        c.sync.request(20, [mute.public_key, a.key])
        await until(lambda: c.blocks.height() == 20)
        assert c.delivered == list(range(1, 21))
        assert failures(c, "timeout") >= 1
    finally:
        await mute.stop()


async def test_blocks_the_driver_commits_on_its_own_during_sync_are_skipped_not_delivered_twice(net: Net) -> None:
    a, c = await net.add(0), await net.add(2)
    grow(a, 60)
    await net.link(c, a)
    plain = c.deliver_block

    async def deliver_and_catch_up(block: Block, cert: CommitCertificate) -> None:
        await plain(block, cert)
        if block.height == 3:  # consensus commits 4..8 itself meanwhile (e.g. from a CommitProof)
            for h in range(4, 9):
                raw, cert_bytes = a.blocks.get_block_bytes(h), a.blocks.get_certificate(h)
                assert raw is not None and cert_bytes is not None
                c.commit(Block.decode(raw), cert_bytes)

    c.deliver_block = deliver_and_catch_up  # type: ignore[method-assign]
    c.sync.request(60, [a.key])
    await until(lambda: c.blocks.height() == 60)
    assert c.delivered == [1, 2, 3, *range(9, 61)]
    assert c.blocks.state_root() == a.blocks.state_root()


async def test_a_node_behind_an_idle_network_probes_the_validators_and_catches_up(net: Net) -> None:
    probing = dataclasses.replace(FAST, probe_interval=0.1)
    a, b = await net.add(0, settings=probing), await net.add(1, settings=probing)
    c = await net.add(2, settings=probing)
    grow(a, 40)
    copy_chain(a, b, 40)
    await net.link(c, a)
    await net.link(c, b)
    await until(lambda: c.blocks.height() == 40)  # nobody called request(): the probes found the heads
    assert c.delivered == list(range(1, 41))


async def test_a_single_validator_claiming_a_higher_head_does_not_start_a_sync(net: Net) -> None:
    probing = dataclasses.replace(FAST, probe_interval=0.1)
    a, c = await net.add(0, settings=probing), await net.add(2, settings=probing)
    grow(a, 40)
    await net.link(c, a)
    await asyncio.sleep(0.6)  # several probe rounds: f + 1 = 2 reports are needed, only one exists
    assert c.blocks.height() == 0 and c.sync.target == 0
