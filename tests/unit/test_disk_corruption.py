"""Flipped bytes in every kind of file of a stopped node's database: the node refuses to start with
`db_corrupt` and the way out, or answers `503 db_corrupt` for the damaged data, and otherwise exactly
what it answered before. Never a different block hash, never a different tx status, never a lower height.

The chain is built by a real one-validator node in two runs, so the older blocks sit in `.ldb` tables
(LevelDB turns the log into a table when it reopens) and the newer ones in the `.log`. Each trial copies
that home, XORs one byte of one file of the kind at a seeded position, starts the node on the copy and
asks the API for every block and tx. `make test` runs a few seeds per file kind; set
SMELEDGER_CORRUPTION_SEEDS=500 for a long run (the summary of outcomes is printed; a failure names its
seed, and SMELEDGER_CORRUPTION_FIRST_SEED=<seed> with SEEDS=1 reruns exactly that trial).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.wallet import Wallet, read_password
from devtools import testnet as testnet_mod
from node.config import Config
from node.service import Node
from protocol.tx import SignedTx
from storage.errors import StorageError
from tests.conftest import ephemeral, free_port_block, load_home, run_node

KINDS = (".log", ".ldb", "MANIFEST", "CURRENT")
SEEDS = int(os.environ.get("SMELEDGER_CORRUPTION_SEEDS", "2"))
FIRST_SEED = int(os.environ.get("SMELEDGER_CORRUPTION_FIRST_SEED", "0"))
ROUNDS = (6, 4)  # blocks committed in the first run (end up in tables) and the second (stay in the log)
TXS_PER_ROUND = 8


@dataclasses.dataclass
class Pristine:
    home: Path  # the node home (config, keys, data)
    answers: dict[str, tuple[int, Any]]  # path -> (HTTP status, body) as the undamaged node answered
    height: int


STATUS_KEYS = ("chain_id", "genesis_hash", "height", "last_block_hash", "state_root")


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as r:
        body = await r.read()
        doc = json.loads(body) if r.content_type == "application/json" else body
        if url.endswith("/status") and r.status == 200:  # what says which chain and head the node is at
            doc = {k: doc[k] for k in STATUS_KEYS}
        return r.status, doc


class _Running:
    def __init__(self, node: Node, task: asyncio.Task[None]) -> None:
        self.node, self.task = node, task

    @property
    def url(self) -> str:
        assert self.node.api is not None
        return self.node.api.url

    async def stop(self) -> BaseException | None:
        """Stop the node; returns the error it ended with (a fail-stop), if any."""
        self.node.request_stop()
        try:
            await asyncio.wait_for(self.task, 10)
        except StorageError as exc:
            return exc
        return None


async def _start(cfg: Config) -> _Running:
    return _Running(*await run_node(cfg))


def _paths(txs: list[str], height: int) -> list[str]:
    paths = ["/status"]
    paths += [f"/blocks/{h}" for h in range(height + 1)]
    paths += [f"/blocks/{h}?format=msgpack" for h in range(1, height + 1)]
    paths += [f"/txs/{t}" for t in txs]
    return paths


async def _commit_round(session: aiohttp.ClientSession, url: str, sender: Wallet, to: Wallet, nonce: int,
                        chain: str) -> list[str]:
    """One POST of transfers (every third one over the balance: a failed receipt), waited until committed."""
    txs = [SignedTx.create(sender.key, {"chain": chain, "kind": "transfer", "from": sender.key.public_key,
                                        "nonce": nonce + i, "to": to.key.public_key, "asset": "CNY.BANKA",
                                        "amount": 10**15 if i % 3 == 2 else 100 + i})
           for i in range(TXS_PER_ROUND)]
    body = json.dumps({"txs": [t.raw.hex() for t in txs]})
    async with session.post(url + "/txs", data=body, headers={"Content-Type": "application/json"}) as r:
        doc = await r.json()
        assert r.status == 200 and doc["accepted"] == len(txs), doc
    for _ in range(400):
        status, doc = await _get(session, f"{url}/txs/{txs[-1].hash_hex}")
        if status == 200 and doc["status"] in ("committed", "failed"):
            return [t.hash_hex for t in txs]
        await asyncio.sleep(0.05)
    raise AssertionError("a round of transfers did not commit within 20 s")


async def _build(base: Path) -> Pristine:
    testnet_mod.create(base, validators=1, observers=0, accounts=2, base_port=free_port_block(1), kdf="min")
    home = base / "banka"
    cfg = ephemeral(load_home(home))
    pw = read_password(base / "wallets" / "PASSWORD")
    a, b = (Wallet.load(base / "wallets" / f"user0{i}.json", pw) for i in (1, 2))
    txs: list[str] = []
    answers: dict[str, tuple[int, Any]] = {}
    height = 0
    for run, rounds in enumerate(ROUNDS):
        node = await _start(cfg)
        async with aiohttp.ClientSession() as s:
            for _ in range(rounds):
                txs += await _commit_round(s, node.url, a, b, len(txs), cfg.node.chain_id)
            if run == len(ROUNDS) - 1:
                height = (await _get(s, node.url + "/status"))[1]["height"]
                for p in _paths(txs, height):
                    answers[p] = await _get(s, node.url + p)
        assert await node.stop() is None
    return Pristine(home, answers, height)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    built = asyncio.run(_build(tmp_path_factory.mktemp("pristine") / "net"))
    data = built.home / "data"
    assert any(p.suffix == ".ldb" for p in data.iterdir()), "the first run's blocks are in tables"
    assert any(p.suffix == ".log" and p.stat().st_size > 0 for p in data.iterdir()), "the second's in the log"
    statuses = Counter(doc["status"] for p, (_s, doc) in built.answers.items() if p.startswith("/txs/"))
    assert statuses["committed"] and statuses["failed"], statuses
    return built


def _flip(data: Path, kind: str, rng: random.Random) -> str:
    files = sorted(p for p in data.iterdir() if (p.suffix == kind if kind.startswith(".") else
                                                  p.name.startswith(kind)) and p.stat().st_size > 0)
    target = rng.choice(files)
    raw = bytearray(target.read_bytes())
    pos = rng.randrange(len(raw))
    raw[pos] ^= rng.randrange(1, 256)
    target.write_bytes(bytes(raw))
    return f"{target.name}@{pos}"


async def _trial(pristine: Pristine, work: Path, kind: str, seed: int) -> str:
    """One damaged copy: returns the outcome ('refused', 'stopped', 'served 503', 'unharmed')."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(pristine.home, work)
    where = _flip(work / "data", kind, random.Random(f"{kind}/{seed}"))
    context = f"seed {seed}, flipped {where}"
    cfg = ephemeral(load_home(work))
    try:
        node = await _start(cfg)
    except StorageError as exc:
        assert exc.code == "db_corrupt", f"{context}: refused with {exc.code}: {exc.message}"
        assert "resync from peers" in exc.message, context
        return "refused"
    damaged = 0
    try:
        async with aiohttp.ClientSession() as s:
            for path, (status, body) in pristine.answers.items():
                if node.task.done():
                    break
                try:
                    got = await _get(s, node.url + path)
                except aiohttp.ClientConnectionError:
                    break  # the node stopped itself (checked below)
                if got == (status, body):
                    continue
                assert got[0] == 503 and isinstance(got[1], dict) and got[1].get("error") == "db_corrupt", \
                    f"{context}: GET {path} answered {got[0]} {str(got[1])[:300]}, before {status} {str(body)[:300]}"
                damaged += 1
    finally:
        ended = await node.stop()
    if ended is not None:
        assert getattr(ended, "code", None) == "db_corrupt", f"{context}: the node ended with {ended!r}"
        assert "resync from peers" in str(ended), context
        return "stopped"
    return "served 503" if damaged else "unharmed"


def _seeds() -> Iterator[int]:
    return iter(range(FIRST_SEED, FIRST_SEED + SEEDS))


@pytest.mark.parametrize("kind", KINDS)
async def test_a_flipped_byte_in_a_stopped_nodes_files_is_refused_or_answered_db_corrupt_never_served(
        pristine: Pristine, tmp_path: Path, kind: str) -> None:
    outcomes = Counter([await _trial(pristine, tmp_path / "home", kind, seed) for seed in _seeds()])
    print(f"{kind}: {dict(outcomes)} over {SEEDS} seeds")
