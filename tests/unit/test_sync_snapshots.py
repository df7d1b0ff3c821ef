"""Snapshots on disk: written at stable checkpoints, bounded in count and bytes, checked when loaded and
when read, and served by a restarted node before its next checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from node.sync.snapfiles import OFFER, DiskSnapshot, SnapshotFileError, SnapshotFiles
from protocol import codec
from protocol.block import Block
from protocol.consensus import CheckpointCertificate
from protocol.results import GENESIS_RESULTS
from tests.unit import test_sync_blocks
from tests.unit.test_sync_blocks import (
    CHAIN,
    FAST,
    GENESIS,
    Net,
    SyncNode,
    grow,
    served,
    sign_checkpoint,
    sign_commit,
    until,
)

net = test_sync_blocks.net  # the loopback sync network fixture, shared

ROOT = b"\x02" * 32



def files(tmp_path: Path, keep: int = 3, max_bytes: int = 1 << 30) -> SnapshotFiles:
    return SnapshotFiles(tmp_path / "snaps", keep=keep, max_bytes=max_bytes, chain_id=CHAIN,
                         validators=GENESIS.validator_keys)


def write(f: SnapshotFiles, height: int, chunks: list[bytes]) -> DiskSnapshot | None:
    """A snapshot at `height` whose checkpoint and commit certificate a quorum signed."""
    block = Block.build(chain=CHAIN, height=height, parent=b"\x01" * 32, proposer=b"\x01" * 32, view=0,
                        time=height, state_root=ROOT, results_root=GENESIS_RESULTS, txs=())
    commit = codec.encode(sign_commit(block).to_value())
    return f.write(height, block.hash, ROOT, sign_checkpoint(height, block.hash, ROOT), commit, chunks, 1024)


def test_a_written_snapshot_loads_back_with_its_certificates_and_serves_the_same_chunks(tmp_path: Path) -> None:
    f = files(tmp_path)
    snap = write(f, 10, [b"chunk-a", b"chunk-b"])
    assert snap is not None
    [loaded] = f.load()
    assert loaded == snap
    assert [loaded.chunk(0), loaded.chunk(1), loaded.chunk(2)] == [b"chunk-a", b"chunk-b", None]
    assert loaded.checkpoint.height == 10 and loaded.manifest.root == ROOT


def test_the_newest_snapshots_are_kept_within_the_count_bound_and_the_oldest_go_first(tmp_path: Path) -> None:
    f = files(tmp_path, keep=2)
    for h in (10, 20, 30):
        write(f, h, [b"x" * 100])
    assert [s.height for s in f.load()] == [30, 20]


def test_the_byte_bound_deletes_the_oldest_and_a_snapshot_alone_over_it_is_not_kept(tmp_path: Path) -> None:
    f = files(tmp_path, keep=5, max_bytes=5000)
    write(f, 10, [b"x" * 1500])
    write(f, 20, [b"x" * 1500])
    write(f, 30, [b"x" * 1500])  # the three together pass 5000 bytes with their offers: the oldest goes
    assert [s.height for s in f.load()] == [30, 20]
    with pytest.raises(SnapshotFileError):
        write(f, 40, [b"x" * 3000, b"y" * 3000])  # one byte over is enough: nothing of it stays
    assert [s.height for s in f.load()] == [30, 20]
    assert not list((tmp_path / "snaps").glob("*.tmp"))


def test_with_no_snapshots_to_keep_nothing_is_written(tmp_path: Path) -> None:
    f = files(tmp_path, keep=0)
    assert write(f, 10, [b"x"]) is None
    assert f.load() == []


def test_a_leftover_tmp_dir_and_a_snapshot_with_a_sub_quorum_checkpoint_are_deleted_when_loading(
        tmp_path: Path) -> None:
    f = files(tmp_path)
    good, bad = write(f, 10, [b"a"]), write(f, 20, [b"b"])
    assert good is not None and bad is not None
    offer = codec.decode((bad.path / OFFER).read_bytes())
    cp = bad.checkpoint
    offer["checkpoint"] = CheckpointCertificate(cp.height, cp.block_hash, cp.state_root, cp.sigs[:2]).to_value()
    (bad.path / OFFER).write_bytes(codec.encode(offer))
    leftover = tmp_path / "snaps" / f"{30:020d}.tmp"
    leftover.mkdir()
    assert [s.height for s in f.load()] == [10]
    assert not bad.path.exists() and not leftover.exists()


def test_a_damaged_chunk_file_is_never_served(tmp_path: Path) -> None:
    f = files(tmp_path)
    snap = write(f, 10, [b"chunk-a", b"chunk-b"])
    assert snap is not None
    (snap.path / "chunk-0000001").write_bytes(b"chunk-B")
    assert snap.chunk(0) == b"chunk-a"
    with pytest.raises(SnapshotFileError):
        snap.chunk(1)


async def saving_node(net: Net, i: int, tmp_path: Path) -> SyncNode:
    return await net.add(i, settings=dataclasses.replace(FAST, snapshot_dir=tmp_path / f"snaps{i}"))


async def test_a_restarted_node_serves_its_last_stable_snapshot_from_disk_before_its_next_checkpoint(
        net: Net, tmp_path: Path) -> None:
    a = await saving_node(net, 0, tmp_path)
    grow(a, 30, stable_upto=30)
    await until(lambda: any(h.disk is not None and h.height == 30 for h in a.sync.server.held))
    best = a.sync.server.servable()
    assert best is not None and best.snap is None, "once on disk, the LevelDB snapshot is released"
    await net.stop(a)
    a = await saving_node(net, 0, tmp_path)  # the same database and snapshot directory: a restart
    await until(lambda: a.sync.server.servable() is not None)
    c = await net.add(2, state_sync=True)
    await net.link(c, a)
    c.sync.request(30, [a.key])
    await until(lambda: c.blocks.height() == 30 and bool(c.installed))
    assert [p.height for p in c.installed] == [30]
    assert c.blocks.state_root() == a.blocks.state_root()
    assert served(a, "snap_resp") >= 2, "the manifest and chunks came from the files"


async def test_a_node_whose_snapshot_file_is_damaged_stops_offering_it_and_the_peer_block_syncs(
        net: Net, tmp_path: Path) -> None:
    a = await saving_node(net, 0, tmp_path)
    grow(a, 30, stable_upto=30)
    await until(lambda: any(h.disk is not None for h in a.sync.server.held))
    await net.stop(a)
    for chunk in sorted((tmp_path / "snaps0").glob("*/chunk-*")):
        chunk.write_bytes(chunk.read_bytes() + b"!")
    a = await saving_node(net, 0, tmp_path)
    await until(lambda: a.sync.server.servable() is not None)
    c = await net.add(2, state_sync=True)
    await net.link(c, a)
    c.sync.request(30, [a.key])
    await until(lambda: c.blocks.height() == 30)
    assert c.installed == [] and c.delivered == list(range(1, 31)), "it fell back to block sync"
    assert a.sync.server.servable() is None and not list((tmp_path / "snaps0").iterdir())
