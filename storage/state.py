"""The persistent state store: the ledger's state view over LevelDB, plus the Merkle state root.

Layout (storage/schema.py): values under `s` + logical key, each Merkle bucket's blob under `k`, and the
65536 bucket hashes (tree level 16) under `n`. The 65535 internal nodes are derived: they live in memory
(`TreeNodes`, about 1 MB of slots) and are rebuilt from the bucket hashes when the store opens, then
checked against the stored root; a mismatch is `db_corrupt`. That keeps a block's write set to the
changed values, blobs and bucket hashes instead of 16 node writes per changed key. Committed bucket
blobs are also cached in memory (bounded, default 64 MiB) because staging reads every touched one.

Rule: one writer. `stage` computes a block's new root and write ops without changing anything; the
block store writes those ops in the block's single batch and then calls `mark_committed`, under `lock`,
so readers of proofs and snapshots never see the tree and the database disagree.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType

from protocol import merkle
from protocol.merkle import DEPTH, MAX_KEY_BYTES, MAX_VALUE_BYTES, MerkleTree, MerkleUpdate, Proof, TreeNodes
from storage import schema
from storage.db import Database, Op, Snapshot
from storage.errors import DatabaseCorrupt, StaleStage, StorageError
from storage.snapshot import StateSnapshot

_S = schema.STATE


class DbStateReader:
    """`protocol.state.StateReader` over the `s` namespace of a snapshot (or of the live database)."""

    __slots__ = ("_owned", "_src")

    def __init__(self, src: Database | Snapshot, *, owned: Snapshot | None = None) -> None:
        self._src = src
        self._owned = owned

    def get(self, key: bytes) -> bytes | None:
        return self._src.get(_S + key)

    def iter_range(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Ascending (key, value) pairs with start <= key < stop."""
        if start >= stop:
            return
        for k, v in self._src.iterate(_S + start, _S + stop):
            yield k[1:], v

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> DbStateReader:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class StagedState:
    """A block's state change, ready to commit: the new root and the write ops for the block's batch."""

    base_root: bytes
    new_root: bytes
    ops: list[Op]
    update: MerkleUpdate


DEFAULT_BUCKET_CACHE_BYTES = 64 * 1024 * 1024
_ENTRY_OVERHEAD = 96  # rough per-entry cost of the dict slot and bytes object


class _NodeSource:
    """`merkle.NodeStore`: node rows from memory, bucket blobs from the live database.

    With `cache_bytes` > 0 it keeps a FIFO-bounded cache of committed blobs (staging reads them for
    every touched bucket); only the writer thread uses a caching source, so it needs no lock.
    """

    __slots__ = ("_cache", "_cached_bytes", "_db", "cache_bytes", "nodes")

    def __init__(self, db: Database, nodes: TreeNodes, cache_bytes: int = 0) -> None:
        self._db = db
        self.nodes = nodes
        self.cache_bytes = cache_bytes
        self._cache: dict[int, bytes | None] = {}
        self._cached_bytes = 0

    def row(self, level: int) -> list[bytes]:
        return self.nodes.row(level)

    def get_bucket(self, bucket: int) -> bytes | None:
        cache = self._cache
        if bucket in cache:
            return cache[bucket]
        blob = self._db.get(schema.merkle_bucket_key(bucket))
        if self.cache_bytes:
            self.remember(bucket, blob)
        return blob

    def remember(self, bucket: int, blob: bytes | None) -> None:
        cache = self._cache
        if bucket in cache:
            self._cached_bytes -= len(cache.pop(bucket) or b"") + _ENTRY_OVERHEAD
        size = len(blob or b"") + _ENTRY_OVERHEAD
        while cache and self._cached_bytes + size > self.cache_bytes:
            self._cached_bytes -= len(cache.pop(next(iter(cache))) or b"") + _ENTRY_OVERHEAD
        if size <= self.cache_bytes:
            cache[bucket] = blob
            self._cached_bytes += size

    def committed(self, buckets: Mapping[int, bytes | None]) -> None:
        if self.cache_bytes:
            for bucket, blob in buckets.items():
                self.remember(bucket, blob)

    def clear(self) -> None:
        self._cache.clear()
        self._cached_bytes = 0


def load_tree(source: Database | Snapshot) -> TreeNodes:
    """Rebuild the in-memory tree from the persisted bucket hashes (tree level 16)."""
    prefix = schema.MERKLE_NODE + bytes((DEPTH,))
    hashes = []
    for k, v in source.iterate(prefix=prefix):
        if len(k) != len(prefix) + 2 or len(v) != merkle.HASH_SIZE:
            raise DatabaseCorrupt("malformed Merkle node record")
        hashes.append((int.from_bytes(k[-2:], "big"), v))
    return TreeNodes.from_bucket_hashes(hashes)


