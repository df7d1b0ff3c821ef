"""Properties of the bucketed Merkle tree: incremental == from scratch, and proofs are sound."""

from __future__ import annotations

import functools

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec, merkle

SAME_BUCKET_TARGET = 0x1234


@functools.lru_cache(maxsize=1)
def colliding_keys() -> tuple[bytes, ...]:
    """Six keys that share one bucket, so multi-entry buckets are exercised (found by brute force)."""
    out: list[bytes] = []
    i = 0
    while len(out) < 6:
        k = b"c%d" % i
        if merkle.bucket_of(k) == SAME_BUCKET_TARGET:
            out.append(k)
        i += 1
    return tuple(out)


def key_pool() -> list[bytes]:
    return [b"k%d" % i for i in range(40)] + list(colliding_keys())


keys = st.sampled_from(key_pool())
values = st.binary(min_size=0, max_size=12)
change_sets = st.dictionaries(keys, st.one_of(st.none(), values), max_size=20)


def apply(state: dict[bytes, bytes], changes: dict[bytes, bytes | None]) -> None:
    for k, v in changes.items():
        if v is None:
            state.pop(k, None)
        else:
            state[k] = v


@settings(max_examples=150, deadline=None)
@given(st.lists(change_sets, min_size=1, max_size=8))
def test_incremental_root_equals_the_from_scratch_root_after_every_change_set(
        sequence: list[dict[bytes, bytes | None]]) -> None:
    store = merkle.MemoryNodeStore()
    tree = merkle.MerkleTree(store)
    state: dict[bytes, bytes] = {}
    for changes in sequence:
        update = tree.update(changes)
        store.apply_update(update)
        apply(state, changes)
        assert update.root == tree.root() == merkle.compute_root(state)
    # the whole tree equals one rebuilt from its bucket hashes (the storage reopen path)
    rebuilt = merkle.TreeNodes.from_bucket_hashes(store.bucket_hashes())
    assert rebuilt.root() == tree.root()


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(keys, values, max_size=30), st.randoms(use_true_random=False))
def test_root_does_not_depend_on_the_order_changes_are_applied(state: dict[bytes, bytes], rnd: object) -> None:
    items = sorted(state.items())
    rnd.shuffle(items)  # type: ignore[attr-defined]
    store = merkle.MemoryNodeStore()
    tree = merkle.MerkleTree(store)
    for i in range(0, len(items), 3):
        store.apply_update(tree.update(dict(items[i:i + 3])))
    assert tree.root() == merkle.compute_root(state)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(keys, values, max_size=30), keys)
def test_proofs_verify_for_present_and_absent_keys_and_survive_the_wire(
        state: dict[bytes, bytes], key: bytes) -> None:
    store = merkle.MemoryNodeStore()
    tree = merkle.MerkleTree(store)
    store.apply_update(tree.update(state))
    proof = tree.prove(key, state.get(key))
    assert merkle.verify_proof(tree.root(), proof)
    again = merkle.Proof.from_value(codec.decode(codec.encode(proof.to_value())))
    assert again == proof
    assert merkle.verify_proof(tree.root(), again)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, values, min_size=1, max_size=30), keys, st.data())
def test_tampered_proofs_fail(state: dict[bytes, bytes], key: bytes, data: st.DataObject) -> None:
    store = merkle.MemoryNodeStore()
    tree = merkle.MerkleTree(store)
    store.apply_update(tree.update(state))
    root = tree.root()
    value = state.get(key)
    proof = tree.prove(key, value)
    # the opposite claim: present key claimed absent, or absent key claimed present
    wrong_value = None if value is not None else b"x"
    assert not merkle.verify_proof(root, merkle.Proof(key, wrong_value, proof.entries, proof.siblings))
    if value is not None:
        assert not merkle.verify_proof(root, merkle.Proof(key, value + b"!", proof.entries, proof.siblings))
    # flip one bit anywhere in the entries or siblings
    parts = list(proof.entries) + list(proof.siblings)
    i = data.draw(st.integers(0, len(parts) - 1))
    bit = data.draw(st.integers(0, len(parts[i]) * 8 - 1))
    flipped = bytearray(parts[i])
    flipped[bit // 8] ^= 1 << (bit % 8)
    parts[i] = bytes(flipped)
    n = len(proof.entries)
    tampered = merkle.Proof(key, value, tuple(parts[:n]), tuple(parts[n:]))
    assert not merkle.verify_proof(root, tampered)
    # dropping an entry (hiding a key) fails too
    if proof.entries:
        j = data.draw(st.integers(0, n - 1))
        dropped = proof.entries[:j] + proof.entries[j + 1:]
        assert not merkle.verify_proof(root, merkle.Proof(key, value, dropped, proof.siblings))
    # and a valid proof does not verify against another root
    other = dict(state)
    other[b"k-other"] = b"1"
    assert not merkle.verify_proof(merkle.compute_root(other), proof)
