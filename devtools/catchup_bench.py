"""Block-sync catch-up speed: committed tx/s of a node replaying certified blocks it fetches from a peer
(`make bench` records it as `catchup_tx_per_s`; `python -m devtools.catchup_bench` prints it alone).

Two in-process nodes on loopback P2P, each with its own LevelDB in a temp dir and the node's own
`SyncService`: a source holding BLOCKS certified blocks of BLOCK_TXS transfers among the standard demo
participants (built, executed and certified first; not timed), and a node at genesis that block-syncs
them: ranges from the peer, every commit certificate verified, every tx executed by `BlockExecutor` and
each block committed in one synced batch, exactly as the consensus driver does for synced blocks.
Timed from the sync request to the commit of the last block; the figure is txs / seconds.

Rule: bounded (a fixed number of blocks, and a timeout), and every task, socket and database it opens is
closed in a `finally`.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from node.chain import ChainStatus, ChainStore
from node.executor import BlockExecutor
from node.p2p import P2P, P2PSettings, PeerAddr
from node.sync import SnapshotPlan, SyncEnv, SyncService
from protocol import codec
from protocol.block import Block, state_root_height
from protocol.consensus import CommitCertificate, vote_bytes
from protocol.crypto import DOMAIN_CONSENSUS, PrivateKey, sha256
from protocol.ledger import apply_genesis, keys
from protocol.ledger.harness import CHAIN, T0, Harness
from protocol.limits import SizeLimits
from protocol.state import Overlay
from protocol.tx import SignedTx
from storage.blocks import BlockStore
from storage.db import Database
from storage.state import StateStore
from storage.wal import ConsensusWal

BLOCKS = 12
BLOCK_TXS = 2000
TIMEOUT_S = 300.0
VALIDATORS = [PrivateKey(sha256(b"catchup-validator-%d" % i)) for i in range(4)]
NAMES = ["banka", "bankb", "smea", "smeb", "supplier", "inv"]


class _Quiet:
    """A structlog-shaped logger that drops everything (the bench prints its own lines)."""

    def bind(self, **_kw: Any) -> _Quiet:
        return self

    def __getattr__(self, _name: str) -> Any:
        return lambda *_a, **_kw: None


class _Node:
    """A store, its P2P and sync service; `deliver_block` executes and commits like the consensus driver."""

    def __init__(self, home: Path, key: PrivateKey, harness: Harness, frame: int,
                 dial: list[PeerAddr] | None = None) -> None:
        db = Database.open(home)
        state = StateStore(db, index_prefixes=keys.INDEX_PREFIXES)
        blocks = BlockStore(db, state)
        overlay = Overlay(state.reader(snapshot=False))
        apply_genesis(overlay, harness.spec)
        blocks.commit_genesis(state.stage(overlay.changes()), sha256(b"catchup genesis"))
        self.store = ChainStore(db, state, blocks, ConsensusWal(db))
        self.executor = BlockExecutor(CHAIN, blocks, max_future_ms=10**12, max_block_txs=BLOCK_TXS,
                                      max_block_bytes=4 * 1024 * 1024)
        validators = tuple(v.public_key for v in VALIDATORS)
        self.p2p = P2P(key, CHAIN, validators=validators, dial=dial or (),
                       settings=P2PSettings(max_frame=frame), log=_Quiet())
        self.status = ChainStatus()
        self.sync = SyncService(SyncEnv(self.store, self.p2p, CHAIN, validators, self.status), self,
                                checkpoint_interval=10**9, registry=CollectorRegistry(), log=_Quiet(),
                                state_sync=False)
        self.tasks: list[asyncio.Task[None]] = []

    async def deliver_block(self, block: Block, cert: CommitCertificate) -> None:
        await self.commit(block, codec.encode(cert.to_value()))

    async def install_snapshot(self, plan: SnapshotPlan) -> None:
        raise RuntimeError("the catch-up bench never state-syncs")

    async def commit(self, block: Block, cert: bytes) -> None:
        """What ConsensusDriver._store_block does: decode, execute and commit on the writer thread."""
        txs = self.executor.decoded(block)
        done = await self.store.execute(self.executor.execute, block, cert, txs, self.store.state)
        self.store.set_head(done.head)

    async def start(self) -> None:
        await self.p2p.start()
        self.tasks = [asyncio.create_task(self.p2p.run()), asyncio.create_task(self.sync.run())]

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.p2p.stop()
        await self.store.close()


def _certify(block: Block) -> bytes:
    sigs = tuple((i, VALIDATORS[i].sign(DOMAIN_CONSENSUS, vote_bytes("commit", CHAIN, 0, block.height, block.hash, i)))
                 for i in range(3))
    return codec.encode(CommitCertificate(block.height, 0, block.hash, sigs).to_value())


async def _grow(src: _Node, harness: Harness, blocks: int, block_txs: int) -> int:
    """Build, execute and certify the source's chain; returns the number of txs."""
    nonce = dict.fromkeys(NAMES, 0)
    txs_total = 0
    for height in range(1, blocks + 1):
        txs: list[SignedTx] = []
        for i in range(block_txs):
            a, b = NAMES[i % 6], NAMES[(i + height) % 6]
            b = b if b != a else NAMES[(i + 1) % 6]
            txs.append(harness.tx(a, "transfer", nonce=nonce[a], to=harness.id(b), asset="CNY.BANKA", amount=1))
            nonce[a] += 1
        head, base = src.store.head, state_root_height(height)  # a header carries the roots of height-2
        block = Block.build(chain=CHAIN, height=height, parent=head.block_hash, proposer=VALIDATORS[0].public_key,
                            view=0, time=T0 + height * 1000, state_root=src.store.blocks.state_root_at(base) or b"",
                            results_root=src.store.blocks.results_root_at(base) or b"", txs=[t.raw for t in txs])
        await src.commit(block, _certify(block))
        txs_total += len(txs)
    return txs_total


