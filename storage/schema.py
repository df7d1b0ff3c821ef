"""Every LevelDB key of smeledger, in one table: prefix, key layout and value type.

Rule: no other module writes a key literal. Prefixes are one byte and never reused; integers in keys are
fixed-width big-endian so that LevelDB's byte order is numeric order. To add a namespace, add a row to
`TABLE` and a key function below it.

| prefix | key                                   | value                                               |
|--------|---------------------------------------|-----------------------------------------------------|
| `M`    | `M` + meta name (ascii)               | see META_* below                                    |
| `B`    | `B` + height u64                      | canonical block bytes (exactly as received/built)   |
| `H`    | `H` + block hash (32)                 | height u64                                          |
| `C`    | `C` + height u64                      | commit certificate bytes (opaque to storage)        |
| `r`    | `r` + height u64                      | state root (32) after executing that height         |
| `T`    | `T` + tx hash (32)                    | height u64 + index u32                              |
| `R`    | `R` + height u64 + index u32          | receipt bytes (opaque to storage)                   |
| `E`    | `E` + height u64                      | the block's own result bytes (time-driven events)   |
| `Q`    | `Q` + height u64                      | results root (32) of that height                    |
| `s`    | `s` + logical state key               | state value bytes (ordered: the ledger's iter_range)|
| `k`    | `k` + bucket u16                      | Merkle bucket blob: sorted (key hash + leaf hash)   |
| `n`    | `n` + level u8 + index u16            | Merkle node hash (32); only level 16 is persisted   |
| `W`    | `W` + sequence u64                    | CRC-32 (4 bytes) + consensus WAL record bytes       |
| `P`    | `P` + height u64                      | snapshot manifest (canonical msgpack map)           |
| `X`    | `X` + `s`/`k` + as above              | snapshot import staging (wiped at import start)     |
| `D`    | `D` + height u64                      | decided block not yet executed: {block, cert} map   |
"""

from __future__ import annotations

from typing import Final

U64: Final = 8
U32: Final = 4

META: Final = b"M"
BLOCK: Final = b"B"
BLOCK_HASH: Final = b"H"
CERTIFICATE: Final = b"C"
STATE_ROOT_AT: Final = b"r"
TX_INDEX: Final = b"T"
RECEIPT: Final = b"R"
BLOCK_EVENTS: Final = b"E"
RESULTS_ROOT_AT: Final = b"Q"
STATE: Final = b"s"
MERKLE_BUCKET: Final = b"k"
MERKLE_NODE: Final = b"n"
WAL: Final = b"W"
SNAPSHOT_META: Final = b"P"
IMPORT_STAGING: Final = b"X"
DECIDED: Final = b"D"

TABLE: Final[dict[bytes, str]] = {
    META: "meta name -> value (height u64, hashes 32 bytes, chain id utf-8)",
    BLOCK: "height u64 -> canonical block bytes",
    BLOCK_HASH: "block hash -> height u64",
    CERTIFICATE: "height u64 -> commit certificate bytes",
    STATE_ROOT_AT: "height u64 -> state root after that height",
    TX_INDEX: "tx hash -> height u64 + index u32",
    RECEIPT: "height u64 + index u32 -> receipt bytes",
    BLOCK_EVENTS: "height u64 -> the block's own result bytes (its time-driven events; opaque)",
    RESULTS_ROOT_AT: "height u64 -> results root of that height (the header two above carries it)",
    STATE: "logical state key -> value",
    MERKLE_BUCKET: "bucket u16 -> sorted 64-byte (key hash + leaf hash) entries",
    MERKLE_NODE: "level u8 + index u16 -> node hash",
    WAL: "sequence u64 -> CRC-32 + consensus WAL record",
    SNAPSHOT_META: "height u64 -> snapshot manifest (storage.snapshot.SnapshotManifest)",
    IMPORT_STAGING: "staging copy of s/k during a snapshot import",
    DECIDED: "height u64 -> decided block and its certificate, until executed (canonical msgpack map)",
}
assert all(len(p) == 1 for p in TABLE) and len(set(TABLE)) == len(TABLE)

