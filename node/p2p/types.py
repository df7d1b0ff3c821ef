"""Plain data of the P2P layer: settings with their limits, dial targets and the peer table rows.

Rule: every limit the P2P layer enforces is a named field of `P2PSettings` with a sane default; the
config module maps its TOML onto these fields and nothing else in the P2P code hard-codes a bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol import api
from protocol.framing import DEFAULT_MAX_FRAME


@dataclass(frozen=True, slots=True)
class P2PSettings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 0  # 0 = ephemeral (tests); read the bound port from P2P.listen_port
    max_frame: int = DEFAULT_MAX_FRAME  # sealed payload bytes (8-byte counter + MAC + plaintext)
    send_queue_frames: int = 4096  # per peer
    send_queue_bytes: int = 16 * 1024 * 1024  # per peer
    write_batch_bytes: int = 256 * 1024  # writer coalesces queued frames into writes up to this size
    slow_peer_timeout: float = 10.0  # send queue full for this long -> disconnect the peer
    handshake_timeout: float = 5.0
    # inbound handshakes in progress (node/connslots.py): at either cap a newcomer replaces the connection
    # whose peer has been silent (named no allowed key) the longest, else it is refused
    max_pending_handshakes: int = 64
    max_pending_handshakes_per_address: int = 8
    connect_timeout: float = 3.0
    # heartbeat: a ping every `ping_interval`; a link that brought no byte for `idle_timeout` is closed and
    # redialled (a dead route sends no FIN; only silence shows it, and `peers` must tell the truth)
    ping_interval: float = 1.0
    idle_timeout: float = 5.0
    # redial back-off: a handful of known peers, so retrying every couple of seconds costs nothing and a
    # healed partition is meshed again within about `backoff_max` + a handshake
    backoff_initial: float = 0.2
    backoff_max: float = 2.0
    read_chunk: int = 256 * 1024
    # tx gossip
    gossip_flush_interval: float = 0.005
    gossip_batch_txs: int = 2000
    gossip_batch_bytes: int = 1024 * 1024
    gossip_pending_txs: int = 50_000  # announced but not yet flushed; beyond this new txs are not gossiped
    gossip_known_per_peer: int = 200_000  # LRU of tx hashes each peer is known to have
    gossip_intake_batches: int = 256  # received batches waiting for admission; beyond this: dropped
    gossip_intake_workers: int = 2
    # re-offer: txs still pending after `gossip_reoffer_age` seconds are sent again (to the current
    # primary when known, else to every peer), at most `gossip_reoffer_max` per round, because a batch
    # may have been dropped by a full intake queue or a full mempool on the way
    gossip_reoffer_interval: float = 2.0
    gossip_reoffer_age: float = 4.0
    gossip_reoffer_max: int = 4000


@dataclass(frozen=True, slots=True)
class PeerAddr:
    """A dial target from the config: who we expect to find at host:port."""

    public_key: bytes
    host: str
    port: int
    name: str = ""


PeerInfo = api.Peer  # one row of the peer table: the `/peers` document itself (protocol/api.py)
