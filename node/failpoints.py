"""Named failure points for tests: make the node raise or die at an exact place in its work.

`SMELEDGER_FAILPOINTS="name=action[,name=action...]"` arms them when the process starts; actions are
`raise` (an unexpected exception at that point, as a bug would raise), `exit` (the process dies at once
with status 137, as under kill -9: no cleanup, no flush) and `hang` (the thread sleeps for an hour).
A name may carry `@N`: the action fires on the N-th pass only (`commit.after_batch=exit@3`).

The points: `consensus.event` (the driver handling an event), `commit.before_decided` /
`commit.after_decided` (around the synced record of a decided block), `commit.before_batch` /
`commit.after_batch` (around its execution batch), `wal.before_append` / `wal.after_append`, `journal.before_sync` /
`journal.after_sync` (around the fdatasync that makes a POST batch of accepted txs durable: `after_sync` is
the last step before the answer and before any peer hears of the txs), `snapshot.before_install` /
`snapshot.after_install`.

Rule: unarmed points cost one dict lookup; nothing here runs unless the environment names it, and a
production node never sets the variable (the node logs a warning when any point is armed).
"""

from __future__ import annotations

import os
import time

ENV = "SMELEDGER_FAILPOINTS"
ACTIONS = ("raise", "exit", "hang")


class FailpointError(RuntimeError):
    """The exception a `raise` failpoint throws (an injected bug)."""


def _parse(text: str) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, _, action = item.partition("=")
        action, _, nth = action.partition("@")
        if action not in ACTIONS or not name:
            raise ValueError(f"{ENV}: bad item {item!r}; use name=raise|exit|hang[@N]")
        out[name.strip()] = (action, int(nth) if nth else 0)
    return out


_armed: dict[str, tuple[str, int]] = _parse(os.environ.get(ENV, ""))
_passes: dict[str, int] = {}


def armed() -> list[str]:
    return sorted(_armed)


def arm(spec: str) -> None:
    """Replace the armed points (tests in one process)."""
    _armed.clear()
    _passes.clear()
    _armed.update(_parse(spec))


def hit(name: str) -> None:
    """Pass failure point `name`: does nothing unless it is armed."""
    if not _armed:
        return
    entry = _armed.get(name)
    if entry is None:
        return
    action, nth = entry
    _passes[name] = count = _passes.get(name, 0) + 1
    if nth and count != nth:
        return
    if action == "raise":
        raise FailpointError(f"failpoint {name} fired")
    if action == "exit":
        os._exit(137)
    time.sleep(3600)
