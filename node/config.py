"""Node configuration: one TOML file (read with tomllib) validated into a frozen `Config`.

Rule: every limit the node enforces has a named default here, and every rejection is a `ConfigError`
whose message names the field (`config error: p2p.port must be an integer 1..65535`). Unknown sections
and unknown fields are errors too, so a typo never silently falls back to a default. Relative paths are
resolved against the node home (the directory of config.toml unless `node.home` says otherwise).
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from node.errors import ConfigError

CONFIG_FILE = "config.toml"
DEFAULT_P2P_PORT = 7701
DEFAULT_API_PORT = 8701
DEFAULT_MAX_FRAME = 0  # 0: derived from the chain's block limits (protocol/limits.py)
DEFAULT_SEND_QUEUE_FRAMES = 4096
DEFAULT_SEND_QUEUE_BYTES = 16 * 1024 * 1024
DEFAULT_API_MAX_BODY = 8 * 1024 * 1024
DEFAULT_API_MAX_BATCH = 10_000
DEFAULT_API_MAX_CONNECTIONS = 1024  # the descriptor budget may allow fewer (node/fdbudget.py)
DEFAULT_API_MAX_PER_ADDRESS = 256  # twice the accept backlog: one burst of accepts cannot fill it
DEFAULT_API_IDLE_TIMEOUT_S = 10  # a request head must be complete this long after connecting or the last answer
DEFAULT_API_BODY_TIMEOUT_S = 30  # a whole request body must arrive within this
DEFAULT_API_MAX_REQUESTS = 1000  # per connection, then Connection: close
DEFAULT_P2P_PENDING = 64  # inbound handshakes in progress, all addresses together
DEFAULT_P2P_PENDING_PER_ADDRESS = 8
DEFAULT_MEMPOOL_TXS = 20_000  # ten full blocks: beyond that clients get 503 + Retry-After
DEFAULT_MEMPOOL_BYTES = 64 * 1024 * 1024
DEFAULT_MEMPOOL_PER_SENDER = 1_000
DEFAULT_NONCE_WINDOW = 1_000
DEFAULT_MEMPOOL_TTL_S = 900  # a tx pending this long (e.g. behind a nonce gap) is dropped as `expired`
DEFAULT_DROPPED_KEEP = 100_000  # dropped txs whose reason GET /txs/{hash} still answers
DEFAULT_DROPPED_KEEP_S = 7 * 24 * 3600
# Block sync keeps every block, receipt and event; state sync skips history (backfilled later). A node with
# data that is behind by at most this many blocks catches up by block sync. The busiest this chain gets
# is about 10 blocks/s (a block per ~100 ms: the 50 ms batch timer plus a consensus round; at saturation
# blocks fill up and the rate drops to ~1/s, docs/bench.md), so 144,000 blocks are at least 4 hours of
# full load; block sync replays them at >= 10,000 tx/s (make bench: catchup_tx_per_s).
DEFAULT_BLOCK_SYNC_MAX_GAP = 4 * 3600 * 10
DEFAULT_SNAPSHOTS_ON_DISK = 3  # stable-checkpoint snapshots kept on disk (and served after a restart)
DEFAULT_SNAPSHOT_DISK_BYTES = 8 * 1024**3  # all of them together; the oldest go first
LOG_LEVELS = ("debug", "info", "warning", "error")
CONSENSUS_FIELDS = ("max_block_txs", "max_block_bytes", "batch_timeout_ms", "view_timeout_ms",
                    "view_timeout_cap_ms", "retransmit_ms", "checkpoint_interval")
CONSENSUS_MAY_BE_0 = ("batch_timeout_ms",)  # 0: no batch interval (propose as soon as the height is open)
_PORT = (1, 65535)
_BIG = 2**62


@dataclass(frozen=True, slots=True)
class PeerConfig:
    public_key: bytes
    host: str
    port: int
    name: str = ""


@dataclass(frozen=True, slots=True)
class NodeSection:
    name: str
    chain_id: str
    home: Path
    genesis_file: Path
    key_file: Path
    data_dir: Path


@dataclass(frozen=True, slots=True)
class P2PSection:
    host: str = "127.0.0.1"
    port: int = DEFAULT_P2P_PORT
    peers: tuple[PeerConfig, ...] = ()
    observers: tuple[bytes, ...] = ()
    max_frame: int = DEFAULT_MAX_FRAME
    send_queue_frames: int = DEFAULT_SEND_QUEUE_FRAMES
    send_queue_bytes: int = DEFAULT_SEND_QUEUE_BYTES
    max_pending_handshakes: int = DEFAULT_P2P_PENDING
    max_pending_handshakes_per_address: int = DEFAULT_P2P_PENDING_PER_ADDRESS


@dataclass(frozen=True, slots=True)
class ApiSection:
    host: str = "127.0.0.1"
    port: int = DEFAULT_API_PORT
    token_file: Path = Path("admin.token")
    max_body_bytes: int = DEFAULT_API_MAX_BODY
    max_batch_txs: int = DEFAULT_API_MAX_BATCH
    max_connections: int = DEFAULT_API_MAX_CONNECTIONS
    max_connections_per_address: int = DEFAULT_API_MAX_PER_ADDRESS
    max_requests_per_connection: int = DEFAULT_API_MAX_REQUESTS
    idle_timeout_s: int = DEFAULT_API_IDLE_TIMEOUT_S
    body_timeout_s: int = DEFAULT_API_BODY_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class MempoolSection:
    max_txs: int = DEFAULT_MEMPOOL_TXS
    max_bytes: int = DEFAULT_MEMPOOL_BYTES
    per_sender_max: int = DEFAULT_MEMPOOL_PER_SENDER
    nonce_window: int = DEFAULT_NONCE_WINDOW
    ttl_s: int = DEFAULT_MEMPOOL_TTL_S


@dataclass(frozen=True, slots=True)
class JournalSection:
    """The accepted-tx journal (node/acceptance.py). Its bounds are the mempool's unless set lower: every
    journaled tx is also pending, so a larger journal could never fill. Full -> POST /txs answers 503."""

    max_txs: int = 0  # 0: mempool.max_txs
    max_bytes: int = 0  # 0: mempool.max_bytes
    dropped_keep: int = DEFAULT_DROPPED_KEEP  # newest dropped txs remembered with their reason
    dropped_keep_s: int = DEFAULT_DROPPED_KEEP_S  # ... for at most this long


@dataclass(frozen=True, slots=True)
class MemorySection:
    """The bounds of every cache whose size grows with traffic or history (RSS levels off below their sum
    plus the mempool's max_bytes and the interpreter: docs/bench.md, "Memory")."""

    db_cache_mb: int = 16  # LevelDB block cache
    db_write_buffer_mb: int = 8  # LevelDB memtable (up to two live while one is flushed)
    state_cache_mb: int = 16  # committed Merkle bucket blobs kept for staging
    verified_sigs: int = 20_000  # (tx hash -> signature) verified before, beyond the pending txs
    recent_committed: int = 50_000  # committed tx hashes refused at admission as already_committed
    gossip_known_per_peer: int = 50_000  # tx ids each peer is known to have (gossip de-duplication)


@dataclass(frozen=True, slots=True)
class ConsensusSection:
    """Local overrides of the genesis consensus params (`protocol.consensus.params.ConsensusParams`)."""

    overrides: tuple[tuple[str, int], ...] = ()

    def as_dict(self) -> dict[str, int]:
        return dict(self.overrides)


@dataclass(frozen=True, slots=True)
class SyncSection:
    block_sync_max_gap: int = DEFAULT_BLOCK_SYNC_MAX_GAP  # further behind (or empty): state sync + backfill
    snapshot_dir: Path = Path("snapshots")  # relative to the node home
    snapshots_on_disk: int = DEFAULT_SNAPSHOTS_ON_DISK
    snapshot_disk_bytes: int = DEFAULT_SNAPSHOT_DISK_BYTES


@dataclass(frozen=True, slots=True)
class LoggingSection:
    level: str = "info"


@dataclass(frozen=True, slots=True)
class HealthSection:
    stall_after_s: int = 30  # ready work waiting this long without a commit makes /health answer 503


@dataclass(frozen=True, slots=True)
class TestnetSection:
    allow_time_offset: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    node: NodeSection
    p2p: P2PSection = field(default_factory=P2PSection)
    api: ApiSection = field(default_factory=ApiSection)
    mempool: MempoolSection = field(default_factory=MempoolSection)
    journal: JournalSection = field(default_factory=JournalSection)
    memory: MemorySection = field(default_factory=MemorySection)
    consensus: ConsensusSection = field(default_factory=ConsensusSection)
    sync: SyncSection = field(default_factory=SyncSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    health: HealthSection = field(default_factory=HealthSection)
    testnet: TestnetSection = field(default_factory=TestnetSection)
    path: Path | None = None

    @property
    def home(self) -> Path:
        return self.node.home

    @property
    def token_path(self) -> Path:
        return self.node.home / self.api.token_file

    @property
    def snapshot_path(self) -> Path:
        d = self.sync.snapshot_dir
        return d if d.is_absolute() else self.node.home / d


# --- field readers ---------------------------------------------------------------------------------

def _fail(where: str, why: str) -> ConfigError:
    return ConfigError(f"config error: {where} {why}")


def _only(m: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(m) - allowed)
    if extra:
        label = f"{where}.{extra[0]}" if where else extra[0]
        raise _fail(label, "is not a known setting" + (f" (allowed: {', '.join(sorted(allowed))})"
                                                      if allowed else ""))


def _int(m: Mapping[str, Any], key: str, where: str, default: int, lo: int, hi: int) -> int:
    v = m.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise _fail(f"{where}.{key}", f"must be an integer {lo}..{hi}")
    return v


def _str(m: Mapping[str, Any], key: str, where: str, default: str | None, max_len: int = 256) -> str:
    v = m.get(key, default)
    if v is None:
        raise _fail(f"{where}.{key}", "is required")
    if not isinstance(v, str) or not 0 < len(v) <= max_len:
        raise _fail(f"{where}.{key}", f"must be a non-empty string of at most {max_len} characters")
    if not v.isprintable():
        raise _fail(f"{where}.{key}", "must be printable text (no newlines or control characters)")
    return v


def _bool(m: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    v = m.get(key, default)
    if not isinstance(v, bool):
        raise _fail(f"{where}.{key}", "must be true or false")
    return v


def _host(m: Mapping[str, Any], key: str, where: str, default: str) -> str:
    v = _str(m, key, where, default, 253)
    try:
        ipaddress.ip_address(v)
    except ValueError:
        if not all(part.isalnum() or "-" in part for part in v.split(".")):
            raise _fail(f"{where}.{key}", "must be an IP address or a host name") from None
    return v


def _hexkey(v: Any, where: str) -> bytes:
    try:  # fromhex skips whitespace: 64 characters can hold fewer than 32 bytes, hence the length check
        key = bytes.fromhex(v) if isinstance(v, str) and len(v) == 64 else b""
    except ValueError:
        key = b""
    if len(key) != 32:
        raise _fail(where, "must be a 32-byte public key as 64 hex characters")
    return key


def _table(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    v = raw.get(key, {})
    if not isinstance(v, dict):
        raise _fail(key, "must be a table")
    return v


def _path(home: Path, m: Mapping[str, Any], key: str, where: str, default: str) -> Path:
    p = Path(_str(m, key, where, default, 4096))
    return p if p.is_absolute() else home / p


# --- sections --------------------------------------------------------------------------------------

def _node(m: dict[str, Any], base: Path) -> NodeSection:
    _only(m, {"name", "chain_id", "home", "genesis_file", "key_file", "data_dir"}, "node")
    name = _str(m, "name", "node", None, 64)
    chain_id = _str(m, "chain_id", "node", None, 64)
    home = Path(_str(m, "home", "node", str(base), 4096))
    if not home.is_absolute():
        home = (base / home).resolve()
    return NodeSection(name=name, chain_id=chain_id, home=home,
                       genesis_file=_path(home, m, "genesis_file", "node", "genesis.json"),
                       key_file=_path(home, m, "key_file", "node", "node_key.json"),
                       data_dir=_path(home, m, "data_dir", "node", "data"))


def _p2p(m: dict[str, Any]) -> P2PSection:
    d = P2PSection()
    _only(m, {f.name for f in fields(P2PSection)}, "p2p")
    peers_raw = m.get("peers", [])
    if not isinstance(peers_raw, list) or len(peers_raw) > 1024:
        raise _fail("p2p.peers", "must be a list of at most 1024 tables")
    peers = []
    for i, p in enumerate(peers_raw):
        w = f"p2p.peers[{i}]"
        if not isinstance(p, dict):
            raise _fail(w, "must be a table {public_key, host, port, name}")
        _only(p, {"public_key", "host", "port", "name"}, w)
        peers.append(PeerConfig(public_key=_hexkey(p.get("public_key"), w + ".public_key"),
                                host=_host(p, "host", w, "127.0.0.1"),
                                port=_int(p, "port", w, 0, *_PORT),
                                name=str(_str(p, "name", w, "peer", 64))))
    obs_raw = m.get("observers", [])
    if not isinstance(obs_raw, list) or len(obs_raw) > 1024:
        raise _fail("p2p.observers", "must be a list of at most 1024 public keys")
    observers = tuple(_hexkey(v, f"p2p.observers[{i}]") for i, v in enumerate(obs_raw))
    return P2PSection(host=_host(m, "host", "p2p", d.host), port=_int(m, "port", "p2p", d.port, *_PORT),
                      peers=tuple(peers), observers=observers,
                      max_frame=_int(m, "max_frame", "p2p", d.max_frame, 0, 256 * 1024 * 1024),
                      send_queue_frames=_int(m, "send_queue_frames", "p2p", d.send_queue_frames, 1, 1_000_000),
                      send_queue_bytes=_int(m, "send_queue_bytes", "p2p", d.send_queue_bytes, 1024, 2**34),
                      max_pending_handshakes=_int(m, "max_pending_handshakes", "p2p", d.max_pending_handshakes,
                                                  1, 100_000),
                      max_pending_handshakes_per_address=_int(m, "max_pending_handshakes_per_address", "p2p",
                                                              d.max_pending_handshakes_per_address, 1, 100_000))


def _api(m: dict[str, Any]) -> ApiSection:
    d = ApiSection()
    _only(m, {f.name for f in fields(ApiSection)}, "api")
    return ApiSection(host=_host(m, "host", "api", d.host), port=_int(m, "port", "api", d.port, *_PORT),
                      token_file=Path(_str(m, "token_file", "api", str(d.token_file), 4096)),
                      max_body_bytes=_int(m, "max_body_bytes", "api", d.max_body_bytes, 1024, 2**31),
                      max_batch_txs=_int(m, "max_batch_txs", "api", d.max_batch_txs, 1, 1_000_000),
                      max_connections=_int(m, "max_connections", "api", d.max_connections, 1, 1_000_000),
                      max_connections_per_address=_int(m, "max_connections_per_address", "api",
                                                       d.max_connections_per_address, 1, 1_000_000),
                      max_requests_per_connection=_int(m, "max_requests_per_connection", "api",
                                                       d.max_requests_per_connection, 1, 2**31),
                      idle_timeout_s=_int(m, "idle_timeout_s", "api", d.idle_timeout_s, 1, 3600),
                      body_timeout_s=_int(m, "body_timeout_s", "api", d.body_timeout_s, 1, 3600))


def _mempool(m: dict[str, Any]) -> MempoolSection:
    d = MempoolSection()
    _only(m, {f.name for f in fields(MempoolSection)}, "mempool")
    return MempoolSection(max_txs=_int(m, "max_txs", "mempool", d.max_txs, 1, 10_000_000),
                          max_bytes=_int(m, "max_bytes", "mempool", d.max_bytes, 1024, 2**36),
                          per_sender_max=_int(m, "per_sender_max", "mempool", d.per_sender_max, 1, 1_000_000),
                          nonce_window=_int(m, "nonce_window", "mempool", d.nonce_window, 1, 1_000_000),
                          ttl_s=_int(m, "ttl_s", "mempool", d.ttl_s, 1, 30 * 24 * 3600))


def _journal(m: dict[str, Any], pool: MempoolSection) -> JournalSection:
    d = JournalSection()
    _only(m, {f.name for f in fields(JournalSection)}, "journal")
    return JournalSection(max_txs=_int(m, "max_txs", "journal", d.max_txs, 0, pool.max_txs),
                          max_bytes=_int(m, "max_bytes", "journal", d.max_bytes, 0, pool.max_bytes),
                          dropped_keep=_int(m, "dropped_keep", "journal", d.dropped_keep, 0, 10_000_000),
                          dropped_keep_s=_int(m, "dropped_keep_s", "journal", d.dropped_keep_s, 0, 365 * 24 * 3600))


def _memory(m: dict[str, Any]) -> MemorySection:
    d = MemorySection()
    _only(m, {f.name for f in fields(MemorySection)}, "memory")
    return MemorySection(db_cache_mb=_int(m, "db_cache_mb", "memory", d.db_cache_mb, 1, 65_536),
                         db_write_buffer_mb=_int(m, "db_write_buffer_mb", "memory", d.db_write_buffer_mb, 1, 4096),
                         state_cache_mb=_int(m, "state_cache_mb", "memory", d.state_cache_mb, 0, 65_536),
                         verified_sigs=_int(m, "verified_sigs", "memory", d.verified_sigs, 0, 10_000_000),
                         recent_committed=_int(m, "recent_committed", "memory", d.recent_committed, 0, 10_000_000),
                         gossip_known_per_peer=_int(m, "gossip_known_per_peer", "memory", d.gossip_known_per_peer,
                                                    1, 10_000_000))


def _consensus(m: dict[str, Any]) -> ConsensusSection:
    _only(m, set(CONSENSUS_FIELDS), "consensus")
    return ConsensusSection(tuple((k, _int(m, k, "consensus", 0, 0 if k in CONSENSUS_MAY_BE_0 else 1, _BIG))
                                  for k in sorted(m)))


def _sync(m: dict[str, Any]) -> SyncSection:
    d = SyncSection()
    _only(m, {f.name for f in fields(SyncSection)}, "sync")
    return SyncSection(
        block_sync_max_gap=_int(m, "block_sync_max_gap", "sync", d.block_sync_max_gap, 0, _BIG),
        snapshot_dir=Path(_str(m, "snapshot_dir", "sync", str(d.snapshot_dir), 4096)),
        snapshots_on_disk=_int(m, "snapshots_on_disk", "sync", d.snapshots_on_disk, 0, 1000),
        snapshot_disk_bytes=_int(m, "snapshot_disk_bytes", "sync", d.snapshot_disk_bytes, 0, 2**50))


def _logging(m: dict[str, Any]) -> LoggingSection:
    _only(m, {"level"}, "logging")
    level = _str(m, "level", "logging", "info", 16).lower()
    if level not in LOG_LEVELS:
        raise _fail("logging.level", f"must be one of {', '.join(LOG_LEVELS)}")
    return LoggingSection(level=level)


def _health(m: dict[str, Any]) -> HealthSection:
    _only(m, {"stall_after_s"}, "health")
    return HealthSection(stall_after_s=_int(m, "stall_after_s", "health", HealthSection().stall_after_s, 1, 86_400))


def _testnet(m: dict[str, Any]) -> TestnetSection:
    _only(m, {"allow_time_offset"}, "testnet")
    return TestnetSection(allow_time_offset=_bool(m, "allow_time_offset", "testnet", False))


SECTIONS = ("node", "p2p", "api", "mempool", "journal", "memory", "consensus", "sync", "logging", "health",
            "testnet")


def from_dict(raw: Mapping[str, Any], base: Path, path: Path | None = None) -> Config:
    """Validate a parsed TOML document; `base` is the directory relative paths start from."""
    _only(raw, set(SECTIONS), "")
    if "node" not in raw:
        raise _fail("node", "section is required (name, chain_id)")
    pool = _mempool(_table(raw, "mempool"))
    return Config(node=_node(_table(raw, "node"), base), p2p=_p2p(_table(raw, "p2p")),
                  api=_api(_table(raw, "api")), mempool=pool, journal=_journal(_table(raw, "journal"), pool),
                  memory=_memory(_table(raw, "memory")),
                  consensus=_consensus(_table(raw, "consensus")), sync=_sync(_table(raw, "sync")),
                  logging=_logging(_table(raw, "logging")),
                  health=_health(_table(raw, "health")), testnet=_testnet(_table(raw, "testnet")), path=path)


def load(path: str | Path) -> Config:
    """Read and validate a config file (or `<dir>/config.toml` when given a node home directory)."""
    p = Path(path)
    if p.is_dir():
        p = p / CONFIG_FILE
    try:
        with p.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config error: no config file at {p} (run `smeledger init` first?)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config error: {p} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config error: cannot read {p}: {exc.strerror}") from None
    return from_dict(raw, p.parent.resolve(), p)


# --- writing ---------------------------------------------------------------------------------------

def render(doc: Mapping[str, Mapping[str, Any]], header: str = "") -> str:
    """A config document as TOML (tomli-w), after an optional comment header; what it writes reads back."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    return "".join(x + "\n" for x in lines) + ("\n" if lines else "") + tomli_w.dumps(doc)
