"""The driver's view timer (node/consensus.py `_timer_due`): handed to the replica once another validator
is heard after it ran out; held while none is (a cut-off validator must not change view alone), and one
whole timeout more once contact is back. Other timers and a lone validator are never held.

The driver's timer methods run on a stand-in holding only what they use, with the module's waits shortened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry, Counter

from node import consensus
from node.consensus import ConsensusDriver
from protocol.consensus import TIMER_BATCH, TIMER_VIEW, TimerFired
from tests.unit.test_p2p_link import until

DELAY_MS = 60


class Links:
    def __init__(self) -> None:
        self.heard = True

    def heard_validator_since(self, t: float) -> bool:
        return self.heard


class Driver:
    """The driver's timer code with its own dependencies only."""

    _set_timer = ConsensusDriver._set_timer
    _arm = ConsensusDriver._arm
    _timer_due = ConsensusDriver._timer_due

    def __init__(self, validators: int = 4) -> None:
        self.validators = tuple(bytes([i]) * 32 for i in range(validators))
        self.p2p = Links()
        self._timers: dict[str, Any] = {}
        self.fired: list[TimerFired] = []
        self.inbox = SimpleNamespace(put_internal=self.fired.append)
        self.registry = CollectorRegistry()
        self.metrics = SimpleNamespace(view_timer_held=Counter("held", "held", registry=self.registry))
        self.log = structlog.get_logger()

    def held(self) -> float:
        return self.registry.get_sample_value("held_total") or 0.0

    def cancel(self) -> None:
        for h in self._timers.values():
            h.cancel()


@pytest.fixture(autouse=True)
def short_waits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(consensus, "CUT_OFF_AFTER_S", 0.15)
    monkeypatch.setattr(consensus, "CUT_OFF_POLL_S", 0.1)
    yield


async def test_a_view_timeout_is_handed_over_once_another_validator_is_heard() -> None:
    d = Driver()
    d._set_timer(TIMER_VIEW, 7, DELAY_MS)
    await until(lambda: d.fired == [TimerFired(TIMER_VIEW, 7)])
    assert d.held() == 0


async def test_a_cut_off_validator_holds_its_view_timeout_until_a_validator_is_heard_again() -> None:
    d = Driver()
    d.p2p.heard = False
    d._set_timer(TIMER_VIEW, 3, DELAY_MS)
    try:
        await until(lambda: d.held() == 1)
        await asyncio.sleep(5 * consensus.CUT_OFF_POLL_S)  # still cut off: held, counted once
        assert d.fired == [] and d.held() == 1
        d.p2p.heard = True
        await until(lambda: d.fired == [TimerFired(TIMER_VIEW, 3)])
    finally:
        d.cancel()


async def test_a_replica_setting_the_timer_again_replaces_a_held_one() -> None:
    d = Driver()
    d.p2p.heard = False
    d._set_timer(TIMER_VIEW, 1, DELAY_MS)
    await until(lambda: d.held() == 1)
    d._set_timer(TIMER_VIEW, 2, DELAY_MS)  # e.g. sync advanced the replica after the heal
    d.p2p.heard = True
    await until(lambda: d.fired != [])
    await asyncio.sleep(3 * DELAY_MS / 1000)
    assert d.fired == [TimerFired(TIMER_VIEW, 2)]


async def test_other_timers_and_a_lone_validator_are_never_held() -> None:
    d = Driver()
    d.p2p.heard = False
    d._set_timer(TIMER_BATCH, 5, DELAY_MS)
    await until(lambda: d.fired == [TimerFired(TIMER_BATCH, 5)])
    lone = Driver(validators=1)
    lone.p2p.heard = False
    lone._set_timer(TIMER_VIEW, 9, DELAY_MS)
    await until(lambda: lone.fired == [TimerFired(TIMER_VIEW, 9)])
    assert d.held() == 0 and lone.held() == 0
