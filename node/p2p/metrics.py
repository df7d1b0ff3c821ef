"""Counters of the P2P layer and the mempool, and prometheus collectors that read them.

Rule: the hot path only increments plain ints on a per-instance `P2PStats`; prometheus sees them through
a custom collector registered on whatever registry the API uses, so several nodes in one process (tests)
never collide in a global registry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


@dataclass
class P2PStats:
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    rejected_frames: Counter[str] = field(default_factory=Counter)  # by reason; each closed a link
    handshake_failures: Counter[str] = field(default_factory=Counter)  # by reason
    dropped_sends: Counter[str] = field(default_factory=Counter)  # by message type (queue full)
    unhandled: Counter[str] = field(default_factory=Counter)  # by message type (no handler registered)
    disconnects: Counter[str] = field(default_factory=Counter)  # by reason
    connections: int = 0  # established and adopted
    gossip_txs_out: int = 0
    gossip_txs_in: int = 0
    gossip_batches_out: int = 0
    gossip_batches_in: int = 0
    gossip_dropped_batches: int = 0  # intake queue full
    gossip_dropped_txs: int = 0  # pending announcements full
    gossip_reoffered_txs: int = 0  # stale pending txs queued again (tx x peer)


def _labeled(name: str, doc: str, label: str, counts: Counter[str]) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=[label])
    for key in sorted(counts):
        fam.add_metric([key], counts[key])
    return fam


class P2PCollector(Collector):
    """Register with `registry.register(P2PCollector(stats))`. The number of connected peers is
    `smeledger_peers` (node/status.py), one name for one figure."""

    def __init__(self, stats: P2PStats) -> None:
        self._s = stats

    def collect(self) -> Iterator[Any]:
        s = self._s
        yield CounterMetricFamily("smeledger_p2p_frames_in", "Frames received", value=s.frames_in)
        yield CounterMetricFamily("smeledger_p2p_frames_out", "Frames sent", value=s.frames_out)
        yield CounterMetricFamily("smeledger_p2p_bytes_in", "Bytes received", value=s.bytes_in)
        yield CounterMetricFamily("smeledger_p2p_bytes_out", "Bytes sent", value=s.bytes_out)
        yield _labeled("smeledger_p2p_rejected_frames", "Frames that closed a link", "reason",
                       s.rejected_frames)
        yield _labeled("smeledger_p2p_handshake_failures", "Failed handshakes", "reason", s.handshake_failures)
        yield _labeled("smeledger_p2p_dropped_sends", "Messages dropped on a full send queue", "type",
                       s.dropped_sends)
        yield _labeled("smeledger_p2p_unhandled", "Messages with no registered handler", "type", s.unhandled)
        yield _labeled("smeledger_p2p_disconnects", "Closed connections", "reason", s.disconnects)
        yield CounterMetricFamily("smeledger_p2p_connections", "Established connections", value=s.connections)
        yield CounterMetricFamily("smeledger_gossip_txs_out", "Txs sent by gossip", value=s.gossip_txs_out)
        yield CounterMetricFamily("smeledger_gossip_txs_in", "Txs received by gossip", value=s.gossip_txs_in)
        yield CounterMetricFamily("smeledger_gossip_dropped_batches", "Received tx batches dropped (intake full)",
                                  value=s.gossip_dropped_batches)
        yield CounterMetricFamily("smeledger_gossip_reoffered_txs", "Stale pending txs offered again (tx x peer)",
                                  value=s.gossip_reoffered_txs)


@dataclass
class MempoolStats:
    admitted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # by code
    committed: int = 0
    evicted_stale: int = 0
    expired: int = 0  # pending longer than the TTL
    verified: int = 0  # signatures checked (each once)


class MempoolCollector(Collector):
    """Register with `registry.register(MempoolCollector(mempool.stats, lambda: (len(mp), mp.size_bytes)))`."""

    def __init__(self, stats: MempoolStats, size: Callable[[], tuple[int, int]]) -> None:
        self._s = stats
        self._size = size

    def collect(self) -> Iterator[Any]:
        n, b = self._size()
        yield GaugeMetricFamily("smeledger_mempool_txs", "Pending txs", value=n)
        yield GaugeMetricFamily("smeledger_mempool_bytes", "Pending tx bytes", value=b)
        yield CounterMetricFamily("smeledger_mempool_admitted", "Admitted txs", value=self._s.admitted)
        yield _labeled("smeledger_mempool_rejected", "Rejected txs", "code", self._s.rejected)
        yield CounterMetricFamily("smeledger_mempool_committed", "Txs removed as committed",
                                  value=self._s.committed)
        yield CounterMetricFamily("smeledger_mempool_evicted_stale", "Txs dropped for a stale nonce",
                                  value=self._s.evicted_stale)
        yield CounterMetricFamily("smeledger_mempool_expired", "Txs dropped after the TTL",
                                  value=self._s.expired)
        yield CounterMetricFamily("smeledger_mempool_sig_verified", "Signatures verified",
                                  value=self._s.verified)
