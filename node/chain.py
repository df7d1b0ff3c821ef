"""The chain as a node's components share it: one store handle, the committed head, and progress.

`ChainStore` owns the database and the stores over it (state, blocks, consensus WAL, decided blocks).
Writes run on two single threads with disjoint key spaces: the writer thread (WAL appends, decided
blocks, snapshot installs) and the execution thread (block execution: blocks, state, receipts and the
head, in height order), so a WAL append for the height being agreed on never waits behind the execution
of the block before it (pipelining). Every long read runs on a small bounded pool of reader threads. A write or read that was started is never cut
short: a cancelled caller stops waiting, the thread finishes, and `close()` waits for all of them before
it closes the database (plyvel closed under a running batch crashes the process).

`head` is an immutable `ChainHead` (height, hash, state root, block time) of the last EXECUTED block that
the execution path replaces only after its batch is written, and `commit_in_flight` says a snapshot
install is running: the API and sync read one consistent head instead of racing a half-finished one.
Consensus may be one or more decided blocks ahead of it (`storage.decided`).

`wait_for_height` lets a reader (a follower's long poll of `GET /blocks/{height}`) wait, bounded in time
and in the number of waiters, for the head to reach a height instead of asking again and again.

`ChainStatus` is consensus/sync progress for /status (the driver and sync write it, the API reads it);
`TimeOffset` is the testnet-only block-time offset (the admin API writes it, the proposer reads it).

Rule: the holders are touched on the event loop only; the head is replaced, never mutated.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from storage.blocks import BlockStore
from storage.db import Database
from storage.decided import DecidedBlocks
from storage.errors import DatabaseClosed
from storage.state import StateStore
from storage.wal import ConsensusWal

T = TypeVar("T")

READ_THREADS = 2  # long reads (API queries, sync serving) at once; the writer thread is never among them
HEIGHT_WAITERS = 256  # readers waiting for a height at once; more are answered at once


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last committed block as one value: a reader sees all of it from one commit, never a mix."""

    height: int
    block_hash: bytes  # the genesis hash at height 0
    state_root: bytes  # state after `height`
    time_ms: int  # block time of `height` (0 at genesis)


@dataclass
class ChainStatus:
    """Consensus/sync/backfill progress as `/status` shows it; the consensus driver and sync keep it current."""

    view: int = 0
    primary: bytes | None = None  # public key of the primary of `view`
    syncing: bool = False
    sync_target: int | None = None  # height sync is heading for
    sync_progress: int | None = None  # height sync has reached
    last_commit_ms: int | None = None  # wall-clock ms of the last local commit
    history_from: int = 0  # lowest height with full history (blocks, receipts, events); 0: genesis on
    backfilling: bool = False  # history backfill is fetching what lies below history_from


@dataclass
class TimeOffset:
    """Testnet only: milliseconds the proposer adds to block time (set by POST /admin/time-offset)."""

    offset_ms: int = 0
    allowed: bool = False


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class ChainStore:
    def __init__(self, db: Database, state: StateStore, blocks: BlockStore, wal: ConsensusWal) -> None:
        self.db = db
        self.state = state
        self.blocks = blocks
        self.wal = wal
        self.decided = DecidedBlocks(db)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-write")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="store-exec")
        self._readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="store-read")
        self._closed = False
        self.commit_in_flight = False
        self._head = self.read_head()
        self._head_changed = asyncio.Event()  # set and replaced each time the head is
        self._height_waiters = 0

    # ---- the head ------------------------------------------------------------------------------------

    @property
    def head(self) -> ChainHead:
        return self._head

    def read_head(self) -> ChainHead:
        """The head as stored (at open, and after a state sync replaced it)."""
        b = self.blocks
        height = b.height()
        last = b.last_block_hash() or b""
        block = b.get_block(height) if height > 0 else None
        return ChainHead(height, last, b.state_root(), block.header.time if block is not None else 0)

    def set_head(self, head: ChainHead) -> None:
        """Publish a new head; called on the loop after the commit that made it is durable."""
        self._head = head
        changed, self._head_changed = self._head_changed, asyncio.Event()
        changed.set()

    async def wait_for_height(self, height: int, timeout_s: float) -> bool:
        """Wait up to `timeout_s` until the head reaches `height`; True when it has. With HEIGHT_WAITERS
        already waiting it answers at once."""
        if self._head.height >= height or self._height_waiters >= HEIGHT_WAITERS:
            return self._head.height >= height
        self._height_waiters += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    while self._head.height < height:
                        await self._head_changed.wait()
        finally:
            self._height_waiters -= 1
        return self._head.height >= height

    # ---- threads -------------------------------------------------------------------------------------

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a write on the writer thread. Cancelling the caller does not cancel the write."""
        return await self._run(self._writer, fn, *args)

    async def execute(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a block execution on the execution thread (blocks, state, receipts, head; in height order,
        one at a time). Cancelling the caller does not cancel it."""
        return await self._run(self._executor, fn, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a long read on a reader thread (bounded pool: excess reads queue)."""
        return await self._run(self._readers, fn, *args)

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise DatabaseClosed("the database is closed (the node is stopping)")
        fut = asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        fut.add_done_callback(_consume)  # a caller cancelled meanwhile no longer reads the outcome
        return await asyncio.shield(fut)

    async def close(self) -> None:
        """Refuse new work, wait for every started write and read to finish, then close the database."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._writer.shutdown, True)
        await asyncio.to_thread(self._executor.shutdown, True)
        await asyncio.to_thread(self._readers.shutdown, True)
        self.db.close()

    def close_now(self) -> None:
        """Synchronous close for start-up failures (no thread has run yet)."""
        self._closed = True
        self._writer.shutdown(wait=True)
        self._executor.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.db.close()
