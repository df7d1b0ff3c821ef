"""Execution off the consensus round: decided blocks wait here and are executed in height order.

Block h carries the state root after h-2 (`protocol.block.state_root_height`), so consensus agrees on
h+1 while h executes (docs/consensus.md, "Pipelining"). `decide` makes a decided block durable
(`storage.decided`, one synced write on the store's writer thread) and queues it; its txs leave the
mempool then. `run()` (a child task of the consensus driver) executes queued blocks one at a time on the
store's execution thread, publishes each new head, corrects the mempool's nonces from the ledger and
hands the driver `BlockExecuted`. `parent()` is what a block at the next height must follow: the last
decided block and the state and results roots of `state_root_height` of that height.

Rule: one queue, bounded by `max_unexecuted` (beyond it `decide` waits for execution, so agreement can
run at most that far ahead); a tx stays a known duplicate (`in_blocks`) until its block's batch is
written; anything that fails here propagates and stops the node (fail-stop).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Histogram

from node import failpoints
from node.chain import ChainHead, ChainStore
from node.executor import BlockExecutor, Executed, Parent
from node.logging import Position
from node.mempool import Mempool
from node.status import Health
from node.sync import SyncService
from protocol import consensus as cs
from protocol.block import Block, state_root_height
from protocol.tx import SignedTx
from storage.errors import DatabaseCorrupt

MAX_UNEXECUTED = 4  # decided blocks waiting for execution; beyond it agreement waits
RECENT_ROOTS = 8  # state roots of the last executed heights kept for building and checking headers


@dataclass(frozen=True, slots=True)
class _Decided:
    block: Block
    cert_bytes: bytes
    txs: tuple[SignedTx, ...]
    at: float  # monotonic time it was decided


class Pipeline:
    def __init__(self, *, store: ChainStore, executor: BlockExecutor, mempool: Mempool, sync: SyncService,
                 health: Health, position: Position, exec_seconds: Histogram, execute_wait: Histogram,
                 executed: Callable[[cs.BlockExecuted], None], log: Any,
                 max_unexecuted: int = MAX_UNEXECUTED) -> None:
        """`executed(event)` hands the driver each `BlockExecuted` (it feeds the replica)."""
        self.store = store
        self.executor = executor
        self.mempool = mempool
        self.sync = sync
        self.health = health
        self.position = position
        self.exec_seconds = exec_seconds
        self.execute_wait = execute_wait
        self._on_executed = executed
        self.log = log
        self.max_unexecuted = max_unexecuted
        self._queue: deque[_Decided] = deque()
        self._in_blocks: dict[bytes, int] = {}  # tx hash -> height, for the txs of `_queue`
        self._wake = asyncio.Event()
        self._done = asyncio.Event()  # set after each execution (waiters re-check what they need)
        self._roots: dict[int, bytes] = {}
        self._results: dict[int, bytes] = {}  # results roots of the last executed heights
        self.reset(store.head)

    # ---- where the chain is ------------------------------------------------------------------------

    @property
    def tip(self) -> Parent:
        """The last decided block (its state root field is None: see `parent`)."""
        return self._tip

    def reset(self, head: ChainHead) -> None:
        """Start from an executed head with nothing queued (construction, a snapshot install)."""
        self._tip = Parent(head.height, head.block_hash, head.time_ms, None)
        self._roots = {head.height: head.state_root}
        self._results = {}

    def parent(self) -> Parent:
        """What a block at the next height must follow: the last decided block, and the state root after
        `state_root_height` of that height (None below a state-synced start)."""
        tip = self._tip
        want = state_root_height(tip.height + 1)
        if want > self.store.head.height:  # the replica asks only once that height is executed
            raise RuntimeError(f"block {tip.height + 1} needs the state root after {want}, which is not "
                               f"executed yet (executed: {self.store.head.height})")
        root = self._roots.get(want)
        if root is None:
            root = self.store.blocks.state_root_at(want)
        results = self._results.get(want)
        if results is None:
            results = self.store.blocks.results_root_at(want)
        return Parent(tip.height, tip.block_hash, tip.time_ms, root, results)

    def in_blocks(self, tx_hash: bytes) -> bool:
        """The tx is in a decided block not executed yet (so not in the tx index yet)."""
        return tx_hash in self._in_blocks

    # ---- deciding ----------------------------------------------------------------------------------

    def execute_stored(self) -> None:
        """Start-up, before consensus: execute the blocks a previous run decided but did not execute."""
        decided = self.store.decided
        for height, raw, cert_bytes in list(decided.entries()):
            if height > self.store.head.height:
                if height != self.store.head.height + 1:
                    raise DatabaseCorrupt(f"decided block {height} does not follow the stored height "
                                          f"{self.store.head.height}")
                block = Block.decode(raw)
                done = self.executor.execute(block, cert_bytes, self.executor.decoded(block), self.store.state)
                self.store.set_head(done.head)
                self.log.info("decided_block_executed", block_height=height, txs=len(done.txs))
            decided.drop(height)
        self.reset(self.store.head)

    async def decide(self, block: Block, cert_bytes: bytes, txs: tuple[SignedTx, ...]) -> None:
        """Make a decided block durable and queue it for execution; its txs leave the mempool."""
        await self.store.write(self._persist, block, cert_bytes)
        self._tip = Parent(block.height, block.hash, block.header.time, None)
        self._queue.append(_Decided(block, cert_bytes, txs, time.monotonic()))
        for tx in txs:
            self._in_blocks[tx.hash] = block.height
        self.mempool.remove_committed(txs)  # nonces from the txs; the ledger's follow after execution
        self._wake.set()

    async def backpressure(self) -> None:
        """Wait while more than `max_unexecuted` decided blocks wait for execution."""
        while len(self._queue) > self.max_unexecuted:
            await self._wait()

    def _persist(self, block: Block, cert_bytes: bytes) -> None:
        """Writer thread: the synced record that the block is decided (failure points around it)."""
        failpoints.hit("commit.before_decided")
        self.store.decided.put(block.height, block.raw, cert_bytes)
        failpoints.hit("commit.after_decided")

    async def _wait(self) -> None:
        self._done.clear()
        await self._done.wait()

    async def drain(self) -> None:
        """Wait until every decided block is executed (before sync hands over blocks or a snapshot)."""
        while self._queue:
            await self._wait()

    # ---- executing ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Execute decided blocks in height order until cancelled."""
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            d = self._queue[0]
            self.execute_wait.observe(time.monotonic() - d.at)
            done = await self.execute(d.block, d.cert_bytes, d.txs)
            self._queue.popleft()
            for tx in d.txs:
                if self._in_blocks.get(tx.hash) == d.block.height:
                    del self._in_blocks[tx.hash]
            later = {tx.sender for u in self._queue for tx in u.txs}
            self.mempool.remove_committed((), {s: n for s, n in done.nonces.items() if s not in later})
            failed = sum(1 for r in done.result.receipts if not r.ok)
            self.log.info("block_committed", block_height=done.height, txs=len(done.txs), failed=failed,
                          hash=done.block_hash.hex()[:16], state_root=done.state_root.hex()[:16])
            self._on_executed(cs.BlockExecuted(done.height, done.block_hash, done.state_root))
            self._done.set()

    async def execute(self, block: Block, cert_bytes: bytes, txs: tuple[SignedTx, ...]) -> Executed:
        """Execute one block on the execution thread and publish its head (queued or synced blocks)."""
        started = time.monotonic()
        done = await self.store.execute(self._execute_block, block, cert_bytes, txs)
        self.store.set_head(done.head)
        self._roots[done.height] = done.state_root
        self._results[done.height] = done.result.results_root
        for h in [h for h in self._roots if h <= done.height - RECENT_ROOTS]:
            del self._roots[h]
            self._results.pop(h, None)
        if done.height > self._tip.height:  # a synced block
            self._tip = Parent(done.height, done.block_hash, block.header.time, None)
        self.exec_seconds.observe(time.monotonic() - started)
        self.health.note_progress()
        self.position.update(height=done.height)
        self.sync.note_committed(done.height, done.block_hash, done.state_root)
        return done

    def _execute_block(self, block: Block, cert_bytes: bytes, txs: tuple[SignedTx, ...]) -> Executed:
        """Execution thread: the ledger run and the one batch (failure points around the batch); then the
        decided record is no longer needed (not synced: a start drops one at or below the stored height)."""
        failpoints.hit("commit.before_batch")
        done = self.executor.execute(block, cert_bytes, txs, self.store.state)
        failpoints.hit("commit.after_batch")
        self.store.decided.drop(block.height)
        return done
