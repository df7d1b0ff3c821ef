"""The Merkle layout is exactly the documented one, and the tree API is pure."""

from __future__ import annotations

import hashlib

import pytest

from protocol import codec, merkle
from protocol.errors import FieldError


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_bucket_is_the_first_two_bytes_of_the_key_hash() -> None:
    for key in (b"a", b"bal/xyz", bytes(range(50))):
        assert merkle.bucket_of(key) == int.from_bytes(h(key)[:2], "big")


def test_empty_tree_root_is_the_documented_constant() -> None:
    node = h(b"\x01")
    for _ in range(merkle.DEPTH):
        node = h(b"\x02" + node + node)
    assert merkle.EMPTY_ROOT == node == merkle.compute_root({})
    assert merkle.MerkleTree(merkle.MemoryNodeStore()).root() == node


def test_single_key_root_follows_the_written_layout() -> None:
    key, value = b"account/1", b"balance=5"
    kh = h(key)
    leaf = h(b"\x00" + len(key).to_bytes(4, "big") + key + value)
    node = h(b"\x01" + kh + leaf)
    index = int.from_bytes(kh[:2], "big")
    for level in range(merkle.DEPTH, 0, -1):
        sib = merkle.EMPTY[level]
        node = h(b"\x02" + node + sib) if index % 2 == 0 else h(b"\x02" + sib + node)
        index //= 2
    assert merkle.compute_root({key: value}) == node
    store = merkle.MemoryNodeStore()
    tree = merkle.MerkleTree(store)
    store.apply_update(tree.update({key: value}))
    assert tree.root() == node


def test_update_does_not_mutate_the_store_until_installed() -> None:
    store = merkle.MemoryNodeStore()
    tree = merkle.MerkleTree(store)
    update = tree.update({b"a": b"1", b"b": b"2"})
    assert tree.root() == merkle.EMPTY_ROOT
    assert store.get_bucket(merkle.bucket_of(b"a")) is None
    store.apply_update(update)
    assert tree.root() == update.root == merkle.compute_root({b"a": b"1", b"b": b"2"})


def test_installing_an_update_computed_on_another_root_is_refused() -> None:
    store = merkle.MemoryNodeStore()
    tree = merkle.MerkleTree(store)
    first = tree.update({b"a": b"1"})
    second = tree.update({b"b": b"2"})
    store.apply_update(first)
    with pytest.raises(ValueError):
        store.apply_update(second)


def test_deleting_every_key_returns_to_the_empty_root_and_empties_buckets() -> None:
    store = merkle.MemoryNodeStore()
    tree = merkle.MerkleTree(store)
    items = {b"k%d" % i: b"v" for i in range(100)}
    store.apply_update(tree.update(items))
    update = tree.update(dict.fromkeys(items))
    assert all(blob is None for blob in update.buckets.values())
    assert all(x is None for x in update.bucket_hashes.values())
    store.apply_update(update)
    assert tree.root() == merkle.EMPTY_ROOT
    assert list(store.bucket_hashes()) == []


def test_an_empty_change_set_keeps_the_root() -> None:
    store = merkle.MemoryNodeStore()
    tree = merkle.MerkleTree(store)
    store.apply_update(tree.update({b"a": b"1"}))
    update = tree.update({})
    assert update.root == tree.root()
    store.apply_update(update)
    assert tree.root() == merkle.compute_root({b"a": b"1"})


def test_update_blob_keeps_entries_sorted_and_replaces_in_place() -> None:
    khs = sorted(h(b"%d" % i) for i in range(5))
    blob = merkle.update_blob(None, [(kh, b"L" * 32) for kh in reversed(khs)])
    assert blob is not None
    assert [e[:32] for e in merkle.split_blob(blob)] == khs
    blob2 = merkle.update_blob(blob, [(khs[2], b"N" * 32), (khs[0], None)])
    assert blob2 is not None
    assert merkle.split_blob(blob2) == [khs[1] + b"L" * 32, khs[2] + b"N" * 32,
                                        khs[3] + b"L" * 32, khs[4] + b"L" * 32]
    assert merkle.update_blob(blob2, [(kh, None) for kh in khs]) is None


def test_compute_root_rejects_duplicate_keys() -> None:
    with pytest.raises(ValueError):
        merkle.compute_root([(b"a", b"1"), (b"a", b"2")])


def test_proof_from_value_rejects_malformed_input() -> None:
    store = merkle.MemoryNodeStore()
    tree = merkle.MerkleTree(store)
    store.apply_update(tree.update({b"a": b"1"}))
    good = tree.prove(b"a", b"1").to_value()
    bad_cases = [
        {**good, "siblings": good["siblings"][:-1]},
        {**good, "siblings": [*good["siblings"][:-1], b"short"]},
        {**good, "entries": [b"x" * 63]},
        {**good, "value": 5},
        {k: v for k, v in good.items() if k != "value"},
        {**good, "extra": 1},
        {**good, "key": b"k" * (merkle.MAX_KEY_BYTES + 1)},
        [1, 2],
    ]
    for case in bad_cases:
        with pytest.raises(FieldError):
            merkle.Proof.from_value(case)
    assert merkle.Proof.from_value(codec.decode(codec.encode(good))) == tree.prove(b"a", b"1")


def test_proof_with_unsorted_or_foreign_entries_is_rejected() -> None:
    store = merkle.MemoryNodeStore()
    tree = merkle.MerkleTree(store)
    store.apply_update(tree.update({b"a": b"1"}))
    proof = tree.prove(b"zzz-absent", None)
    assert merkle.verify_proof(tree.root(), proof)
    # an entry from another bucket cannot be smuggled into an absence proof
    foreign = h(b"a") + merkle.leaf_hash(b"a", b"1")
    if merkle.bucket_of(b"a") != merkle.bucket_of(b"zzz-absent"):
        assert not merkle.verify_proof(tree.root(), merkle.Proof(b"zzz-absent", None, (foreign,), proof.siblings))
    assert not merkle.verify_proof(b"\x00" * 31, proof)
