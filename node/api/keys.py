"""The API's typed dependencies (shared by the server and the route modules), the one way a handler runs a
storage read off the event loop, and the one way a handler reads an integer parameter.

Rule: handlers reach the node only through `ApiDeps` (`request.app[DEPS]`): each field is a component or
value the API reads, typed and never None. A handler whose read can be long (a trace, an event scan, a
page of blocks, a proof taken under the state lock) calls `read_off_loop`; at most `MAX_READ_THREADS`
such reads run at once per app, on the chain store's reader threads, so the loop that also runs consensus
and P2P is never stalled by them and the writer thread consensus commits on is never taken by a query.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry

from node.acceptance import Acceptance
from node.chain import ChainStore, TimeOffset
from node.config import ApiSection
from node.errors import ApiError
from node.genesis import Genesis
from node.mempool import Mempool
from node.p2p import P2P
from node.status import NodeStatus

T = TypeVar("T")

MAX_READ_THREADS = 2


@dataclass(frozen=True, slots=True)
class ApiDeps:
    settings: ApiSection
    token_path: Path
    genesis: Genesis
    store: ChainStore
    mempool: Mempool
    in_decided_block: Callable[[bytes], bool]  # decided, not executed yet: still pending to a client
    acceptance: Acceptance
    p2p: P2P
    status: NodeStatus
    time_offset: TimeOffset
    registry: CollectorRegistry
    log: Any


DEPS: web.AppKey[ApiDeps] = web.AppKey("deps", ApiDeps)
READS: web.AppKey[asyncio.Semaphore] = web.AppKey("reads", asyncio.Semaphore)


def deps(request: web.Request) -> ApiDeps:
    return request.app[DEPS]


async def read_off_loop(request: web.Request, fn: Callable[[], T]) -> T:
    """Run `fn` (a storage read that opens and closes what it uses) on a reader thread."""
    async with request.app[READS]:
        return await request.app[DEPS].store.read(fn)


def parse_uint(text: str, lo: int, hi: int, *, what: str, code: str) -> int:
    """An integer request parameter in lo..hi, or ApiError(code). ASCII digits only: `str.isdigit()`
    also accepts digits `int()` refuses (superscripts), which must be a 400, not a 500."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not lo <= int(text) <= hi:
        raise ApiError(f"{what} must be an integer from {lo} to {hi}", code=code)
    return int(text)
