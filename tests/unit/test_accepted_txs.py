"""Accepted means durable, and every accepted tx gets a final status: in-process nodes seen through their API.

Txs are kept pending on purpose by a nonce gap (nonce 0 of the sender is never sent), so they neither
commit nor leave before the test looks; waits are bounded loops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from node.config import Config
from node.journal import FILE_NAME, JournalError, JournalFile
from node.service import Node
from protocol import codec
from tests.conftest import ephemeral, free_port_block, load_home
from tests.unit.test_api_routes import _call, _transfer, _wallets

MSGPACK = {"Content-Type": "application/msgpack"}


def _batch(txs: list[Any]) -> bytes:
    return codec.encode([codec.decode(t.raw) for t in txs])


async def _post(node: Node, txs: list[Any]) -> tuple[int, dict[str, Any]]:
    status, doc, _h = await _call(node, "POST", "/txs", data=_batch(txs), headers=MSGPACK)
    return status, doc


async def _status(node: Node, tx: Any) -> dict[str, Any]:
    _s, doc, _h = await _call(node, "GET", f"/txs/{tx.hash_hex}")
    return dict(doc)


async def _until(node: Node, tx: Any, done: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc = await _status(node, tx)
        if done(doc) or time.monotonic() > deadline:
            return doc
        await asyncio.sleep(0.1)


async def _stop(node: Node) -> None:
    node.request_stop()
    await asyncio.wait_for(node.stopped.wait(), 10)


def _config(home: Path, **mempool: Any) -> Config:
    cfg = ephemeral(load_home(home))
    return dataclasses.replace(cfg, mempool=dataclasses.replace(cfg.mempool, **mempool))


async def test_a_batch_answered_accepted_is_already_in_the_journal_on_disk(single_home: Path, start_node: Any) -> None:
    cfg = _config(single_home / "banka")
    node = await start_node(cfg)
    a, b = _wallets(single_home / "banka")
    txs = [_transfer(a, b, n) for n in (1, 2, 3)]
    status, doc = await _post(node, txs)
    assert status == 200 and doc["accepted"] == 3
    on_disk = JournalFile(cfg.node.data_dir / "journal").replay().live
    assert list(on_disk) == [t.hash for t in txs] and list(on_disk.values()) == [t.raw for t in txs]


async def test_a_batch_of_a_thousand_txs_is_made_durable_with_one_fsync(single_home: Path, start_node: Any) -> None:
    node = await start_node(_config(single_home / "banka"))
    a, b = _wallets(single_home / "banka")
    txs = [_transfer(w, to, n) for w, to in ((a, b), (b, a)) for n in range(1, 501)]
    assert node.parts is not None
    journal = node.parts.acceptance.file
    before = journal.syncs
    status, doc = await _post(node, txs)
    assert status == 200 and doc["accepted"] == 1000
    assert journal.syncs - before == 1


async def test_txs_accepted_before_a_restart_are_pending_again_after_it_and_commit_once_the_gap_is_filled(
        single_home: Path, start_node: Any) -> None:
    cfg = _config(single_home / "banka")
    node = await start_node(cfg)
    a, b = _wallets(single_home / "banka")
    gapped = [_transfer(a, b, n) for n in (1, 2)]
    assert (await _post(node, gapped))[1]["accepted"] == 2
    await _stop(node)
    node = await start_node(cfg)
    for t in gapped:
        assert (await _status(node, t))["status"] == "pending"
    assert (await _post(node, [_transfer(a, b, 0)]))[1]["accepted"] == 1
    for t in gapped:
        assert (await _until(node, t, lambda d: d["status"] != "pending"))["status"] == "committed"
    assert node.parts is not None and len(node.parts.acceptance) == 0  # committed txs left the journal


async def test_a_tx_behind_a_nonce_gap_never_filled_ends_dropped_as_expired_also_after_a_restart(
        single_home: Path, start_node: Any) -> None:
    cfg = _config(single_home / "banka", ttl_s=1)
    node = await start_node(cfg)
    a, b = _wallets(single_home / "banka")
    stuck = _transfer(a, b, 5)
    assert (await _post(node, [stuck]))[1]["accepted"] == 1
    doc = await _until(node, stuck, lambda d: d["status"] == "dropped")
    assert doc["status"] == "dropped" and doc["reason"] == "expired" and "TTL" in doc["message"]
    await _stop(node)
    node = await start_node(cfg)  # the reason is kept with the journal, and the tx is not re-admitted
    doc = await _status(node, stuck)
    assert (doc["status"], doc["reason"]) == ("dropped", "expired")


async def test_a_truncated_journal_tail_is_cut_and_logged_and_the_txs_before_it_are_readmitted(
        single_home: Path, start_node: Any) -> None:
    cfg = _config(single_home / "banka")
    node = await start_node(cfg)
    a, b = _wallets(single_home / "banka")
    txs = [_transfer(a, b, n) for n in (1, 2, 3)]
    for t in txs:  # one POST, one frame each
        assert (await _post(node, [t]))[1]["accepted"] == 1
    await _stop(node)
    path = cfg.node.data_dir / "journal" / FILE_NAME
    path.write_bytes(path.read_bytes()[:-7])  # a torn write of the last frame
    node = await start_node(cfg)
    assert [(await _status(node, t))["status"] for t in txs] == ["pending", "pending", "unknown"]
    log = node._log_stream.getvalue()
    assert '"journal_tail_cut"' in log and '"reason": "truncated"' in log and "Traceback" not in log


async def test_a_full_journal_answers_503_and_admits_nothing_past_its_room(single_home: Path, start_node: Any) -> None:
    cfg = _config(single_home / "banka")
    cfg = dataclasses.replace(cfg, journal=dataclasses.replace(cfg.journal, max_txs=2))
    node = await start_node(cfg)
    a, b = _wallets(single_home / "banka")
    txs = [_transfer(a, b, n) for n in (1, 2, 3)]
    status, doc = await _post(node, txs)
    assert status == 503 and doc["error"] == "journal_full"
    assert [r["code"] for r in doc["results"]] == ["accepted", "accepted", "journal_full"]
    assert [(await _status(node, t))["status"] for t in txs] == ["pending", "pending", "unknown"]
    status, doc = await _post(node, [txs[2]])  # still full: the journal holds two open txs
    assert status == 503 and doc["results"][0]["code"] == "journal_full"


async def test_a_tx_whose_nonce_another_committed_tx_used_ends_dropped_as_nonce_used(
        tmp_path: Path, start_node: Any) -> None:
    from devtools import testnet as testnet_mod

    d = tmp_path / "net"
    testnet_mod.create(d, validators=1, observers=1, accounts=2, base_port=free_port_block(2), kdf="min")
    vcfg, ocfg = load_home(d / "banka"), load_home(d / "regulator")
    api0 = {"api": dataclasses.replace(vcfg.api, port=0)}
    validator = await start_node(dataclasses.replace(vcfg, **api0))
    observer = await start_node(ephemeral(ocfg))  # no peers yet: what it accepts stays with it
    a, b = _wallets(d / "banka")
    mine, theirs = _transfer(a, b, 1, amount=7), _transfer(a, b, 1, amount=8)
    assert (await _post(observer, [mine]))[1]["accepted"] == 1
    assert (await _post(validator, [_transfer(a, b, 0), theirs]))[1]["accepted"] == 2
    assert (await _until(validator, theirs, lambda d: d["status"] == "committed"))["status"] == "committed"
    await _stop(observer)
    observer = await start_node(dataclasses.replace(ocfg, api=dataclasses.replace(ocfg.api, port=0)))
    doc = await _until(observer, mine, lambda d: d["status"] == "dropped")
    assert (doc["status"], doc["reason"]) == ("dropped", "nonce_used")
    assert (await _status(observer, theirs))["status"] == "committed"


async def test_a_node_whose_journal_cannot_be_written_answers_503_and_stops_with_one_node_failed_line(
        single_home: Path) -> None:
    log = io.StringIO()
    node = Node(_config(single_home / "banka"), log_stream=log)
    task = asyncio.create_task(node.run())
    await asyncio.wait_for(node.ready.wait(), 20)
    assert node.parts is not None
    node.parts.acceptance.file.close()  # the disk goes away under the node
    a, b = _wallets(single_home / "banka")
    status, doc = await _post(node, [_transfer(a, b, 1)])
    assert status == 503 and doc["error"] == "journal_failed"
    with pytest.raises(JournalError):
        await asyncio.wait_for(task, 10)
    failed = [json.loads(line) for line in log.getvalue().splitlines() if '"node_failed"' in line]
    assert len(failed) == 1 and failed[0]["component"] == "journal" and failed[0]["code"] == "journal_failed"


async def test_a_tx_in_a_decided_block_not_yet_executed_reads_pending_not_unknown(
        single_home: Path, start_node: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from node.pipeline import Pipeline
    gate = asyncio.Event()
    real = Pipeline.execute

    async def held(self: Pipeline, *args: Any) -> Any:
        await gate.wait()
        return await real(self, *args)

    monkeypatch.setattr(Pipeline, "execute", held)
    node = await start_node(_config(single_home / "banka"))
    a, b = _wallets(single_home / "banka")
    tx = _transfer(a, b, 0)
    status, doc = await _post(node, [tx])
    assert status == 200 and doc["accepted"] == 1
    pipeline = node.parts.consensus.pipeline
    deadline = time.monotonic() + 20
    while not pipeline.in_blocks(tx.hash) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert pipeline.in_blocks(tx.hash) and node.parts.mempool.get(tx.hash) is None
    assert (await _status(node, tx))["status"] == "pending"
    gate.set()
    assert (await _until(node, tx, lambda d: d["status"] == "committed"))["status"] == "committed"
