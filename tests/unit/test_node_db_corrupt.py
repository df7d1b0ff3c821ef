"""What a running node does with `db_corrupt`: the API answers 503 `db_corrupt` for damaged data (never a
different block or a guessed tx status), and a corrupt read on the commit path stops the node (fail-stop,
DESIGN section 7) with one JSON log line (`node_failed`) naming the key and the way out."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.wallet import Wallet, read_password
from node.executor import BlockExecutor
from node.service import Node
from protocol.tx import SignedTx
from storage import schema
from storage.errors import DatabaseCorrupt
from tests.conftest import ephemeral, load_home

WAY_OUT = "resync from peers: stop the node, move the data dir"


def _wallets(base: Path) -> tuple[Wallet, Wallet]:
    pw = read_password(base / "wallets" / "PASSWORD")
    return Wallet.load(base / "wallets" / "user01.json", pw), Wallet.load(base / "wallets" / "user02.json", pw)


def _transfers(a: Wallet, b: Wallet, first_nonce: int, n: int) -> list[SignedTx]:
    return [SignedTx.create(a.key, {"chain": "smeledger-testnet", "kind": "transfer", "from": a.key.public_key,
                                    "nonce": first_nonce + i, "to": b.key.public_key, "asset": "CNY.BANKA",
                                    "amount": 100}) for i in range(n)]


async def _post(s: aiohttp.ClientSession, url: str, txs: list[SignedTx]) -> None:
    body = json.dumps({"txs": [t.raw.hex() for t in txs]})
    async with s.post(url + "/txs", data=body, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 200 and (await r.json())["accepted"] == len(txs)


async def _get(s: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with s.get(url) as r:
        return r.status, await r.json()


async def _until_height(s: aiohttp.ClientSession, url: str, height: int) -> int:
    for _ in range(400):
        now: int = (await _get(s, url + "/status"))[1]["height"]
        if now >= height:
            return now
        await asyncio.sleep(0.05)
    raise AssertionError(f"height {height} not reached within 20 s")


async def test_the_api_answers_503_db_corrupt_for_a_damaged_block_or_receipt_never_other_data(
        single_home: Path, start_node: Any) -> None:
    node: Node = await start_node(ephemeral(load_home(single_home / "banka")))
    assert node.api is not None and node.parts is not None
    url, db = node.api.url, node.parts.store.db
    a, b = _wallets(single_home)
    first, second = _transfers(a, b, 0, 2), _transfers(a, b, 2, 2)
    async with aiohttp.ClientSession() as s:
        await _post(s, url, first)
        h1 = await _until_height(s, url, 1)
        await _post(s, url, second)
        h2 = await _until_height(s, url, h1 + 1)  # block h2 has not been read through the API yet
        _s, before = await _get(s, f"{url}/blocks/{h1}")
        # a block replaced by another block's (well-formed, checksummed) bytes
        db.put(schema.block_key(h2), db.get(schema.block_key(h1)), sync=True)
        for path in (f"/blocks/{h2}", f"/blocks/{h2}?format=msgpack", f"/txs/{second[-1].hash_hex}"):
            status, doc = await _get(s, url + path)
            assert status == 503 and doc["error"] == "db_corrupt", (path, status, doc)
            assert schema.describe(schema.block_key(h2)) in doc["message"] and WAY_OUT in doc["message"]
        assert await _get(s, f"{url}/blocks/{h1}") == (200, before)
        # a receipt swapped for the receipt of another tx: never "committed" or "failed" from it
        status, doc = await _get(s, f"{url}/txs/{first[0].hash_hex}")
        assert status == 200 and doc["status"] == "committed"
        key = schema.receipt_key(doc["height"], doc["index"])
        db.put(key, db.get(schema.receipt_key(doc["height"], doc["index"] + 1)), sync=True)
        status, doc = await _get(s, f"{url}/txs/{first[0].hash_hex}")
        assert status == 503 and doc["error"] == "db_corrupt" and "status" not in doc
        assert schema.describe(key) in doc["message"] and WAY_OUT in doc["message"]
    assert not node.stopped.is_set()  # damaged data is refused; the node goes on with what is intact


async def test_a_corrupt_read_on_the_commit_path_stops_the_node_with_one_log_line_naming_the_key(
        single_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    damaged = schema.state_key(b"bal/damaged")

    def corrupt_execute(self: BlockExecutor, *args: Any) -> Any:
        raise DatabaseCorrupt("a stored state value does not decode", key=damaged, path="data")

    monkeypatch.setattr(BlockExecutor, "execute", corrupt_execute)
    logs = io.StringIO()
    node = Node(ephemeral(load_home(single_home / "banka")), log_stream=logs)
    task = asyncio.create_task(node.run())
    await asyncio.wait_for(node.ready.wait(), 20)
    assert node.api is not None
    a, b = _wallets(single_home)
    async with aiohttp.ClientSession() as s:
        await _post(s, node.api.url, _transfers(a, b, 0, 1))
    with pytest.raises(DatabaseCorrupt) as info:
        await asyncio.wait_for(task, 10)
    assert info.value.key == damaged
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]  # every line is JSON
    fatal = [x for x in lines if x.get("level") in ("error", "critical")]
    assert [x["event"] for x in fatal] == ["node_failed"], fatal
    assert fatal[0]["code"] == "db_corrupt" and fatal[0]["component"] == "consensus"
    assert schema.describe(damaged) in fatal[0]["error"] and "resync from peers" in fatal[0]["error"]
    assert node.parts is not None and node.parts.store.db.closed
