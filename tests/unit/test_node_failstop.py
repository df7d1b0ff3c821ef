"""The node shell's promises, on in-process nodes: ready work only (no empty blocks), fail-stop on a failed
WAL write or a consensus bug (one log line, the vote never sent), honest /health, and validations that
raced a commit reported as stale instead of rejected."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.txbuild import build_body, sign
from client.wallet import Wallet, read_password
from devtools import testnet as testnet_mod
from node import failpoints
from node.config import Config
from node.service import SHUTDOWN_BUDGET_S, Node
from protocol import consensus as cs
from protocol.block import Block
from protocol.tx import SignedTx
from tests.conftest import ephemeral, free_port_block, load_home


@pytest.fixture
def armed() -> Iterator[Any]:
    """Arm failure points for one test; always disarmed afterwards."""
    yield failpoints.arm
    failpoints.arm("")


def _wallets(net: Path) -> tuple[Wallet, Wallet]:
    pw = read_password(net / "wallets" / "PASSWORD")
    return Wallet.load(net / "wallets" / "user01.json", pw), Wallet.load(net / "wallets" / "user02.json", pw)


def _transfer(w: Wallet, to: Wallet, nonce: int) -> SignedTx:
    return sign(w, build_body("transfer", {"to": to.account, "asset": "CNY.BANKA", "amount": "100"},
                              chain="smeledger-testnet", sender=w.public_key, nonce=nonce))


async def _get(node: Node, path: str) -> tuple[int, Any]:
    assert node.api is not None
    async with aiohttp.ClientSession() as s, s.get(node.api.url + path) as r:
        return r.status, await r.json()


async def _post(node: Node, txs: list[SignedTx]) -> dict[str, Any]:
    assert node.api is not None
    body = json.dumps({"txs": [t.raw.hex() for t in txs]}).encode()
    async with aiohttp.ClientSession() as s, s.post(node.api.url + "/txs", data=body,
                                                    headers={"Content-Type": "application/json"}) as r:
        doc: dict[str, Any] = await r.json()
        return doc


async def _until(pred: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


def _events(node: Node) -> list[dict[str, Any]]:
    stream = node._log_stream
    assert isinstance(stream, io.StringIO)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def _start(cfg: Config) -> tuple[Node, asyncio.Task[None]]:
    node = Node(cfg, log_stream=io.StringIO())
    task = asyncio.create_task(node.run())
    ready = asyncio.create_task(node.ready.wait())
    await asyncio.wait({task, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
    return node, task


async def _stop(node: Node, task: asyncio.Task[None]) -> None:
    node.request_stop()
    await asyncio.wait_for(task, SHUTDOWN_BUDGET_S)


async def test_an_idle_chain_makes_no_blocks_and_a_tx_behind_a_nonce_gap_is_not_work_until_the_gap_fills(
        single_home: Path) -> None:
    node, task = await _start(ephemeral(load_home(single_home / "banka")))
    try:
        assert node.parts is not None
        a, b = _wallets(single_home)
        start = node.parts.store.head.height
        await asyncio.sleep(0.5)  # a 1-validator chain proposes ready work at once: it would have made blocks by now
        assert node.parts.store.head.height == start, "an idle chain made a block"
        doc = await _post(node, [_transfer(a, b, 2)])
        assert doc["accepted"] == 1
        await asyncio.sleep(0.5)
        assert node.parts.store.head.height == start, "a tx behind a nonce gap made a block"
        assert node.parts.mempool.ready_txs == 0 and len(node.parts.mempool) == 1
        status, health = await _get(node, "/health")
        assert status == 200 and health["ok"], "gapped txs are not stalled work"
        assert (await _post(node, [_transfer(a, b, 0), _transfer(a, b, 1)]))["accepted"] == 2
        await _until(lambda: len(node.parts.mempool) == 0)  # type: ignore[union-attr]
        consensus = node.parts.consensus  # decided blocks leave the pool at once and execute after
        await _until(lambda: consensus.store.head.height == consensus.replica.committed)
        _, acct = await _get(node, "/accounts/" + a.account)
        assert acct["nonce"] == 3, "filling the gap committed all three"
        assert node.parts.store.head.height - start <= 2
    finally:
        await _stop(node, task)


async def test_a_proposers_own_votes_of_a_height_reach_the_wal_in_one_synced_write_before_any_is_sent_and_each_step_is_timed(
        single_home: Path) -> None:
    node, task = await _start(ephemeral(load_home(single_home / "banka")))  # alone: it proposes and votes
    try:
        assert node.parts is not None
        parts = node.parts
        log: list[tuple[Any, ...]] = []
        append = parts.store.wal.append_many

        def appending(records: Any, drop: Any = ()) -> list[int]:
            seqs = append(records, drop)
            log.append(("wal", len(records), len(drop)))
            return seqs

        broadcast = parts.p2p.broadcast

        def recording(msg_type: str, body: Any, **kw: Any) -> int:
            log.append(("sent", body["t"]))
            return broadcast(msg_type, body, **kw)

        parts.store.wal.append_many = appending  # type: ignore[method-assign]
        parts.p2p.broadcast = recording  # type: ignore[method-assign]
        a, b = _wallets(single_home)
        start = parts.store.head.height
        for nonce in (0, 1):
            assert (await _post(node, [_transfer(a, b, nonce)]))["accepted"] == 1
            await _until(lambda n=nonce: parts.store.head.height == start + 1 + n)
        writes = [i for i, e in enumerate(log) if e[0] == "wal"]
        assert len(writes) == 2, log  # one synced write per height: PRE-PREPARE, PREPARE and COMMIT
        for w in writes:
            assert log[w][1] == 3
            assert [e[0] for e in log[w + 1:w + 4]] == ["sent"] * 3, log
        assert log[writes[0]][2] == 0 and log[writes[1]][2] > 0, "the first height's records leave with the next write"
        counts = {step: parts.registry.get_sample_value("smeledger_consensus_step_seconds_count", {"step": step})
                  for step in ("propose_wait", "agreement", "wal_append", "decided_write", "execute_wait")}
        assert counts == {"propose_wait": 2, "agreement": 2, "wal_append": 2, "decided_write": 2,
                          "execute_wait": 2}, "each step of each height is timed once"
        assert parts.registry.get_sample_value("smeledger_proposed_tx_wait_seconds_count") == 2
    finally:
        await _stop(node, task)


async def test_a_failed_wal_write_stops_the_node_with_one_line_and_the_vote_is_never_sent(
        single_home: Path, armed: Any) -> None:
    node, task = await _start(ephemeral(load_home(single_home / "banka")))
    assert node.parts is not None
    sent: list[Any] = []
    real = node.parts.p2p.broadcast

    def recording(msg_type: str, body: Any, **kw: Any) -> int:
        sent.append(body)
        return real(msg_type, body, **kw)

    node.parts.p2p.broadcast = recording  # type: ignore[method-assign]
    armed("wal.before_append=raise")
    a, b = _wallets(single_home)
    assert (await _post(node, [_transfer(a, b, 0)]))["accepted"] == 1
    with pytest.raises(failpoints.FailpointError):
        await asyncio.wait_for(task, SHUTDOWN_BUDGET_S)
    assert sent == [], "a vote whose WAL write failed was sent"
    failed = [e for e in _events(node) if e["event"] == "node_failed"]
    assert len(failed) == 1 and failed[0]["component"] == "consensus"
    assert "wal.before_append" in failed[0]["error"]
    assert node.parts.store.db.closed


async def test_a_bug_in_the_consensus_owner_stops_the_node_within_a_second(single_home: Path, armed: Any) -> None:
    node, task = await _start(ephemeral(load_home(single_home / "banka")))
    armed("consensus.event=raise")
    a, b = _wallets(single_home)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await _post(node, [_transfer(a, b, 0)])  # the mempool change is the next event the driver handles
    with pytest.raises(failpoints.FailpointError):
        await asyncio.wait_for(task, 1.0)
    assert loop.time() - t0 < 1.0
    assert [e["component"] for e in _events(node) if e["event"] == "node_failed"] == ["consensus"]


async def test_health_is_503_with_the_reason_while_ready_work_waits_past_the_bound(tmp_path: Path) -> None:
    net = tmp_path / "net"
    testnet_mod.create(net, validators=4, observers=0, accounts=2, base_port=free_port_block(4), kdf="min")
    cfg = ephemeral(load_home(net / "banka"))  # one of four validators alone: no quorum, no commit
    cfg = dataclasses.replace(cfg, health=dataclasses.replace(cfg.health, stall_after_s=1))
    node, task = await _start(cfg)
    try:
        status, doc = await _get(node, "/health")
        assert status == 200 and doc["ok"]
        a, b = _wallets(net)
        assert (await _post(node, [_transfer(a, b, 0)]))["accepted"] == 1
        await asyncio.sleep(1.5)
        status, doc = await _get(node, "/health")
        assert status == 503 and not doc["ok"]
        assert any(p.startswith("consensus_stalled") for p in doc["problems"]), doc
        _, st = await _get(node, "/status")
        assert st["healthy"] is False and st["problems"] == doc["problems"]
        assert node.parts is not None
        assert node.parts.registry.get_sample_value("smeledger_healthy", {"node": "banka",
                                                                          "chain_id": "smeledger-testnet"}) == 0
    finally:
        await _stop(node, task)


async def test_a_validation_that_raced_a_commit_is_answered_stale_and_not_counted_as_a_rejection(
        single_home: Path) -> None:
    node, task = await _start(ephemeral(load_home(single_home / "banka")))
    try:
        assert node.parts is not None
        driver, store = node.parts.consensus, node.parts.store
        head = driver.pipeline.parent()
        wrong = Block.build(chain="smeledger-testnet", height=head.height + 5, parent=b"\x01" * 32,
                            proposer=node.parts.key.public_key, view=0, time=1, state_root=b"\x02" * 32,
                            results_root=b"\x02" * 32, txs=())
        answers: list[Any] = []
        driver.inbox.put_internal = answers.append  # type: ignore[method-assign]
        store.commit_in_flight = True
        await driver._validate_task(wrong, head)
        store.commit_in_flight = False
        assert answers == [cs.BlockValidated(wrong.hash, False, "stale")]
        await driver._validate_task(wrong, head)  # the same block against a settled head: a real rejection
        assert answers[-1] == cs.BlockValidated(wrong.hash, False, "wrong_height")
        rejected = [e for e in _events(node) if e["event"] == "block_rejected"]
        assert len(rejected) == 1 and rejected[0]["reason"] == "wrong_height"
    finally:
        await _stop(node, task)


async def test_a_block_decided_but_not_executed_when_the_node_died_is_executed_at_the_next_start(
        single_home: Path, armed: Any) -> None:
    cfg = ephemeral(load_home(single_home / "banka"))
    node, task = await _start(cfg)
    assert node.parts is not None
    start = node.parts.store.head.height
    armed("commit.before_batch=raise")  # decided and recorded, then the execution dies
    a, b = _wallets(single_home)
    assert (await _post(node, [_transfer(a, b, 0)]))["accepted"] == 1
    with pytest.raises(failpoints.FailpointError):
        await asyncio.wait_for(task, SHUTDOWN_BUDGET_S)
    assert [e["component"] for e in _events(node) if e["event"] == "node_failed"] == ["consensus"]
    armed("")
    node, task = await _start(cfg)
    try:
        assert node.parts is not None
        assert node.parts.store.head.height == start + 1, "the decided block was executed before consensus"
        assert node.parts.consensus.replica.committed == start + 1
        assert [e for e in _events(node) if e["event"] == "decided_block_executed"]
        _, acct = await _get(node, "/accounts/" + a.account)
        assert acct["nonce"] == 1
        assert not list(node.parts.store.decided.entries()), "the executed block's decided record is gone"
        assert (await _post(node, [_transfer(a, b, 1)]))["accepted"] == 1  # and the chain goes on from there
        await _until(lambda: node.parts.store.head.height == start + 2)  # type: ignore[union-attr]
    finally:
        await _stop(node, task)
