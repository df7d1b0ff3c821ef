"""Request bodies: read within hard bounds, decoded within hard bounds, large ones off the event loop.

The loop that serves the API also runs consensus, so a body never costs it more than a bounded step:
- `Content-Length` above the limit is a 413 before a byte of the body is read; a chunked body is
  counted while it streams and refused (413) the moment it passes the same limit.
- Compressed bodies (`Content-Encoding` other than identity) are refused with 415 before reading:
  aiohttp's own inflating is switched off (server.py), so a gzip bomb costs one header check. No client
  of ours compresses (tx bodies are signatures and keys, which do not compress), and refusing removes
  the whole amplification class instead of bounding it.
- The whole body must arrive within `timeout_s` (408); a body above `SMALL_BODY` first takes one of a few
  large-body slots (`BODY_BUFFER_BYTES` of them all together), so clients cannot make the node buffer
  more than that at once; no slot within the timeout is a 503 with Retry-After.
- Decoding of a body above `SMALL_BODY` runs on the API's decode thread, and every decoder bounds its
  work before building anything: JSON by counting its containers and items in the raw bytes (so depth
  and size are bounded before `json.loads`, which has no depth limit) and refusing integers longer than
  `MAX_INT_DIGITS` (Python's int conversion limit is a ValueError at 4,300 digits, far beyond any
  field); msgpack by walking its headers with `msgpack.Unpacker` under a depth and item budget before
  `codec.decode` builds objects (msgpack's own limits are per container, not per document).
Every refusal is an `ApiError` with a stable code; nothing here answers 500.
Rule: handlers read bodies only through `BodyReader.load` and never call `request.read()` themselves.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgpack
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from node.api.connections import first_line
from node.errors import ApiError

T = TypeVar("T")

SMALL_BODY = 64 * 1024  # read and decoded on the loop up to this size
BODY_BUFFER_BYTES = 64 * 1024 * 1024  # large bodies held at once, all clients together
DECODE_THREADS = 1  # decoding shares the GIL with the loop: one decoder at a time competes with it
MAX_INT_DIGITS = 40
READ_SIZE = 64 * 1024  # the msgpack walk reads the body through a window this large, not a copy of it


class BodyReader:
    """One per app: the body limit and timeout, the large-body slots and the decode threads."""

    def __init__(self, max_bytes: int, timeout_s: float) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.large_slots = max(2, BODY_BUFFER_BYTES // max_bytes)
        self._slots = asyncio.Semaphore(self.large_slots)
        self._pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="api-decode")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def load(self, request: web.Request, decode: Callable[[bytes], T]) -> T:
        """Read the request's body and decode it with `decode` (a pure function that raises ApiError)."""
        enc = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
        if enc not in ("", "identity"):
            raise ApiError(f"compressed request bodies are not accepted (Content-Encoding: {enc[:32]}); "
                           "send the body uncompressed", code="unsupported_encoding", http_status=415)
        length = request.content_length
        if length is not None and length > self.max_bytes:
            raise _too_large(self.max_bytes)
        if length == 0 or not request.body_exists:
            raise ApiError("empty request body", code="empty_body")
        if length is not None and length <= SMALL_BODY:
            return decode(await self._read(request))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            raise ApiError("too many large request bodies in flight; retry shortly", code="busy",
                           http_status=503) from None
        try:
            body = await self._read(request, deadline)
            if len(body) <= SMALL_BODY:
                return decode(body)
            return await loop.run_in_executor(self._pool, decode, body)
        finally:
            self._slots.release()

    async def _read(self, request: web.Request, deadline: float | None = None) -> bytes:
        stream = request.content
        chunks: list[bytes] = []
        n = 0
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                while chunk := await stream.readany():
                    n += len(chunk)
                    if n > self.max_bytes:
                        raise _too_large(self.max_bytes)
                    chunks.append(chunk)
        except TimeoutError:
            raise ApiError(f"the request body did not arrive within {self.timeout_s:g} s", code="body_timeout",
                           http_status=408) from None
        except (web.RequestPayloadError, HttpProcessingError, ConnectionError) as exc:
            why = first_line(exc, type(exc).__name__)
            raise ApiError(f"the request body is broken: {why}", code="bad_body") from None
        except RuntimeError:  # aiohttp's StreamReader once the client has gone: "Connection closed."
            if request.transport is None or request.transport.is_closing():
                raise ApiError("the connection closed before the body arrived", code="bad_body") from None
            raise
        if not chunks:
            raise ApiError("empty request body", code="empty_body")
        return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(f"request body too large (limit {limit} bytes)", code="body_too_large", http_status=413)


