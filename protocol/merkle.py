"""The state commitment: a bucketed, fixed-depth Merkle tree with presence and absence proofs.

Layout (every node is 32 bytes of SHA-256; `||` is concatenation):
- key hash  kh = sha256(key); the key's bucket is the first 2 bytes of kh, big-endian (2^16 buckets).
- leaf      sha256(0x00 || len(key) as 4-byte big-endian || key || value).
- entry     kh || leaf (64 bytes). A bucket's *blob* is its entries sorted by kh, concatenated.
- bucket    sha256(0x01 || blob); the empty bucket hashes the empty blob, sha256(0x01).
- internal  sha256(0x02 || left || right) over a complete binary tree of depth 16 whose leaves (level 16)
            are the 65536 bucket hashes; level 0 is the root. Empty subtrees have precomputed hashes.

Updating a change set touches only its buckets and their 16-level paths, so a block costs
O(changed keys * 16) hashes whatever the state size (about 35 ms for 6000 keys in CPython). The node
rows live densely in memory (`TreeNodes`, 131071 hashes); an update copies them (copy-on-write, ~1 ms)
so it never disturbs the committed tree. The bucket blob commits to key hashes, which is what makes an
absence proof possible: the bucket's full entry list shows kh is not among them.

Rule: pure. No I/O: node rows and blobs come from a `NodeStore` the caller provides, and
`MerkleTree.update` never mutates it; it returns the new root, the new blob and hash of every touched
bucket (what a store persists: internal nodes are rebuilt from bucket hashes) and the new rows.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from protocol.errors import FieldError
from protocol.fields import expect_map, only_keys, req_bytes, req_list

DEPTH = 16
NUM_BUCKETS = 1 << DEPTH
HASH_SIZE = 32
ENTRY_SIZE = 2 * HASH_SIZE
MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1024 * 1024
MAX_PROOF_ENTRIES = 4096

_LEAF = b"\x00"
_BUCKET = b"\x01"
_NODE = b"\x02"
_sha256 = hashlib.sha256


def key_hash(key: bytes) -> bytes:
    return _sha256(key).digest()


def bucket_of(key: bytes) -> int:
    """The bucket (0..65535) a state key belongs to."""
    kh = _sha256(key).digest()
    return (kh[0] << 8) | kh[1]


def leaf_hash(key: bytes, value: bytes) -> bytes:
    return _sha256(_LEAF + len(key).to_bytes(4, "big") + key + value).digest()


def bucket_hash(blob: bytes | None) -> bytes:
    """Hash of a bucket blob (sorted 64-byte entries); None or b"" is the empty bucket."""
    return _sha256(_BUCKET + (blob or b"")).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(_NODE + left + right).digest()


def _empty_hashes() -> tuple[bytes, ...]:
    out = [b""] * (DEPTH + 1)
    out[DEPTH] = bucket_hash(None)
    for level in range(DEPTH - 1, -1, -1):
        out[level] = node_hash(out[level + 1], out[level + 1])
    return tuple(out)


EMPTY: tuple[bytes, ...] = _empty_hashes()
"""EMPTY[level] is the hash of an all-empty subtree rooted at `level` (EMPTY[16] = empty bucket)."""
EMPTY_ROOT = EMPTY[0]


def split_blob(blob: bytes | None) -> list[bytes]:
    """A bucket blob as its list of 64-byte entries."""
    if not blob:
        return []
    return [blob[i:i + ENTRY_SIZE] for i in range(0, len(blob), ENTRY_SIZE)]


def update_blob(blob: bytes | None, changes: Iterable[tuple[bytes, bytes | None]]) -> bytes | None:
    """Apply (key hash, new leaf hash or None = delete) pairs to a bucket blob; None when it empties."""
    entries = [blob[i:i + ENTRY_SIZE] for i in range(0, len(blob), ENTRY_SIZE)] if blob else []
    for kh, leaf in changes:
        pos = bisect_left(entries, kh)  # an entry starting with kh sorts right after kh itself
        if pos < len(entries) and entries[pos].startswith(kh):
            if leaf is None:
                del entries[pos]
            else:
                entries[pos] = kh + leaf
        elif leaf is not None:
            entries.insert(pos, kh + leaf)
    return b"".join(entries) or None


class NodeStore(Protocol):
    """Where a tree lives: dense node rows in memory, bucket blobs wherever the caller keeps them."""

    def row(self, level: int) -> Sequence[bytes]:
        """All 2^level node hashes of `level`, EMPTY[level] where the subtree is empty."""
        ...

    def get_bucket(self, bucket: int) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class MerkleUpdate:
    """The result of applying a change set to the tree whose root was `base_root`.

    `buckets` and `bucket_hashes` hold the new blob and hash of every touched bucket (None = now empty):
    what a store persists. `rows` is the complete new tree (level 0..DEPTH) for `TreeNodes.install`.
    """

    base_root: bytes
    root: bytes
    buckets: dict[int, bytes | None]
    bucket_hashes: dict[int, bytes | None]
    rows: tuple[list[bytes], ...]


class TreeNodes:
    """Every node of the tree held densely in memory: 131071 hashes, empty subtrees share EMPTY[level]."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: list[list[bytes]] = [[EMPTY[level]] * (1 << level) for level in range(DEPTH + 1)]

    def row(self, level: int) -> list[bytes]:
        return self._rows[level]

    def root(self) -> bytes:
        return self._rows[0][0]

    def install(self, update: MerkleUpdate) -> None:
        """Move to the tree of `update`; it must have been computed on the current root."""
        if update.base_root != self.root():
            raise ValueError("merkle update was computed on a different root")
        if update.rows:
            self._rows = list(update.rows)

    def bucket_hashes(self) -> Iterator[tuple[int, bytes]]:
        """Non-empty bucket hashes in bucket order."""
        empty = EMPTY[DEPTH]
        for i, h in enumerate(self._rows[DEPTH]):
            if h != empty:
                yield i, h

    @classmethod
    def from_bucket_hashes(cls, hashes: Iterable[tuple[int, bytes]]) -> TreeNodes:
        """Rebuild every internal node from the non-empty bucket hashes (65535 hashes at most)."""
        tree = cls()
        rows = tree._rows
        touched: set[int] = set()
        leaves = rows[DEPTH]
        for index, h in hashes:
            if not 0 <= index < NUM_BUCKETS or len(h) != HASH_SIZE:
                raise ValueError("bad bucket hash entry")
            leaves[index] = h
            touched.add(index)
        _rehash(rows, touched)
        return tree


