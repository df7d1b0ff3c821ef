"""Tx signature checks for the mempool: verified once, in chunks on a small thread pool, and cached.

`SigChecks` owns the cache of (tx hash -> signature) pairs already verified, with the signature, so a forged
copy of a known body is not mistaken for it, and the executor the checks run on. `Verification` checks one
batch: cache hits answer at once, the rest go to the executor in chunks as soon as a chunk is full (so the
caller's decoding and the verifying overlap); a short tail is split in two so both workers help.

Rule: event-loop only; the executor sees plain tuples of bytes. The cache is bounded (oldest out first).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from concurrent.futures import Executor, ThreadPoolExecutor

from node.p2p.metrics import MempoolStats
from protocol.crypto import DOMAIN_TX, verify
from protocol.tx import SignedTx


def _verify_chunk(items: list[tuple[bytes, bytes, bytes]]) -> list[bool]:
    return [verify(pk, DOMAIN_TX, body, sig) for pk, body, sig in items]


class SigChecks:
    def __init__(self, stats: MempoolStats, *, chunk: int, cache_size: int, executor: Executor | None = None) -> None:
        self.stats = stats
        self.chunk = chunk
        self.cache_size = cache_size
        self._own_executor = executor is None
        self.executor: Executor = executor or ThreadPoolExecutor(2, thread_name_prefix="sigverify")
        self.cache: OrderedDict[bytes, bytes] = OrderedDict()

    def known(self, tx_hash: bytes, sig: bytes) -> bool:
        """True when this exact (body hash, signature) pair was verified before."""
        return self.cache.get(tx_hash) == sig

    def batch(self) -> Verification:
        return Verification(self)

    async def verify(self, txs: list[SignedTx]) -> list[bool]:
        """Signature check for each tx, from the cache or in executor chunks; results are cached."""
        v = Verification(self)
        for tx in txs:
            v.add(tx)
        return await v.results()

    def close(self) -> None:
        if self._own_executor:
            self.executor.shutdown(wait=False, cancel_futures=True)


class Verification:
    """Signature checks of one batch (see the module docstring)."""

    def __init__(self, checks: SigChecks) -> None:
        self._checks = checks
        self._loop = asyncio.get_running_loop()
        self._txs: list[SignedTx] = []
        self._ok: list[bool] = []
        self._todo: list[int] = []
        self._jobs: list[tuple[list[int], asyncio.Future[list[bool]]]] = []

    def add(self, tx: SignedTx) -> None:
        self._ok.append(self._checks.known(tx.hash, tx.sig))
        self._txs.append(tx)
        if not self._ok[-1]:
            self._todo.append(len(self._txs) - 1)
            if len(self._todo) >= self._checks.chunk:
                self._submit(self._todo)
                self._todo = []

    def _submit(self, idx: list[int]) -> None:
        items = [(self._txs[i].sender, self._txs[i].body_bytes, self._txs[i].sig) for i in idx]
        self._jobs.append((idx, self._loop.run_in_executor(self._checks.executor, _verify_chunk, items)))

    async def results(self) -> list[bool]:
        if self._todo:
            half = (len(self._todo) + 1) // 2
            self._submit(self._todo[:half])
            if self._todo[half:]:
                self._submit(self._todo[half:])
            self._todo = []
        checks = self._checks
        cache = checks.cache
        for idx, fut in self._jobs:
            for i, good in zip(idx, await fut, strict=True):
                self._ok[i] = good
                if good:
                    cache[self._txs[i].hash] = self._txs[i].sig
            checks.stats.verified += len(idx)
        while len(cache) > checks.cache_size:
            cache.popitem(last=False)
        return self._ok