class StateStore:
    """State values and their Merkle commitment, over one `Database`."""

    def __init__(self, db: Database, *, bucket_cache_bytes: int = DEFAULT_BUCKET_CACHE_BYTES,
                 index_prefixes: tuple[bytes, ...] = ()) -> None:
        """`index_prefixes`: logical key prefixes of derived indexes (e.g. the ledger's event log) that
        are stored and read like state but are not covered by the Merkle root nor carried in snapshots."""
        self.db = db
        self.index_prefixes = index_prefixes
        self.lock = threading.RLock()
        self._source = _NodeSource(db, TreeNodes(), bucket_cache_bytes)
        self._tree = MerkleTree(self._source)
        self.reload()

    def reload(self) -> None:
        """Rebuild the tree from disk and check it against the stored root (after open or an import)."""
        with self.lock:
            nodes = load_tree(self.db)
            stored = self.db.get(schema.META_STATE_ROOT)
            if stored is not None and stored != nodes.root():
                raise DatabaseCorrupt(f"state root on disk {stored.hex()} does not match the Merkle "
                                      f"buckets ({nodes.root().hex()})")
            self._source.nodes = nodes
            self._source.clear()

    def root(self) -> bytes:
        return self._source.nodes.root()

    def reader(self, snapshot: bool = True) -> DbStateReader:
        """A state reader over a consistent snapshot (close it when done) or over the live database."""
        if not snapshot:
            return DbStateReader(self.db)
        snap = self.db.snapshot()
        return DbStateReader(snap, owned=snap)

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(_S + key)

    def stage(self, changes: Mapping[bytes, bytes | None]) -> StagedState:
        """New root and write ops for `changes` (None = delete) on top of the committed state."""
        for key, value in changes.items():
            if not key or len(key) > MAX_KEY_BYTES:
                raise StorageError(f"state key of {len(key)} bytes is outside 1..{MAX_KEY_BYTES}",
                                   code="bad_state_key")
            if value is not None and len(value) > MAX_VALUE_BYTES:
                raise StorageError(f"state value of {len(value)} bytes exceeds {MAX_VALUE_BYTES}",
                                   code="bad_state_value")
        prefixes = self.index_prefixes
        proven = {k: v for k, v in changes.items() if not k.startswith(prefixes)} if prefixes else changes
        update = self._tree.update(proven)
        ops: list[Op] = [(_S + k, v) for k, v in changes.items()]
        bucket_key = schema.merkle_bucket_key
        ops.extend([(bucket_key(b), blob) for b, blob in update.buckets.items()])
        node_key = schema.merkle_node_key
        ops.extend([(node_key(DEPTH, b), h) for b, h in update.bucket_hashes.items()])
        return StagedState(base_root=update.base_root, new_root=update.root, ops=ops, update=update)

    def check_base(self, staged: StagedState) -> None:
        if staged.base_root != self.root():
            raise StaleStage(f"staged on root {staged.base_root.hex()[:16]} but the state is now at "
                             f"{self.root().hex()[:16]}")

    def mark_committed(self, staged: StagedState) -> None:
        """Move the in-memory tree to `staged` once its ops are durably written (caller holds `lock`)."""
        self.check_base(staged)
        self._source.nodes.install(staged.update)
        self._source.committed(staged.update.buckets)

    def commit(self, staged: StagedState, extra_ops: list[Op] | None = None) -> None:
        """Write a staged change on its own (genesis, tools, tests); blocks go through BlockStore.commit."""
        with self.lock:
            self.check_base(staged)
            with self.db.batch(sync=True) as b:
                b.apply(staged.ops)
                b.put(schema.META_STATE_ROOT, staged.new_root)
                if extra_ops:
                    b.apply(extra_ops)
            self.mark_committed(staged)

    def proof(self, key: bytes) -> Proof:
        """Inclusion or absence proof of `key` under the current root."""
        with self.lock:  # an uncached source: proofs may come from any thread
            tree = MerkleTree(_NodeSource(self.db, self._source.nodes))
            return tree.prove(key, self.db.get(_S + key))

    def snapshot(self) -> StateSnapshot:
        """A consistent view of the committed state at this instant, with its height and root, for
        serving state-sync chunks (storage/snapshot.py). Close it when done."""
        return StateSnapshot.take(self)

    def export_chunks(self, max_chunk_bytes: int) -> Iterator[bytes]:
        """Every snapshot chunk of the state as committed at the time of this call."""
        snap = StateSnapshot.take(self)  # taken now, not at the first next()

        def chunks() -> Iterator[bytes]:
            try:
                yield from snap.chunks(max_chunk_bytes)
            finally:
                snap.close()

        return chunks()
