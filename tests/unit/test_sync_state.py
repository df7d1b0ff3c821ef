"""Snapshot state sync between real P2P nodes: certified offers, verified chunks, then block sync to the head."""

from __future__ import annotations

import time
from dataclasses import replace

from node.sync.snapshots import Held
from protocol import codec
from protocol.consensus import CheckpointCertificate
from protocol.crypto import sha256
from storage.snapshot import SnapshotManifest
from tests.unit import test_sync_blocks
from tests.unit.test_sync_blocks import (
    FAST,
    Net,
    SyncNode,
    failures,
    grow,
    served,
    until,
)

net = test_sync_blocks.net  # the loopback sync network fixture, shared



async def two_sources(net: Net, height: int = 40, stable_upto: int = 35) -> tuple[SyncNode, SyncNode]:
    a, b = await net.add(0), await net.add(1)
    grow(a, height, stable_upto=stable_upto)
    grow(b, height, stable_upto=stable_upto)
    assert a.blocks.state_root() == b.blocks.state_root()
    return a, b


async def test_a_fresh_node_state_syncs_from_a_checkpoint_snapshot_then_block_syncs_to_the_head(net: Net) -> None:
    a, b = await two_sources(net)
    c = await net.add(2, state_sync=True)
    await net.link(c, a)
    await net.link(c, b)
    c.sync.request(40, [a.key, b.key])
    await until(lambda: c.blocks.height() == 40)
    assert [p.height for p in c.installed] == [35]
    plan = c.installed[0]
    assert plan.state_root == a.blocks.state_root_at(35)
    assert plan.cert.height == 35 and plan.cert.block_hash == plan.block_hash
    assert c.delivered == [36, 37, 38, 39, 40], "block sync continues right after the snapshot"
    assert c.blocks.state_root() == a.blocks.state_root(), "the rebuilt state matches the source's"
    chunks = len(plan.manifest.chunk_hashes)
    assert chunks > 4, "the test state spans several chunks"
    assert c.registry.get_sample_value("smeledger_sync_snapshot_chunks_total") == chunks
    assert served(a, "snap_resp") > 1 and served(b, "snap_resp") > 1, "chunks came from both peers"
    await until(lambda: not c.status.syncing)


async def test_a_tampered_chunk_is_rejected_and_fetched_from_another_peer(net: Net) -> None:
    a, b = await two_sources(net)
    held: list[Held] = b.sync.server.held
    for h in held:
        real = h.snap.chunk

        def tampered(index: int, max_chunk_bytes: int, real=real) -> bytes | None:  # type: ignore[no-untyped-def]
            data = real(index, max_chunk_bytes)
            if data is None:
                return None
            v = codec.decode(data)
            k, val = v["items"][0]
            v["items"][0] = [k, val + b"!"]
            return codec.encode(v)

        h.snap.chunk = tampered  # type: ignore[method-assign]
    c = await net.add(2, state_sync=True)
    await net.link(c, a)
    await net.link(c, b)
    c.sync.request(40, [b.key, a.key])
    await until(lambda: c.blocks.height() == 40)
    assert failures(c, "bad_chunk") >= 1
    assert c.sync.book.get(b.key).until > time.monotonic() + 10
    assert c.blocks.state_root() == a.blocks.state_root()


async def test_an_offer_without_a_quorum_checkpoint_is_ignored_and_the_node_block_syncs_instead(net: Net) -> None:
    a = await net.add(0)
    grow(a, 30, stable_upto=30)
    best = a.sync.server.servable()
    assert best is not None and best.checkpoint is not None
    cp = best.checkpoint
    best.checkpoint = CheckpointCertificate(cp.height, cp.block_hash, cp.state_root, cp.sigs[:2])
    b = await net.add(1)
    grow(b, 30)  # honest, but offers no snapshot
    c = await net.add(2, state_sync=True)
    await net.link(c, a)
    await net.link(c, b)
    c.sync.request(30, [a.key, b.key])
    await until(lambda: c.blocks.height() == 30)
    assert c.installed == []
    assert c.delivered == list(range(1, 31))
    assert failures(c, "bad_offer") == 1
    assert c.blocks.state_root() == a.blocks.state_root()


async def test_a_snapshot_whose_chunks_rebuild_another_root_is_not_installed(net: Net) -> None:
    a = await net.add(0)
    grow(a, 20, stable_upto=20)
    best = a.sync.server.servable()
    assert best is not None
    # A consistent lie: chunks and manifest agree with each other, but not with the certified root.
    real = best.snap.chunk

    def lying(index: int, max_chunk_bytes: int) -> bytes | None:
        data = real(index, max_chunk_bytes)
        if data is None or index != 0:
            return data
        v = codec.decode(data)
        v["items"][0] = [v["items"][0][0], b"stolen"]
        return codec.encode(v)

    best.snap.chunk = lying  # type: ignore[method-assign]
    honest = best.snap.manifest(net.nodes[0].sync.server.chunk_bytes)
    hashes = list(honest.chunk_hashes)
    hashes[0] = sha256(lying(0, honest.max_chunk_bytes) or b"")
    best.manifest = SnapshotManifest(honest.height, honest.root, honest.max_chunk_bytes, tuple(hashes))
    best.manifest_bytes = best.manifest.encode()
    b = await net.add(1)
    grow(b, 20)  # honest, but offers no snapshot
    c = await net.add(2, state_sync=True)
    await net.link(c, a)
    await net.link(c, b)
    c.sync.request(20, [a.key, b.key])
    await until(lambda: c.blocks.height() == 20)
    assert c.installed == [], "finish() refused the wrong root, so nothing was installed"
    assert failures(c, "bad_snapshot") >= 1
    assert c.delivered == list(range(1, 21)), "the node fell back to block sync"
    assert c.blocks.state_root() == a.blocks.state_root()


async def test_a_server_keeps_its_latest_servable_snapshot_and_two_candidates_and_closes_the_rest(
        net: Net) -> None:
    a = await net.add(0)
    grow(a, 50, stable_upto=30)
    heights = sorted(h.height for h in a.sync.server.held)
    assert heights == [30, 45, 50]
    best = a.sync.server.servable()
    assert best is not None and best.height == 30 and best.commit is not None


async def test_requests_beyond_a_peers_rate_are_answered_busy(net: Net) -> None:
    a = await net.add(0, settings=replace(FAST, serve_rate=1.0, serve_burst=2))
    grow(a, 5)
    c = await net.add(2)
    await net.link(c, a)
    for rid in range(1, 6):
        c.p2p.send(a.key, "sync_req", {"rid": rid, "from": 1, "count": 2})
    await until(lambda: served(a, "sync_resp", "busy") + served(a, "sync_resp", "ok") >= 5)  # ok: off the loop
    assert served(a, "sync_resp", "ok") == 2 and served(a, "sync_resp", "busy") == 3
    assert failures(c, "unsolicited") >= 5, "answers to requests nobody made are dropped"