# Meta names: each value's type is fixed.
META_HEIGHT: Final = META + b"height"  # u64: last committed block height (0 = none yet)
META_LAST_HASH: Final = META + b"last_hash"  # 32 bytes: hash of the block at META_HEIGHT
META_STATE_ROOT: Final = META + b"state_root"  # 32 bytes: state root after META_HEIGHT
META_CHAIN_ID: Final = META + b"chain_id"  # utf-8 chain id
META_GENESIS_HASH: Final = META + b"genesis_hash"  # 32 bytes
META_SCHEMA_VERSION: Final = META + b"schema_version"  # u64
META_SEAL: Final = META + b"seal"  # 16 random bytes: the last write of a clean close (storage/db.py)
META_HISTORY_FROM: Final = META + b"history_from"  # u64: lowest height with full history (absent: 0)
SCHEMA_VERSION: Final = 2  # 2: block headers carry results_root; blocks keep their own results (E, Q)


def u64(n: int) -> bytes:
    return n.to_bytes(U64, "big")


def u32(n: int) -> bytes:
    return n.to_bytes(U32, "big")


def read_u64(b: bytes) -> int:
    if len(b) != U64:
        raise ValueError("a u64 is 8 bytes")
    return int.from_bytes(b, "big")


def block_key(height: int) -> bytes:
    return BLOCK + u64(height)


def block_hash_key(block_hash: bytes) -> bytes:
    return BLOCK_HASH + block_hash


def certificate_key(height: int) -> bytes:
    return CERTIFICATE + u64(height)


def state_root_at_key(height: int) -> bytes:
    return STATE_ROOT_AT + u64(height)


def tx_index_key(tx_hash: bytes) -> bytes:
    return TX_INDEX + tx_hash


def tx_location_value(height: int, index: int) -> bytes:
    return u64(height) + u32(index)


def read_tx_location(value: bytes) -> tuple[int, int]:
    if len(value) != U64 + U32:
        raise ValueError("a tx location is 12 bytes")
    return int.from_bytes(value[:U64], "big"), int.from_bytes(value[U64:], "big")


def receipt_key(height: int, index: int) -> bytes:
    return RECEIPT + u64(height) + u32(index)


def block_events_key(height: int) -> bytes:
    return BLOCK_EVENTS + u64(height)


def results_root_at_key(height: int) -> bytes:
    return RESULTS_ROOT_AT + u64(height)


def state_key(key: bytes) -> bytes:
    return STATE + key


def merkle_bucket_key(bucket: int) -> bytes:
    return MERKLE_BUCKET + bucket.to_bytes(2, "big")


def merkle_node_key(level: int, index: int) -> bytes:
    return MERKLE_NODE + bytes((level,)) + index.to_bytes(2, "big")


def wal_key(seq: int) -> bytes:
    return WAL + u64(seq)


def snapshot_meta_key(height: int) -> bytes:
    return SNAPSHOT_META + u64(height)


def decided_key(height: int) -> bytes:
    return DECIDED + u64(height)


def staging_key(key: bytes) -> bytes:
    """Staging copy of a full key (`s...` or `k...`) during a snapshot import."""
    return IMPORT_STAGING + key


_NAMES: Final[dict[bytes, str]] = {
    META: "meta", BLOCK: "block", BLOCK_HASH: "block hash index", CERTIFICATE: "certificate",
    STATE_ROOT_AT: "state root at height", TX_INDEX: "tx index", RECEIPT: "receipt", STATE: "state value",
    MERKLE_BUCKET: "Merkle bucket", MERKLE_NODE: "Merkle node", WAL: "consensus WAL record",
    SNAPSHOT_META: "snapshot manifest", IMPORT_STAGING: "snapshot import staging",
    DECIDED: "decided block not executed yet", BLOCK_EVENTS: "block events", RESULTS_ROOT_AT: "results root at height",
}
assert set(_NAMES) == set(TABLE)


def describe(key: bytes) -> str:
    """A key as an operator reads it in an error: its namespace, the decoded height/index/hash, its hex."""
    prefix, rest = key[:1], key[1:]
    name = _NAMES.get(prefix, "unknown namespace")
    if prefix in (BLOCK, CERTIFICATE, STATE_ROOT_AT, WAL, SNAPSHOT_META, DECIDED, BLOCK_EVENTS,
                  RESULTS_ROOT_AT) and len(rest) == U64:
        name += f" {int.from_bytes(rest, 'big')}"
    elif prefix == RECEIPT and len(rest) == U64 + U32:
        name += f" {int.from_bytes(rest[:U64], 'big')}/{int.from_bytes(rest[U64:], 'big')}"
    elif prefix in (BLOCK_HASH, TX_INDEX):
        name += f" {rest.hex()}"
    elif prefix == META:
        name += f" {rest.decode('ascii', 'replace')}"
    return f"{name} (key {key.hex()})"


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix` (prefix must not be all 0xff)."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        raise ValueError("prefix has no upper bound")
    p[-1] += 1
    return bytes(p)
