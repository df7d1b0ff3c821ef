"""The API's HTTP connections: caps, timeouts, keep-alive limits, and JSON for errors before a handler.

`HttpProtocol` is aiohttp's per-connection `RequestHandler` with the node's rules; `ApiServer` creates
one per accepted socket (server.py). What it adds:
- Slots (node/connslots.py): a connection over the per-address or the total cap first makes room by
  closing the connection that has waited longest for a request head (a slow head, or an idle keep-alive
  since its last answer). A connection in a handler (reading its body included, which `body_timeout_s`
  bounds) is busy; only when every connection there is busy is a newcomer refused with a canned
  `{"error": "too_many_connections"}`, 429 for its address's cap, 503 for the node's, and closed
  before anything is parsed.
- The head of every request must be complete within `idle_timeout_s` of the connection opening or of
  the previous answer (aiohttp's keep-alive timer: it fires while the connection waits for a head, also
  a partial one), so slow-header clients are closed by the node; bodies have their own deadline
  (node/api/bodies.py). After `max_requests` answers a connection is closed (`Connection: close`).
- Errors aiohttp answers itself, before any handler (request line or header too long, too many headers,
  bad method, bad chunked encoding, invalid Content-Length): `handle_error` is overridden to answer the
  JSON error format with a code per aiohttp's exception class, and a body whose chunked framing breaks
  while a handler reads it fails that read at once (`data_received`) instead of leaving it to time out.
- aiohttp's own logging calls (`log_exception`) go to the node's JSON log, throttled per message.
Relies on `aiohttp.web_protocol.RequestHandler` internals of aiohttp 3.14 (`_messages`, `_ErrInfo`):
tests/unit/test_api_hostile_connections.py fails if they change.
Rule: a client cannot get a 500, a plain-text answer or an unbounded hold on a descriptor from here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import http_exceptions as hx
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError, _ErrInfo

from node.connslots import ConnectionSlots, Slot, address_group
from node.logging import Throttle

LINGER_S = 2.0  # an unread body is drained (and discarded) this long after the answer, then the socket closes
MAX_LINE = 8190  # request line and each header line
MAX_HEADERS = 32
BACKLOG = 128

# aiohttp's parser exceptions, most specific first -> stable error codes
_PARSE_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (hx.BadHttpMethod, "bad_method"), (hx.LineTooLong, "line_too_long"), (hx.InvalidHeader, "bad_header"),
    (hx.InvalidURLError, "bad_url"), (hx.BadStatusLine, "bad_request_line"),
    (hx.TransferEncodingError, "bad_transfer_encoding"), (hx.ContentLengthError, "bad_content_length"),
    (hx.BadHttpMessage, "bad_http_message"),
)


def parse_error_code(exc: BaseException | None) -> str:
    for cls, code in _PARSE_CODES:
        if isinstance(exc, cls):
            return code
    return "bad_request"


def first_line(exc: BaseException | None, default: str) -> str:
    text = getattr(exc, "message", None) or (str(exc) if exc is not None else "") or default
    return str(text).strip().split("\n", 1)[0].rstrip(":")[:200]


def _refusal(status: str, whose: str) -> bytes:
    body = json.dumps({"error": "too_many_connections",
                       "message": f"too many open API connections {whose}, all busy; retry shortly"}).encode()
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
    return head + body


REFUSALS = {"per_address": _refusal("429 Too Many Requests", "from your address"),
            "total": _refusal("503 Service Unavailable", "in total")}


@dataclass
class ConnectionGuard:
    """What every connection of one API server shares: the slot table, limits and the log."""

    slots: ConnectionSlots
    max_requests: int
    log: Any
    throttle: Throttle

    def client_fault(self, event: str, key: str, **fields: Any) -> None:
        self.throttle(self.log.info, event, key, **fields)


class HttpProtocol(RequestHandler):
    def __init__(self, manager: web.Server, *, loop: asyncio.AbstractEventLoop, guard: ConnectionGuard,
                 **kwargs: Any) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self.guard = guard
        self.slot: Slot | None = None
        self.served = 0
        self.body_in_flight: StreamReader | None = None

    # -- admission ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        group = address_group(transport.get_extra_info("peername"))
        slot = self.guard.slots.admit(group, self._loop.time(), self._evict)
        if isinstance(slot, str):
            self.guard.client_fault("api_connection_refused", group, address=group, cap=slot,
                                    open=len(self.guard.slots), from_address=self.guard.slots.held_by(group))
            tr: Any = transport
            tr.write(REFUSALS[slot])
            tr.close()
            return
        self.slot = slot
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.slot is None:
            return  # refused in connection_made: never registered with aiohttp's server
        self.guard.slots.release(self.slot)
        super().connection_lost(exc)

    def _evict(self) -> None:
        self.force_close()

    # -- one request (called by connection_middleware) ---------------------------------------------------

    def request_started(self, request: web.Request) -> None:
        if self.slot is not None:
            self.slot.busy()
        self.body_in_flight = request.content if request.body_exists else None

    def request_done(self) -> bool:
        """Mark the connection idle again; True when it has served its last request."""
        self.body_in_flight = None
        self.served += 1
        if self.slot is not None and not self._messages:  # nothing pipelined behind it: waiting again
            self.slot.idle(self._loop.time())
        return self.served >= self.guard.max_requests

    # -- aiohttp hooks -----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.slot is not None:
            self.slot.heard(self._loop.time())
        queued = len(self._messages)
        super().data_received(data)
        if self.slot is not None and len(self._messages) > queued:
            self.slot.busy()  # a whole request head is in: no longer waiting for the client
        body = self.body_in_flight
        if body is None or body.is_eof() or len(self._messages) <= queued:
            return
        err = self._messages[-1][0]
        if isinstance(err, _ErrInfo):  # the framing of the body being read broke: fail that read now
            body.set_exception(RequestPayloadError(first_line(err.exc, "broken request body")))

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the answer has started; cannot send an error answer")
        if status >= 500:
            self.guard.throttle(self.guard.log.error, "api_internal_error", "protocol", status=status,
                                error=repr(exc), exc_info=exc)
            code, text = ("internal", "internal error; see the node log") if status == 500 else (
                "timeout", "the request timed out")
        else:
            code = parse_error_code(exc)
            text = first_line(exc, message or "bad request")
            self.guard.client_fault("api_bad_http", code, code=code, error=text, address=request.remote)
        resp = web.json_response({"error": code, "message": text}, status=status)
        resp.force_close()
        return resp

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        what = str(args[0]) if args else "aiohttp error"
        if isinstance(exc, RequestPayloadError | hx.HttpProcessingError | ConnectionError):
            self.guard.client_fault("api_client_error", what, message=what, error=repr(exc))
            return
        self.guard.throttle(self.guard.log.error, "api_protocol_error", what, message=what, error=repr(exc),
                            exc_info=exc if isinstance(exc, BaseException) else None)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Marks the connection busy while a handler runs; closes it after an answer given before the body was
    read (the rest is drained for `LINGER_S`, then dropped) and after its last allowed request."""
    proto = request.protocol
    if not isinstance(proto, HttpProtocol):
        return await handler(request)
    proto.request_started(request)
    try:
        resp = await handler(request)
    finally:
        last = proto.request_done()
    if last or (request.body_exists and not request.content.is_eof()):
        resp.force_close()
    return resp
