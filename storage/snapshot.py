"""State snapshots for state sync: deterministic chunk export and a verifying, atomic importer.

Chunk wire format (canonical msgpack): `{"index": i, "root": <32-byte state root>, "items": [[key, value],
...]}`, keys strictly ascending within and across chunks. Chunks are packed greedily up to
`max_chunk_bytes` of key+value payload (at least one item each; an empty state is one empty chunk), so
every honest node at the same height with the same limit produces byte-identical chunks: a syncing node
may fetch different chunks from different peers. A `SnapshotManifest` (height, root, chunk limit, the
sha256 of every chunk) lets the importer check each chunk on arrival; manifests are kept under `P`.

Rule: an import never touches the live state until the very end. Chunks are checked one by one
(structure, order, root field) and staged under the `X` namespace; `finish` rebuilds the Merkle root
from the staged entries, compares it with the expected (checkpoint-certified) root, and only then swaps
the state in one synced batch. Any failure raises a `SnapshotError` and wipes the staging area.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from protocol import codec, merkle
from protocol.crypto import sha256
from protocol.errors import CodecError, FieldError, ProtocolError
from protocol.fields import expect_map, only_keys, req_bytes, req_int, req_list
from protocol.merkle import DEPTH, MAX_KEY_BYTES, MAX_VALUE_BYTES, TreeNodes
from storage import schema
from storage.db import Database, Op, Snapshot
from storage.errors import DatabaseCorrupt, SnapshotError, SnapshotRootMismatch

if TYPE_CHECKING:
    from storage.state import StateStore

MAX_CHUNK_BYTES = 16 * 1024 * 1024
MIN_CHUNK_BYTES = 1024
CHUNK_LIMITS = codec.Limits(max_bytes=MAX_CHUNK_BYTES + MAX_VALUE_BYTES + 64 * 1024, max_depth=4,
                            max_str=16, max_bin=MAX_VALUE_BYTES, max_array=MAX_CHUNK_BYTES // 2, max_map=4)
MAX_MANIFEST_CHUNKS = 1_000_000
MANIFEST_LIMITS = codec.Limits(max_bytes=MAX_MANIFEST_CHUNKS * 40, max_depth=3, max_str=32, max_bin=64,
                               max_array=MAX_MANIFEST_CHUNKS, max_map=8)
_S = schema.STATE
_STAGE_S = schema.staging_key(schema.STATE)


def _check_limit(max_chunk_bytes: int) -> None:
    if not MIN_CHUNK_BYTES <= max_chunk_bytes <= MAX_CHUNK_BYTES:
        raise ValueError(f"max_chunk_bytes must be {MIN_CHUNK_BYTES}..{MAX_CHUNK_BYTES}")


@dataclass(frozen=True, slots=True)
class SnapshotManifest:
    """What a serving node says about one snapshot: lets a syncing node check each chunk on arrival.

    The manifest itself is not certified (only `root` is, by the checkpoint), so a chunk that fails its
    hash blames the peer that served it; the final root check is what makes the import safe.
    """

    height: int
    root: bytes
    max_chunk_bytes: int
    chunk_hashes: tuple[bytes, ...]

    def to_value(self) -> dict[str, Any]:
        return {"height": self.height, "root": self.root, "max_chunk_bytes": self.max_chunk_bytes,
                "chunk_hashes": list(self.chunk_hashes)}

    def encode(self) -> bytes:
        return codec.encode(self.to_value())

    @classmethod
    def from_value(cls, v: Any) -> SnapshotManifest:
        m = expect_map(v, "snapshot manifest")
        only_keys(m, {"height", "root", "max_chunk_bytes", "chunk_hashes"}, "snapshot manifest")
        hashes = req_list(m, "chunk_hashes", max_len=MAX_MANIFEST_CHUNKS)
        if not hashes or any(not isinstance(x, bytes) or len(x) != merkle.HASH_SIZE for x in hashes):
            raise FieldError("chunk_hashes must be a non-empty list of 32-byte hashes")
        return cls(height=req_int(m, "height", lo=0, hi=2**63 - 1), root=req_bytes(m, "root", size=merkle.HASH_SIZE),
                   max_chunk_bytes=req_int(m, "max_chunk_bytes", lo=MIN_CHUNK_BYTES, hi=MAX_CHUNK_BYTES),
                   chunk_hashes=tuple(hashes))

    @classmethod
    def decode(cls, data: bytes) -> SnapshotManifest:
        return cls.from_value(codec.decode(data, MANIFEST_LIMITS))


def save_manifest(db: Database, manifest: SnapshotManifest) -> None:
    """Record a manifest under its height (the `P` namespace)."""
    db.put(schema.snapshot_meta_key(manifest.height), manifest.encode(), sync=True)


def load_manifest(db: Database, height: int | None = None) -> SnapshotManifest | None:
    """The manifest recorded for `height`, or the highest one when height is None."""
    if height is None:
        latest = next(db.iterate(prefix=schema.SNAPSHOT_META, reverse=True), None)
        raw = latest[1] if latest is not None else None
    else:
        raw = db.get(schema.snapshot_meta_key(height))
    if raw is None:
        return None
    try:
        return SnapshotManifest.decode(raw)
    except ProtocolError as exc:
        raise DatabaseCorrupt(f"stored snapshot manifest does not decode: {exc.message}") from exc


class StateSnapshot:
    """A consistent, read-only view of the state at one height, for serving chunks. Close when done.

    Take it right after committing the height you will serve (e.g. every checkpoint height): the
    database keeps only the latest state, and a LevelDB snapshot is O(1) to hold.
    """

    def __init__(self, snap: Snapshot, height: int, root: bytes, index_prefixes: tuple[bytes, ...] = ()) -> None:
        self._snap = snap
        self._skip = index_prefixes
        self.height = height
        self.root = root
        self._starts: dict[int, list[bytes]] = {}

    @classmethod
    def take(cls, store: StateStore) -> StateSnapshot:
        with store.lock:  # commits hold the lock across write + tree update: root matches the snapshot
            snap = store.db.snapshot()
            root = store.root()
        raw_height = snap.get(schema.META_HEIGHT)
        return cls(snap, schema.read_u64(raw_height) if raw_height else 0, root, store.index_prefixes)

    def _items(self, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        stop = schema.prefix_end(_S)
        skip = self._skip
        for k, v in self._snap.iterate(_S + (start or b""), stop):
            if skip and k[1:].startswith(skip):
                continue
            yield k[1:], v

    def _pack(self, max_chunk_bytes: int, start: bytes | None,
              first_index: int) -> Iterator[tuple[int, bytes, list[list[bytes]]]]:
        """(index, first key, items) of each chunk, greedily packed."""
        index = first_index
        items: list[list[bytes]] = []
        size = 0
        first = b""
        for k, v in self._items(start):
            n = len(k) + len(v) + 16
            if items and size + n > max_chunk_bytes:
                yield index, first, items
                index += 1
                items, size = [], 0
            if not items:
                first = k
            items.append([k, v])
            size += n
        if items or index == 0:
            yield index, first, items

    def _encode(self, index: int, items: list[list[bytes]]) -> bytes:
        return codec.encode({"index": index, "root": self.root, "items": items}, max_depth=4)

    def chunks(self, max_chunk_bytes: int) -> Iterator[bytes]:
        """Every chunk, in order."""
        _check_limit(max_chunk_bytes)
        for index, _first, items in self._pack(max_chunk_bytes, None, 0):
            yield self._encode(index, items)

    def chunk_count(self, max_chunk_bytes: int) -> int:
        return len(self._chunk_starts(max_chunk_bytes))

    def _chunk_starts(self, max_chunk_bytes: int) -> list[bytes]:
        _check_limit(max_chunk_bytes)
        if max_chunk_bytes not in self._starts:
            self._starts[max_chunk_bytes] = [first for _i, first, _items in self._pack(max_chunk_bytes, None, 0)]
        return self._starts[max_chunk_bytes]

    def manifest(self, max_chunk_bytes: int) -> SnapshotManifest:
        """One pass over the snapshot: the hash of every chunk (also primes random access)."""
        _check_limit(max_chunk_bytes)
        hashes = []
        starts = []
        for index, first, items in self._pack(max_chunk_bytes, None, 0):
            starts.append(first)
            hashes.append(sha256(self._encode(index, items)))
        self._starts[max_chunk_bytes] = starts
        return SnapshotManifest(height=self.height, root=self.root, max_chunk_bytes=max_chunk_bytes,
                                chunk_hashes=tuple(hashes))

    def chunk(self, index: int, max_chunk_bytes: int) -> bytes | None:
        """Chunk `index` (random access for serving peers), or None past the end."""
        starts = self._chunk_starts(max_chunk_bytes)
        if not 0 <= index < len(starts):
            return None
        for i, _first, items in self._pack(max_chunk_bytes, starts[index] if index else None, index):
            return self._encode(i, items)
        return None  # pragma: no cover - _pack always yields for a known start

    def close(self) -> None:
        self._snap.close()

    def __enter__(self) -> StateSnapshot:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _decode_chunk(data: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    try:
        v: Any = codec.decode(data, CHUNK_LIMITS)
    except CodecError as exc:
        raise SnapshotError(f"snapshot chunk is not canonical msgpack: {exc.message}") from exc
    if not isinstance(v, dict) or set(v) != {"index", "root", "items"}:
        raise SnapshotError("snapshot chunk must be a map of exactly index, root, items")
    index, root, items = v["index"], v["root"], v["items"]
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise SnapshotError("snapshot chunk index must be a non-negative integer")
    if not isinstance(root, bytes) or len(root) != merkle.HASH_SIZE:
        raise SnapshotError("snapshot chunk root must be 32 bytes")
    if not isinstance(items, list):
        raise SnapshotError("snapshot chunk items must be a list")
    out: list[tuple[bytes, bytes]] = []
    for item in items:
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes)
                or not isinstance(item[1], bytes)):
            raise SnapshotError("each snapshot item must be [key bytes, value bytes]")
        if not 0 < len(item[0]) <= MAX_KEY_BYTES:
            raise SnapshotError("snapshot item key length out of range")
        out.append((item[0], item[1]))
    return index, root, out


class SnapshotImporter:
    """Rebuilds the state from chunks given in order and installs it only if its root is `expected_root`."""

    def __init__(self, store: StateStore, expected_root: bytes, *,
                 manifest: SnapshotManifest | None = None) -> None:
        if len(expected_root) != merkle.HASH_SIZE:
            raise ValueError("expected_root must be 32 bytes")
        if manifest is not None and manifest.root != expected_root:
            raise SnapshotRootMismatch("the snapshot manifest is for a different state root")
        self._store = store
        self.manifest = manifest
        self.expected_root = expected_root
        self.next_index = 0
        self.items = 0
        self._last_key: bytes | None = None
        self._entries: dict[int, list[bytes]] = {}
        self._done = False
        self._wipe_staging()

    def staged_value(self, key: bytes) -> bytes | None:
        """The value the imported chunks gave the logical state key `key` (before `finish`)."""
        return self._store.db.get(_STAGE_S + key)

    def _wipe_staging(self) -> None:
        db = self._store.db
        with db.batch(sync=False) as b:
            db.delete_prefix(schema.IMPORT_STAGING, b)

    def _fail(self, exc: SnapshotError) -> SnapshotError:
        self._done = True
        self._entries.clear()
        self._wipe_staging()
        return exc

    def add_chunk(self, data: bytes) -> None:
        """Check and stage the next chunk; a bad chunk raises SnapshotError and aborts the import."""
        if self._done:
            raise SnapshotError("this import is already finished or aborted")
        try:
            index, root, items = _decode_chunk(data)
        except SnapshotError as exc:
            raise self._fail(exc) from exc
        if index != self.next_index:
            raise self._fail(SnapshotError(f"expected snapshot chunk {self.next_index}, got {index}"))
        if root != self.expected_root:
            raise self._fail(SnapshotRootMismatch("snapshot chunk belongs to a different state root"))
        if self.manifest is not None:
            hashes = self.manifest.chunk_hashes
            if index >= len(hashes) or sha256(data) != hashes[index]:
                raise self._fail(SnapshotError(f"snapshot chunk {index} does not match the manifest",
                                               code="snapshot_chunk_mismatch"))
        last = self._last_key
        for k, _v in items:
            if last is not None and k <= last:
                raise self._fail(SnapshotError("snapshot keys are not strictly ascending"))
            last = k
        with self._store.db.batch(sync=False) as b:
            for k, v in items:
                b.put(_STAGE_S + k, v)
        entries = self._entries
        for k, v in items:
            kh = merkle.key_hash(k)
            entries.setdefault((kh[0] << 8) | kh[1], []).append(kh + merkle.leaf_hash(k, v))
        self._last_key = last
        self.items += len(items)
        self.next_index += 1

    def abort(self) -> None:
        if not self._done:
            self._fail(SnapshotError("aborted"))

    def finish(self, extra_ops: Iterable[Op] = ()) -> None:
        """Verify the rebuilt root and atomically replace the state (plus `extra_ops`, e.g. chain meta)."""
        if self._done:
            raise SnapshotError("this import is already finished or aborted")
        if self.next_index == 0:
            raise self._fail(SnapshotError("no snapshot chunks were imported"))
        if self.manifest is not None and self.next_index != len(self.manifest.chunk_hashes):
            raise self._fail(SnapshotError(f"imported {self.next_index} chunks, the manifest lists "
                                           f"{len(self.manifest.chunk_hashes)}"))
        blobs = {b: b"".join(sorted(es)) for b, es in self._entries.items()}
        hashes = {b: merkle.bucket_hash(blob) for b, blob in blobs.items()}
        nodes = TreeNodes.from_bucket_hashes(sorted(hashes.items()))
        if nodes.root() != self.expected_root:
            raise self._fail(SnapshotRootMismatch(
                f"snapshot rebuilds state root {nodes.root().hex()}, expected {self.expected_root.hex()}"))
        store = self._store
        db = store.db
        with store.lock:
            with db.batch(sync=True) as b:
                for prefix in (schema.STATE, schema.MERKLE_BUCKET, schema.MERKLE_NODE):
                    db.delete_prefix(prefix, b)
                n = len(_STAGE_S)
                for k, v in db.iterate(prefix=_STAGE_S):
                    b.put(_S + k[n:], v)
                    b.delete(k)
                for bucket, blob in blobs.items():
                    b.put(schema.merkle_bucket_key(bucket), blob)
                    b.put(schema.merkle_node_key(DEPTH, bucket), hashes[bucket])
                b.put(schema.META_STATE_ROOT, self.expected_root)
                b.apply(extra_ops)
            store.reload()
        self._done = True
        self._entries.clear()
