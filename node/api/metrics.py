"""Node-level Prometheus gauges read from the `NodeContext` at scrape time (per-node registry).

Rule: nothing is registered on prometheus-client's global default registry, so several nodes in one
process (tests) never collide; components add their own collectors to `ctx.registry`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from node.context import NodeContext


class NodeCollector(Collector):
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Any]:
        ctx = self.ctx
        labels = ["node", "chain_id"]
        lv = [ctx.name, ctx.genesis.chain_id]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(lv, value)
            return g

        height = ctx.blocks.height() if ctx.blocks is not None else 0
        yield gauge("smeledger_height", "Height of the last committed block", height)
        yield gauge("smeledger_view", "Current consensus view", ctx.chain.view)
        yield gauge("smeledger_peers", "Connected peers", len(ctx.p2p.connected()) if ctx.p2p else 0)
        yield gauge("smeledger_validators", "Validators in the genesis set", len(ctx.genesis.validators))
        yield gauge("smeledger_syncing", "1 while block or state sync runs", 1 if ctx.chain.syncing else 0)
        yield gauge("smeledger_accepting", "1 while the API accepts transactions", 1 if ctx.accepting else 0)
        yield gauge("smeledger_is_validator", "1 for a validator, 0 for an observer", 1 if ctx.is_validator else 0)
        yield gauge("smeledger_uptime_seconds", "Seconds since the node started",
                    time.time() - ctx.started_ms / 1000)
        last = ctx.chain.last_commit_ms
        yield gauge("smeledger_last_commit_age_seconds", "Seconds since the last local commit (-1: none yet)",
                    time.time() - last / 1000 if last else -1)
