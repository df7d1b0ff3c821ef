"""Structured logs: structlog JSON lines to stdout, with `node`, `height` and `view` on every line.

`Position` is a small mutable holder the consensus driver updates (`position.update(height=, view=)`);
a processor stamps its current values on every event of loggers made by `node_logger`, so components
that bound their logger long ago still log the current height and view. A driver may also `bind()` its
own extra context on top. `Throttle` logs a repeating event once per interval with the count of the
repeats it held back, so an error that fires per request or per connection cannot flood the log.
Rule: event names are snake_case verbs with keyword fields; no f-strings.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@dataclass
class Position:
    height: int = 0
    view: int = 0

    def update(self, *, height: int | None = None, view: int | None = None) -> None:
        if height is not None:
            self.height = height
        if view is not None:
            self.view = view


def _shared_processors() -> list[Any]:
    return [structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info]


def configure(level: str = "info", stream: TextIO | None = None, node: str | None = None) -> None:
    """Process-wide setup (for `smeledger run`): structlog JSON lines to stdout at `level`, and everything
    else that logs in the process made JSON too: the standard library's `logging` (aiohttp's server and
    access loggers, asyncio, ...) through structlog's `ProcessorFormatter`, warnings, and exceptions that
    escape a thread. A library record becomes `{"event": "library_logged", "logger": ..., "message": ...}`
    with any traceback as one `exception` string field. (aiohttp's server answers and logs a malformed
    request through the node's own logger: node/api/connections.py.)"""
    out = stream or sys.stdout
    lvl = _LEVELS.get(level, logging.INFO)
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *_shared_processors(),
                    structlog.processors.JSONRenderer(sort_keys=False)],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(json_formatter(node))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(lvl)
    logging.captureWarnings(True)
    library = logging.getLogger("smeledger.uncaught")

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            library.error("uncaught exception in thread %s", getattr(args.thread, "name", "?"),
                          exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    threading.excepthook = thread_hook


def json_formatter(node: str | None = None) -> logging.Formatter:
    """A `logging.Formatter` that renders any stdlib record as one JSON line like the node's own events."""

    def library_event(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        record = event.get("_record")
        event["message"] = event.pop("event", "")
        event["event"] = "library_logged"
        if record is not None:
            event["logger"] = record.name
            for k in _RECORD_EXTRAS:
                if k in record.__dict__:
                    event[k] = record.__dict__[k]
        if node is not None:
            event.setdefault("node", node)
        return event

    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[library_event, structlog.processors.add_log_level,
                           structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts")],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, structlog.processors.JSONRenderer(sort_keys=False)])


_RECORD_EXTRAS = ("error", "peer")


def node_logger(name: str, position: Position, level: str = "info", stream: TextIO | None = None) -> Any:
    """A logger for one node: JSON lines with node, height and view, independent of global config,
    so several nodes in one test process keep their own context."""

    def stamp(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("node", name)
        event.setdefault("height", position.height)
        event.setdefault("view", position.view)
        return event

    return structlog.wrap_logger(
        structlog.PrintLogger(stream or sys.stdout),
        processors=[stamp, *_shared_processors(), structlog.processors.JSONRenderer(sort_keys=False)],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
    )


class Throttle:
    """`throttle(log.error, "event", key, **fields)`: the first occurrence of (event, key) is logged; more
    within `interval_s` are only counted, and the next one logged after the interval carries
    `repeated=<count held back>`. At most `max_keys` keys are tracked (the oldest is forgotten)."""

    def __init__(self, interval_s: float = 10.0, *, max_keys: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self.clock = clock
        self._seen: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()

    def __call__(self, log_method: Callable[..., Any], event: str, key: str = "", /, **fields: Any) -> bool:
        """Log or count one occurrence; True when it was logged. The first three are positional-only, so
        any field name (`method`, `key`...) is free; `event` is structlog's own and is refused."""
        now = self.clock()
        k = (event, key)
        last = self._seen.get(k)
        if last is not None and now - last[0] < self.interval_s:
            self._seen[k] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            fields["repeated"] = last[1]
        self._seen[k] = (now, 0)
        self._seen.move_to_end(k)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        log_method(event, **fields)
        return True


def install_loop_handler(loop: asyncio.AbstractEventLoop, log: Any, throttle: Throttle) -> None:
    """Route what asyncio reports (an accept() that hit the descriptor limit, a callback that raised)
    to the node's JSON log, throttled per message: never plain-text tracebacks, never a flood."""

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", "asyncio error"))
        throttle(log.error, "asyncio_error", message, message=message,
                 error=repr(exc) if exc is not None else None)

    loop.set_exception_handler(handler)
