"""A node started on a WAL whose tail a crash cut short (or a torn sector damaged) cuts it, says so in one
log line, and goes on committing; damage before intact records stops it naming the way out."""

from __future__ import annotations

import io
from pathlib import Path

from node.service import Node
from storage import schema
from storage.db import Database
from storage.errors import DatabaseCorrupt
from storage.wal import frame
from tests.conftest import ephemeral, load_home
from tests.unit.test_node_failstop import _events, _post, _start, _stop, _transfer, _until, _wallets


async def _commit_some(home: Path, n: int) -> int:
    """Run the node until `n` transfers committed; returns the WAL's next sequence number."""
    node, task = await _start(ephemeral(load_home(home)))
    try:
        assert node.parts is not None
        a, b = _wallets(home.parent)
        start = int((await _post(node, [_transfer(a, b, i) for i in range(n)]))["accepted"])
        assert start == n
        await _until(lambda: len(node.parts.mempool) == 0)  # type: ignore[union-attr]
        return node.parts.store.wal.next_seq
    finally:
        await _stop(node, task)


def _write(home: Path, records: dict[int, bytes]) -> None:
    db = Database.open(home / "data")
    try:
        with db.batch(sync=True) as b:
            for seq, value in records.items():
                b.put(schema.wal_key(seq), value)
    finally:
        db.close()


async def test_a_torn_wal_tail_is_cut_logged_and_the_node_goes_on_committing(single_home: Path) -> None:
    home = single_home / "banka"
    nxt = await _commit_some(home, 3)
    torn = frame(b"a vote record the crash cut short")
    _write(home, {nxt: torn[:-7], nxt + 1: torn[:3]})
    node, task = await _start(ephemeral(load_home(home)))
    try:
        cut = [e for e in _events(node) if e["event"] == "wal_tail_cut"]
        assert len(cut) == 1 and cut[0]["records"] == 2 and cut[0]["first_seq"] == nxt
        assert node.parts is not None
        a, b = _wallets(single_home)
        assert (await _post(node, [_transfer(a, b, 3)]))["accepted"] == 1
        await _until(lambda: len(node.parts.mempool) == 0)  # type: ignore[union-attr]
    finally:
        await _stop(node, task)


async def test_a_damaged_wal_record_before_intact_ones_stops_the_node_naming_the_way_out(
        single_home: Path) -> None:
    home = single_home / "banka"
    nxt = await _commit_some(home, 2)
    _write(home, {nxt: b"\x00\x00\x00\x00damaged", nxt + 1: frame(b"an intact record after it")})
    node = Node(ephemeral(load_home(home)), log_stream=io.StringIO())
    try:
        await node.run()
    except DatabaseCorrupt as exc:
        assert "move its data directory aside" in str(exc) and str(home / "data") in str(exc)
        failed = [e for e in _events(node) if e["event"] == "node_failed"]
        assert len(failed) == 1 and failed[0]["code"] == "db_corrupt" and "exception" not in failed[0]
    else:
        raise AssertionError("the node started on a corrupt WAL")
    db = Database.open(home / "data")
    try:
        assert db.get(schema.wal_key(nxt)) is not None  # nothing was cut: the operator decides
    finally:
        db.close()