def _rehash(rows: list[list[bytes]], touched: set[int]) -> None:
    """Recompute, in place, every ancestor of the `touched` level-DEPTH nodes."""
    for level in range(DEPTH, 0, -1):
        child = rows[level]
        parent = rows[level - 1]
        parents = {i >> 1 for i in touched}
        for p in parents:
            parent[p] = _sha256(_NODE + child[p << 1] + child[(p << 1) | 1]).digest()
        touched = parents


class MemoryNodeStore(TreeNodes):
    """Nodes and bucket blobs in memory: the store for tests and the simulator."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        super().__init__()
        self._buckets: dict[int, bytes] = {}

    def get_bucket(self, bucket: int) -> bytes | None:
        return self._buckets.get(bucket)

    def apply_update(self, update: MerkleUpdate) -> None:
        self.install(update)
        for b, blob in update.buckets.items():
            if blob is None:
                self._buckets.pop(b, None)
            else:
                self._buckets[b] = blob


class MerkleTree:
    """Computes updates and proofs over a `NodeStore`; never writes to it."""

    __slots__ = ("_store",)

    def __init__(self, store: NodeStore) -> None:
        self._store = store

    def root(self) -> bytes:
        return self._store.row(0)[0]

    def update(self, changes: Mapping[bytes, bytes | None]) -> MerkleUpdate:
        """New root after applying `changes` (value None = delete); only touched paths are rehashed."""
        store = self._store
        base_root = self.root()
        per_bucket: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for key, value in changes.items():
            kh = _sha256(key).digest()
            leaf = None if value is None else _sha256(
                _LEAF + len(key).to_bytes(4, "big") + key + value).digest()
            per_bucket.setdefault((kh[0] << 8) | kh[1], []).append((kh, leaf))
        if not per_bucket:
            return MerkleUpdate(base_root=base_root, root=base_root, buckets={}, bucket_hashes={}, rows=())
        rows = [list(store.row(level)) for level in range(DEPTH + 1)]  # copy-on-write: ~1 ms
        leaves = rows[DEPTH]
        buckets: dict[int, bytes | None] = {}
        hashes: dict[int, bytes | None] = {}
        empty = EMPTY[DEPTH]
        get_bucket = store.get_bucket
        for b, bucket_changes in per_bucket.items():
            old = get_bucket(b)
            if old is None and len(bucket_changes) == 1:  # the common case in a sparse tree
                kh, leaf = bucket_changes[0]
                blob = None if leaf is None else kh + leaf
            else:
                blob = update_blob(old, bucket_changes)
            buckets[b] = blob
            if blob is None:
                leaves[b] = empty
                hashes[b] = None
            else:
                leaves[b] = hashes[b] = _sha256(_BUCKET + blob).digest()
        _rehash(rows, set(per_bucket))
        return MerkleUpdate(base_root=base_root, root=rows[0][0], buckets=buckets, bucket_hashes=hashes,
                            rows=tuple(rows))

    def prove(self, key: bytes, value: bytes | None) -> Proof:
        """A proof that `key` maps to `value` (None: is absent) under the current root.

        The caller passes the value it read from the same state version as the tree; the proof only
        verifies if that value is the committed one.
        """
        store = self._store
        b = bucket_of(key)
        siblings = []
        index = b
        for level in range(DEPTH, 0, -1):
            siblings.append(store.row(level)[index ^ 1])
            index >>= 1
        return Proof(key=key, value=value, entries=tuple(split_blob(store.get_bucket(b))),
                     siblings=tuple(siblings))


@dataclass(frozen=True, slots=True)
class Proof:
    """Inclusion (value set) or absence (value None) of one key under a state root."""

    key: bytes
    value: bytes | None
    entries: tuple[bytes, ...]  # the bucket's 64-byte entries, sorted by key hash
    siblings: tuple[bytes, ...]  # DEPTH sibling hashes, from the bucket level up to the root's children

    def to_value(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "entries": list(self.entries),
                "siblings": list(self.siblings)}

    @classmethod
    def from_value(cls, v: Any) -> Proof:
        m = expect_map(v, "merkle proof")
        only_keys(m, {"key", "value", "entries", "siblings"}, "merkle proof")
        key = req_bytes(m, "key", max_size=MAX_KEY_BYTES)
        if "value" not in m:
            raise FieldError("missing field 'value'")
        value = m["value"]
        if value is not None and (not isinstance(value, bytes) or len(value) > MAX_VALUE_BYTES):
            raise FieldError("field 'value' must be bytes or nil")
        entries = req_list(m, "entries", max_len=MAX_PROOF_ENTRIES)
        if any(not isinstance(e, bytes) or len(e) != ENTRY_SIZE for e in entries):
            raise FieldError(f"proof entries must be {ENTRY_SIZE}-byte strings")
        siblings = req_list(m, "siblings", max_len=DEPTH)
        if len(siblings) != DEPTH or any(not isinstance(s, bytes) or len(s) != HASH_SIZE for s in siblings):
            raise FieldError(f"a proof carries exactly {DEPTH} {HASH_SIZE}-byte siblings")
        return cls(key=key, value=value, entries=tuple(entries), siblings=tuple(siblings))


def verify_proof(root: bytes, proof: Proof) -> bool:
    """True iff `proof` shows key -> value (or key absent, value None) under `root`."""
    if len(proof.siblings) != DEPTH or len(root) != HASH_SIZE:
        return False
    kh = key_hash(proof.key)
    found: bytes | None = None
    prev = b""
    for e in proof.entries:
        if len(e) != ENTRY_SIZE or e[:2] != kh[:2] or e[:HASH_SIZE] <= prev:
            return False  # not this bucket's canonical, strictly sorted entry list
        prev = e[:HASH_SIZE]
        if prev == kh:
            found = e[HASH_SIZE:]
    if proof.value is None:
        if found is not None:
            return False
    elif found is None or found != leaf_hash(proof.key, proof.value):
        return False
    h = bucket_hash(b"".join(proof.entries))
    index = (kh[0] << 8) | kh[1]
    for sib in proof.siblings:
        if len(sib) != HASH_SIZE:
            return False
        h = node_hash(h, sib) if index & 1 == 0 else node_hash(sib, h)
        index >>= 1
    return h == root


def compute_root(items: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]) -> bytes:
    """The root of a whole key/value set, computed from scratch (tests, snapshot verification)."""
    pairs = items.items() if isinstance(items, Mapping) else items
    per_bucket: dict[int, list[bytes]] = {}
    seen: set[bytes] = set()
    for key, value in pairs:
        kh = key_hash(key)
        if kh in seen:
            raise ValueError("duplicate key in compute_root")
        seen.add(kh)
        per_bucket.setdefault((kh[0] << 8) | kh[1], []).append(kh + leaf_hash(key, value))
    cur = {b: bucket_hash(b"".join(sorted(es))) for b, es in per_bucket.items()}
    for level in range(DEPTH, 0, -1):
        empty = EMPTY[level]
        cur = {p: node_hash(cur.get(2 * p, empty), cur.get(2 * p + 1, empty))
               for p in sorted({i >> 1 for i in cur})}
    return cur.get(0, EMPTY_ROOT)
