"""The shared runtime objects of one node, as the API, the consensus driver and sync see them.

`NodeContext` is built by `node.service.Node` in start order and handed to every component; it holds
references, not logic. Fields the consensus driver and sync own are in `ChainStatus` (they write, the
API reads); the operator's block-time offset is `TimeOffset` (the admin API writes, the proposer reads).
Rule: single event loop; nothing here locks, and nothing here does I/O.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry

from node.logging import Position

if TYPE_CHECKING:
    from node.config import Config
    from node.genesis import Genesis
    from node.mempool import Mempool
    from node.p2p import P2P, TxGossip
    from protocol.crypto import PrivateKey
    from storage.blocks import BlockStore
    from storage.db import Database
    from storage.state import StateStore
    from storage.wal import ConsensusWal


class Service(Protocol):
    """What the node needs from a pluggable component (the consensus driver, sync)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class ChainStatus:
    """Consensus/sync progress as `/status` shows it; the consensus driver and sync keep it current."""

    view: int = 0
    primary: bytes | None = None  # public key of the primary of `view`
    syncing: bool = False
    sync_target: int | None = None  # height sync is heading for
    sync_progress: int | None = None  # height sync has reached
    last_commit_ms: int | None = None  # wall-clock ms of the last local commit


@dataclass
class TimeOffset:
    """Testnet only: milliseconds the proposer adds to block time (set by POST /admin/time-offset)."""

    offset_ms: int = 0
    allowed: bool = False


@dataclass
class NodeContext:
    config: Config
    genesis: Genesis
    key: PrivateKey
    log: Any
    position: Position = field(default_factory=Position)
    chain: ChainStatus = field(default_factory=ChainStatus)
    time_offset: TimeOffset = field(default_factory=TimeOffset)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    accepting: bool = False  # API intake open (False before start and while stopping -> 503)
    db: Database | None = None
    state: StateStore | None = None
    blocks: BlockStore | None = None
    wal: ConsensusWal | None = None
    mempool: Mempool | None = None
    p2p: P2P | None = None
    gossip: TxGossip | None = None
    consensus: Service | None = None  # the lead's driver (node/consensus.py), when present
    sync: Service | None = None
    task_group: asyncio.TaskGroup | None = None  # the node's TaskGroup: spawn long-lived tasks here
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def node_id(self) -> str:
        return self.key.public_key.hex()

    @property
    def name(self) -> str:
        return self.config.node.name

    @property
    def is_validator(self) -> bool:
        return self.key.public_key in self.genesis.validator_keys

    def status(self) -> dict[str, Any]:
        """The `/status` document (DESIGN section 6)."""
        blocks, mp, p2p, ch = self.blocks, self.mempool, self.p2p, self.chain
        height = blocks.height() if blocks is not None else 0
        last = blocks.last_block_hash() if blocks is not None else None
        root = blocks.state_root() if blocks is not None else None
        primary = ch.primary
        if primary is None and self.genesis.validators:
            primary = self.genesis.validators[ch.view % len(self.genesis.validators)].public_key
        return {
            "node_id": self.node_id, "name": self.name, "chain_id": self.genesis.chain_id,
            "genesis_hash": self.genesis.hash.hex(),
            "role": "validator" if self.is_validator else "observer",
            "height": height, "view": ch.view,
            "primary": primary.hex() if primary else None,
            "primary_name": self.genesis.name_of(primary) if primary else None,
            "last_block_hash": last.hex() if last else None, "state_root": root.hex() if root else None,
            "peers": len(p2p.connected()) if p2p is not None else 0,
            "mempool_size": len(mp) if mp is not None else 0,
            "mempool_bytes": mp.size_bytes if mp is not None else 0,
            "syncing": ch.syncing, "sync_target": ch.sync_target, "sync_progress": ch.sync_progress,
            "consensus": self.consensus is not None, "accepting": self.accepting,
            "time_offset_ms": self.time_offset.offset_ms, "uptime_ms": int(time.time() * 1000) - self.started_ms,
        }
