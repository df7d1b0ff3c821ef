"""The consensus driver's metrics, and the clock that splits each height into steps.

`ConsensusMetrics` is every Prometheus series the driver exports; `ReplicaStats` exports the replica's
own counters. `StepClock` turns what the driver sees
(ready work, a block built or validated, a decision) into `smeledger_consensus_step_seconds{step}`
observations, so an operator sees where a height's time goes (docs/bench.md, "Latency in stages"):

- `propose_wait`: primary only: from ready work at a new height to building its block (the batch
  interval, or waiting for the block two below to execute);
- `agreement`: from building (primary) or validating (backup) a height's block to deciding it;
- `wal_append`: one synced append of own votes to the WAL (one or two per height);
- `decided_write`: the synced record of a decided block and its certificate;
- `execute_wait`: a decided block waiting for the blocks before it to execute.

Rule: observation only: nothing here changes what the driver does; times come from `time.monotonic`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
STEPS = ("propose_wait", "agreement", "wal_append", "decided_write", "execute_wait")


class ConsensusMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.commits = Counter("smeledger_consensus_commits", "Blocks committed by consensus", registry=registry)
        self.synced = Counter("smeledger_sync_blocks_applied", "Blocks applied from block sync", registry=registry)
        self.txs = Counter("smeledger_committed_txs", "Transactions committed", registry=registry)
        self.view_changes = Counter("smeledger_consensus_view_changes", "Views entered after view 0",
                                    registry=registry)
        self.round = Histogram("smeledger_consensus_round_seconds", "Time between consecutive commits",
                               buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=registry)
        self.exec = Histogram("smeledger_block_execute_seconds", "Execute + store time of a block",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=registry)
        self.step = Histogram("smeledger_consensus_step_seconds", "Time of one step of a height",
                              ["step"], buckets=STEP_BUCKETS, registry=registry)
        self.tx_wait = Histogram("smeledger_proposed_tx_wait_seconds",
                                 "Time a tx waited in the proposer's mempool before it was proposed",
                                 buckets=STEP_BUCKETS, registry=registry)
        self.dropped = Counter("smeledger_consensus_dropped_messages", "Consensus messages dropped",
                               ["reason"], registry=registry)
        self.rejected = Counter("smeledger_blocks_rejected", "Proposed blocks failing validation", ["reason"],
                                registry=registry)
        self.evidence = Counter("smeledger_consensus_evidence", "Conflicting signed messages seen",
                                registry=registry)


class ReplicaStats(Collector):
    """The replica's own counters (messages dropped as stale, duplicate, beyond the future-view or height
    window or past a sender's buffer; view changes ...), so a vote flood shows on /metrics."""

    def __init__(self, stats: Callable[[], Mapping[str, int]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        fam = CounterMetricFamily("smeledger_consensus_replica_events", "Consensus messages and events as the "
                                  "replica counted them, by what happened", labels=["what"])
        stats = self._stats()
        for what in sorted(stats):
            fam.add_metric([what], stats[what])
        yield fam


class StepClock:
    """The step times of the current height, observed into `metrics.step` as the driver reports events."""

    def __init__(self, metrics: ConsensusMetrics) -> None:
        self.steps = {s: metrics.step.labels(s) for s in STEPS}
        self.tx_wait = metrics.tx_wait
        self._work_at: float | None = None  # when ready work was first known at the current height
        self._round: tuple[int, float] | None = None  # (height, when its block was built or first validated)

    def work_ready(self) -> None:
        if self._work_at is None:
            self._work_at = time.monotonic()

    def building(self, height: int, waited: list[float]) -> None:
        """The primary builds `height`'s block; `waited` are its txs' admission times (monotonic)."""
        now = time.monotonic()
        if self._work_at is not None:
            self.steps["propose_wait"].observe(now - self._work_at)
            self._work_at = None
        for at in waited:
            self.tx_wait.observe(now - at)
        self.agreeing(height)

    def agreeing(self, height: int) -> None:
        """`height`'s block is being built or validated: its agreement starts (once per height)."""
        if self._round is None or self._round[0] != height:
            self._round = (height, time.monotonic())

    def decided(self, height: int, started: float, ready_work: bool) -> float:
        """`height` was decided at `started` and its record written since; returns now."""
        now = time.monotonic()
        self.steps["decided_write"].observe(now - started)
        if self._round is not None and self._round[0] == height:
            self.steps["agreement"].observe(started - self._round[1])
        self._work_at = now if ready_work else None
        return now
