"""Structured logs: structlog JSON lines to stdout, with `node`, `height` and `view` on every line.

`Position` is a small mutable holder the consensus driver updates (`position.update(height=, view=)`);
a processor stamps its current values on every event of loggers made by `node_logger`, so components
that bound their logger long ago still log the current height and view. A driver may also `bind()` its
own extra context on top. Rule: event names are snake_case verbs with keyword fields; no f-strings.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
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


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Process-wide structlog setup (for `smeledger run`): JSON lines to stdout at `level`."""
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *_shared_processors(),
                    structlog.processors.JSONRenderer(sort_keys=False)],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )


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