# --- JSON ------------------------------------------------------------------------------------------

def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer with more than {MAX_INT_DIGITS} digits")
    return int(text)


def loads_json(body: bytes, *, max_containers: int, max_items: int) -> Any:
    """`json.loads` with its work bounded first: at most `max_containers` arrays/objects (which bounds
    the depth too) and `max_items` items, counted in the raw bytes (a bracket or comma inside a string
    counts as well: conservative, never lenient). ApiError(bad_json) for anything else."""
    containers = body.count(b"[") + body.count(b"{")
    if containers > max_containers:
        raise ApiError(f"JSON body has more than {max_containers} arrays/objects", code="bad_json")
    if body.count(b",") >= max_items:
        raise ApiError(f"JSON body has more than {max_items} items", code="bad_json")
    try:
        return json.loads(body, parse_int=_bounded_int)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and _bounded_int's refusal
        why = first_line(exc, type(exc).__name__)
        raise ApiError(f"body is not valid JSON: {why}", code="bad_json") from None


# --- msgpack ---------------------------------------------------------------------------------------

def _container(first: int) -> str | None:
    if 0x90 <= first <= 0x9F or first in (0xDC, 0xDD):
        return "array"
    if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF):
        return "map"
    return None


def check_msgpack_shape(body: bytes, *, max_depth: int, max_items: int, max_str: int, max_bin: int) -> None:
    """Walk a msgpack document's headers without building it: ApiError(bad_msgpack) when it nests deeper
    than `max_depth`, holds more than `max_items` values in all, is truncated or has trailing bytes.
    Work is bounded by `max_items` whatever the input; `codec.decode` then does the strict decoding."""
    u = msgpack.Unpacker(io.BytesIO(body), read_size=READ_SIZE, max_buffer_size=max(max_str, max_bin) + READ_SIZE,
                         max_str_len=max_str, max_bin_len=max_bin, max_array_len=max_items, max_map_len=max_items)
    budget = max_items
    pending = [1]  # values still to read in each open container, outermost first (no recursion, no closure)
    try:
        while pending:
            if not pending[-1]:
                pending.pop()
                continue
            pending[-1] -= 1
            depth = len(pending) - 1
            pos = u.tell()
            if pos >= len(body):
                raise ApiError("msgpack body is truncated", code="bad_msgpack")
            kind = _container(body[pos])
            if kind is None:
                u.skip()
                continue
            n = u.read_array_header() if kind == "array" else 2 * u.read_map_header()
            if n and depth >= max_depth:
                raise ApiError(f"msgpack body nests deeper than {max_depth}", code="bad_msgpack")
            budget -= n
            if budget < 0:
                raise ApiError(f"msgpack body holds more than {max_items} values", code="bad_msgpack")
            pending.append(n)
    except (msgpack.UnpackException, ValueError) as exc:
        raise ApiError(f"body is not valid msgpack: {first_line(exc, type(exc).__name__)}",
                       code="bad_msgpack") from None
    if u.tell() != len(body):
        raise ApiError("trailing bytes after the msgpack value", code="bad_msgpack")


BODIES: web.AppKey[BodyReader] = web.AppKey("bodies", BodyReader)


def bodies(request: web.Request) -> BodyReader:
    return request.app[BODIES]