async def _measure(tmp: Path, blocks: int, block_txs: int) -> dict[str, Any]:
    harness = Harness.standard()
    frame = SizeLimits.derive(BLOCK_TXS, 4 * 1024 * 1024, len(VALIDATORS)).frame_bytes
    src = _Node(tmp / "source", VALIDATORS[0], harness, frame)
    dst: _Node | None = None
    try:
        await src.start()
        txs = await _grow(src, harness, blocks, block_txs)
        assert src.p2p.listen_port is not None
        dst = _Node(tmp / "node", VALIDATORS[1], harness, frame,
                    dial=[PeerAddr(VALIDATORS[0].public_key, "127.0.0.1", src.p2p.listen_port)])
        await dst.start()
        deadline = time.monotonic() + TIMEOUT_S
        while not dst.p2p.is_connected(VALIDATORS[0].public_key):
            if time.monotonic() > deadline:
                raise TimeoutError("the catch-up bench nodes did not connect")
            await asyncio.sleep(0.01)
        load = _loadavg()
        t0, c0 = time.perf_counter(), time.process_time()
        dst.sync.request(blocks, [VALIDATORS[0].public_key])
        while dst.store.head.height < blocks:
            if time.monotonic() > deadline:
                raise TimeoutError(f"catch-up reached {dst.store.head.height} of {blocks} blocks in time")
            await asyncio.sleep(0.005)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        if dst.store.head.state_root != src.store.head.state_root:
            raise RuntimeError("the caught-up node's state root differs from the source's")
        # cores < 1 means other processes held the CPU meanwhile; tx per CPU second is what one core does
        return {"catchup_tx_per_s": round(txs / seconds), "catchup_blocks": blocks, "catchup_txs": txs,
                "catchup_seconds": round(seconds, 2), "catchup_cpu_cores": round(cpu / seconds, 2),
                "catchup_tx_per_cpu_s": round(txs / cpu), "catchup_loadavg_at_start": load}
    finally:
        if dst is not None:
            await dst.close()
        await src.close()


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def catchup_rate(blocks: int = BLOCKS, block_txs: int = BLOCK_TXS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="smeledger-catchup-") as tmp:
        return asyncio.run(_measure(Path(tmp), blocks, block_txs))


def main() -> int:
    print(describe(catchup_rate()))
    return 0


def describe(res: dict[str, Any]) -> str:
    return (f"block-sync catch-up: {res['catchup_tx_per_s']:,} tx/s ({res['catchup_txs']:,} txs in "
            f"{res['catchup_blocks']} blocks, {res['catchup_seconds']} s; the process got "
            f"{res['catchup_cpu_cores']} cores, {res['catchup_tx_per_cpu_s']:,} tx per CPU second; load "
            f"average {res['catchup_loadavg_at_start']})")


if __name__ == "__main__":
    sys.exit(main())
