"""Logs cannot flood: a repeating error is logged once per interval with the count it held back, and what
asyncio itself reports goes to the node's JSON log through the same throttle."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

from node.logging import Position, Throttle, install_loop_handler, node_logger


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_repeating_event_is_logged_once_per_interval_with_the_count_it_held_back() -> None:
    clock, got = Clock(), []
    throttle = Throttle(10.0, clock=clock)

    def log(event: str, **kw: Any) -> None:
        got.append((event, kw))

    for _ in range(1000):
        throttle(log, "accept_failed", "EMFILE", method="GET", key="k")
    assert got == [("accept_failed", {"method": "GET", "key": "k"})]  # field names are free
    clock.t = 10.5
    throttle(log, "accept_failed", "EMFILE", method="GET", key="k")
    assert got[-1] == ("accept_failed", {"method": "GET", "key": "k", "repeated": 999})
    throttle(log, "accept_failed", "ENFILE")  # another key is its own stream
    assert len(got) == 3


def test_the_throttle_forgets_the_oldest_key_past_its_bound() -> None:
    throttle = Throttle(10.0, max_keys=4, clock=Clock())
    seen: list[str] = []
    for i in range(100):
        throttle(lambda event, **kw: seen.append(event), "e", str(i))
    assert len(seen) == 100 and len(throttle._seen) == 4


async def test_what_asyncio_reports_is_one_throttled_json_line_not_a_plain_traceback() -> None:
    stream = io.StringIO()
    log = node_logger("n1", Position(), stream=stream)
    loop = asyncio.get_running_loop()
    old = loop.get_exception_handler()
    install_loop_handler(loop, log, Throttle(60.0))
    try:
        for _ in range(50):
            loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                         "exception": OSError(24, "Too many open files")})
    finally:
        loop.set_exception_handler(old)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["event"] == "asyncio_error" and "Too many open files" in doc["error"] and doc["node"] == "n1"
