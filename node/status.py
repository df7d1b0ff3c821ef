"""What the node says about itself: `/health`, `/status` and the node-level Prometheus gauges.

`Health` is the one signal of "is this node doing its job": intake open, the consensus component running,
and no ready work (txs that can execute next) waiting longer than `stall_after_s` without a commit. The
API answers `/health` 503 with the reasons while any is false, `/status` carries the same reasons, and the
gauge `smeledger_healthy` feeds the alert rules, so all three tell the same story.

Rule: read-only views over the components' state; nothing here changes the node.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from node.chain import ChainStatus, ChainStore, TimeOffset
from node.genesis import Genesis


class _Pool(Protocol):
    def __len__(self) -> int: ...

    @property
    def size_bytes(self) -> int: ...

    @property
    def ready_txs(self) -> int: ...


class _Peers(Protocol):
    def connected(self) -> list[bytes]: ...


@dataclass
class Health:
    stall_after_s: float
    clock: Callable[[], float] = time.monotonic
    accepting: bool = False  # API intake open
    consensus_running: bool = False  # the consensus component's task is alive
    ready_txs: int = 0  # as last reported to consensus
    _progress_at: float = field(default=0.0)

    def __post_init__(self) -> None:
        self._progress_at = self.clock()

    def note_ready(self, txs: int) -> None:
        """The driver reports the ready work it tells consensus about."""
        if txs > 0 and self.ready_txs == 0:
            self._progress_at = self.clock()  # the wait starts when work appears, not at the last commit
        self.ready_txs = txs

    def note_progress(self) -> None:
        """A block was committed (by consensus or sync)."""
        self._progress_at = self.clock()

    def stalled_for(self) -> float:
        return self.clock() - self._progress_at if self.ready_txs > 0 else 0.0

    def problems(self) -> list[str]:
        out = []
        if not self.accepting:
            out.append("not_accepting: the node is starting or stopping")
        if not self.consensus_running:
            out.append("consensus_not_running: the consensus component has stopped")
        waited = self.stalled_for()
        if waited > self.stall_after_s:
            out.append(f"consensus_stalled: {self.ready_txs} ready txs waited {waited:.0f} s without a commit "
                       f"(bound {self.stall_after_s:g} s)")
        return out


@dataclass
class NodeStatus:
    """The `/status` document and the node gauges, from the components that own each value."""

    name: str
    node_id: bytes
    genesis: Genesis
    store: ChainStore
    mempool: _Pool
    p2p: _Peers
    chain: ChainStatus
    health: Health
    time_offset: TimeOffset
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    @property
    def is_validator(self) -> bool:
        return self.node_id in self.genesis.validator_keys

    def primary(self) -> bytes | None:
        if self.chain.primary is not None:
            return self.chain.primary
        vals = self.genesis.validators
        return vals[self.chain.view % len(vals)].public_key if vals else None

    def document(self) -> dict[str, Any]:
        head, ch, mp = self.store.head, self.chain, self.mempool
        primary = self.primary()
        problems = self.health.problems()
        return {
            "node_id": self.node_id.hex(), "name": self.name, "chain_id": self.genesis.chain_id,
            "genesis_hash": self.genesis.hash.hex(), "role": "validator" if self.is_validator else "observer",
            "height": head.height, "view": ch.view,
            "primary": primary.hex() if primary else None,
            "primary_name": self.genesis.name_of(primary) if primary else None,
            "last_block_hash": head.block_hash.hex() if head.height > 0 else None,
            "state_root": head.state_root.hex(),
            "peers": len(self.p2p.connected()), "mempool_size": len(mp), "mempool_bytes": mp.size_bytes,
            "mempool_ready": mp.ready_txs,
            "syncing": ch.syncing, "sync_target": ch.sync_target, "sync_progress": ch.sync_progress,
            "history_from": ch.history_from,
            "backfill": {"running": ch.backfilling, "remaining_heights": ch.history_from},
            "consensus": self.health.consensus_running, "accepting": self.health.accepting,
            "healthy": not problems, "problems": problems,
            "time_offset_ms": self.time_offset.offset_ms, "uptime_ms": int(time.time() * 1000) - self.started_ms,
        }


class NodeCollector(Collector):
    """Node-level gauges read at scrape time (per-node registry, never the global default one)."""

    def __init__(self, status: NodeStatus) -> None:
        self.status = status

    def collect(self) -> Iterator[Any]:
        st = self.status
        labels = ["node", "chain_id"]
        lv = [st.name, st.genesis.chain_id]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(lv, value)
            return g

        h = st.health
        yield gauge("smeledger_height", "Height of the last committed block", st.store.head.height)
        yield gauge("smeledger_view", "Current consensus view", st.chain.view)
        yield gauge("smeledger_peers", "Connected peers", len(st.p2p.connected()))
        yield gauge("smeledger_validators", "Validators in the genesis set", len(st.genesis.validators))
        yield gauge("smeledger_syncing", "1 while block or state sync runs", 1 if st.chain.syncing else 0)
        yield gauge("smeledger_history_from", "Lowest height with full history (0: from genesis); above 0 after "
                    "a state sync until history backfill is done", st.chain.history_from)
        yield gauge("smeledger_accepting", "1 while the API accepts transactions", 1 if h.accepting else 0)
        yield gauge("smeledger_is_validator", "1 for a validator, 0 for an observer", 1 if st.is_validator else 0)
        yield gauge("smeledger_healthy", "1 while /health answers 200 (intake open, consensus running, "
                    "no ready work stalled)", 0 if h.problems() else 1)
        yield gauge("smeledger_ready_txs", "Pending txs that can execute next (work for consensus)", h.ready_txs)
        yield gauge("smeledger_ready_wait_seconds", "How long ready work has waited without a commit (0: none)",
                    h.stalled_for())
        yield gauge("smeledger_uptime_seconds", "Seconds since the node started",
                    time.time() - st.started_ms / 1000)
        last = st.chain.last_commit_ms
        yield gauge("smeledger_last_commit_age_seconds", "Seconds since the last local commit (-1: none yet)",
                    time.time() - last / 1000 if last else -1)
