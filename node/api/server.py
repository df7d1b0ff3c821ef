"""The aiohttp application and its lifetime: routes, the middlewares, bind and drain.

Connections are aiohttp's protocol with the node's rules (node/api/connections.py: caps, timeouts,
JSON errors before a handler); the listener is created here with that protocol instead of aiohttp's
`TCPSite`, and request bodies go through `BodyReader` (node/api/bodies.py: no inflating, bounded reads,
bounded decoding off the loop).

Rule: every answer is JSON (or msgpack/Prometheus text where asked); a bad request gets a 4xx
`{"error": code, "message": text}`. Known error roots (NodeError, ProtocolError, StorageError) map to
their code; an aiohttp HTTP exception keeps its status with a JSON body; anything else is a bug in a
handler: logged (throttled per path, so a request that trips it cannot flood the log) and answered
`500 {"error": "internal"}` without details: never an HTML page, never a crash. `ApiServer.run()` is the
component's task: it serves until cancelled, then drains in-flight requests for up to `DRAIN_S`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from node.api import openapi
from node.api.bodies import BODIES, BodyReader
from node.api.connections import (
    BACKLOG,
    LINGER_S,
    MAX_HEADERS,
    MAX_LINE,
    ConnectionGuard,
    Handler,
    HttpProtocol,
    connection_middleware,
)
from node.api.keys import DEPS, MAX_READ_THREADS, READS, ApiDeps
from node.connslots import ConnectionSlots
from node.errors import NodeError
from node.logging import Throttle
from protocol.errors import ProtocolError
from storage.errors import StorageError

DRAIN_S = 1.0  # in-flight requests get this long to finish at shutdown

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type",
               503: "unavailable"}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


def _storage_status(exc: StorageError) -> int:
    return 404 if exc.code in ("db_not_found",) else 503


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        text = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        if exc.status == 413:
            text = f"request body too large (limit {request.app[DEPS].settings.max_body_bytes} bytes)"
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After", "WWW-Authenticate")}
        return error_response(exc.status, code, text or code, headers)
    except NodeError as exc:
        status = exc.http_status if 400 <= exc.http_status < 600 else 400
        retry = {"Retry-After": "1"} if status == 503 else None
        return error_response(status, exc.code, exc.message, retry)
    except ProtocolError as exc:
        return error_response(404 if exc.code == "not_found" else 400, exc.code, exc.message)
    except StorageError as exc:
        log = request.app[DEPS].log
        request.app[THROTTLE](log.error, "api_storage_error", exc.code, path=request.path, code=exc.code,
                              error=exc.message)
        return error_response(_storage_status(exc), exc.code, exc.message)
    except Exception as exc:
        log = request.app[DEPS].log
        request.app[THROTTLE](log.error, "api_internal_error", request.path, method=request.method,
                              path=request.path, error=repr(exc), exc_info=exc)
        return error_response(500, "internal", "internal error; see the node log")


THROTTLE: web.AppKey[Throttle] = web.AppKey("throttle", Throttle)


def make_app(d: ApiDeps) -> web.Application:
    app = web.Application(middlewares=[connection_middleware, errors_middleware],
                          client_max_size=d.settings.max_body_bytes)
    app[DEPS] = d
    app[THROTTLE] = Throttle()
    app[READS] = asyncio.Semaphore(MAX_READ_THREADS)
    bodies = app[BODIES] = BodyReader(d.settings.max_body_bytes, d.settings.body_timeout_s)

    async def close_bodies(_app: web.Application) -> None:
        bodies.close()

    app.on_cleanup.append(close_bodies)
    openapi.register(app)  # the route table the OpenAPI document is generated from
    return app


class ApiServer:
    """Binds the app on the configured host/port (127.0.0.1 by default; port 0 = ephemeral), holding at
    most `max_connections` client connections (the node's descriptor budget may set fewer than the
    config's `api.max_connections`)."""

    def __init__(self, d: ApiDeps, *, max_connections: int | None = None) -> None:
        self.deps = d
        self.app = make_app(d)
        cfg = d.settings
        total = min(cfg.max_connections, max_connections or cfg.max_connections)
        slots = ConnectionSlots(total=total, per_address=min(total, cfg.max_connections_per_address))
        self.guard = ConnectionGuard(slots, max_requests=cfg.max_requests_per_connection, log=d.log,
                                     throttle=Throttle())
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self.deps.settings.host}:{self.port}"

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve until cancelled (binding first unless `start()` already did); `ready` is set once bound."""
        if self._runner is None:
            await self.start()
        if ready is not None:
            ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def start(self) -> None:
        cfg = self.deps.settings
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=DRAIN_S)
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        guard = self.guard
        kwargs: dict[str, Any] = {"keepalive_timeout": cfg.idle_timeout_s, "lingering_time": LINGER_S,
                                  "max_line_size": MAX_LINE, "max_field_size": MAX_LINE,
                                  "max_headers": MAX_HEADERS, "auto_decompress": False, "access_log": None}

        def protocol() -> HttpProtocol:
            return HttpProtocol(server, loop=loop, guard=guard, **kwargs)

        try:
            self._listener = await loop.create_server(protocol, cfg.host, cfg.port, reuse_address=True,
                                                      backlog=BACKLOG)
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = self._listener.sockets[0].getsockname()[1]
        slots = guard.slots
        self.deps.log.info("api_listening", host=cfg.host, port=self.port, max_connections=slots.total,
                           max_per_address=slots.per_address, idle_timeout_s=cfg.idle_timeout_s,
                           body_timeout_s=cfg.body_timeout_s)

    async def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()  # no new connections; open ones are drained and closed by the runner
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if listener is not None:
            await listener.wait_closed()
