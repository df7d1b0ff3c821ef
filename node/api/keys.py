"""Typed keys of the aiohttp application (shared by the server and the route modules), the one way a
handler runs a storage read off the event loop, and the one way a handler reads an integer parameter.

Rule: a handler whose read can be long (a trace, an event scan, a page of blocks, a proof taken under
the state lock) calls `read_off_loop`; at most `MAX_READ_THREADS` such reads run at once per app, so the
loop that also runs consensus and P2P is never stalled by them and the worker threads consensus uses
for its WAL and block execution are never all taken by queries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from node.context import NodeContext
from node.errors import ApiError

T = TypeVar("T")

MAX_READ_THREADS = 2

CTX: web.AppKey[NodeContext] = web.AppKey("ctx", NodeContext)
READS: web.AppKey[asyncio.Semaphore] = web.AppKey("reads", asyncio.Semaphore)


async def read_off_loop(request: web.Request, fn: Callable[[], T]) -> T:
    """Run `fn` (a storage read that opens and closes what it uses) in a worker thread."""
    async with request.app[READS]:
        return await asyncio.to_thread(fn)


def parse_uint(text: str, lo: int, hi: int, *, what: str, code: str) -> int:
    """An integer request parameter in lo..hi, or ApiError(code). ASCII digits only: `str.isdigit()`
    also accepts digits `int()` refuses (superscripts), which must be a 400, not a 500."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not lo <= int(text) <= hi:
        raise ApiError(f"{what} must be an integer from {lo} to {hi}", code=code)
    return int(text)
