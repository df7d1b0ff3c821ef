"""The ordered stop's budget (node/service.py): when a component outlasts the ordered stop, every component
still running is cancelled, the groups the order had not reached yet included, and one `node_stop_timeout`
line names them; so no component is left running and the node's TaskGroup can end."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from node import service
from node.service import STOP_ORDER, Node


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))

    warning = info


async def _until_cancelled() -> None:
    await asyncio.Event().wait()


async def _outlasts_one_cancel() -> None:
    """A component that goes on waiting for its own work after a first cancel (as the journal waits for a
    write in flight), and stops at the second."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await asyncio.Event().wait()


async def test_a_component_outlasting_the_ordered_stop_leaves_no_other_component_running(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "ORDERLY_STOP_S", 0.2)
    names = [n for group in STOP_ORDER for n in group]
    tasks = {n: asyncio.create_task(_outlasts_one_cancel() if n == "sync" else _until_cancelled(), name=n)
             for n in names}
    log = _Log()
    parts: Any = SimpleNamespace(health=SimpleNamespace(accepting=True), log=log)
    await asyncio.sleep(0)
    await Node.__new__(Node)._shutdown(parts, tasks)
    done, pending = await asyncio.wait(tasks.values(), timeout=5)
    assert pending == set()
    assert all(t.cancelled() for t in done)
    timeouts = [kw for event, kw in log.lines if event == "node_stop_timeout"]
    assert [t["running"] for t in timeouts] == [[n for n in names if n not in ("consensus",)]]
    assert parts.health.accepting is False
