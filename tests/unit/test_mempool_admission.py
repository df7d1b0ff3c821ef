"""Mempool admission: strict decoding, chain, duplicates, nonce window, bounds, signatures checked once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from node.mempool import Mempool, MempoolLimits
from protocol import codec
from protocol.crypto import PrivateKey
from protocol.tx import SignedTx

CHAIN = "mp-chain"
ALICE = PrivateKey(b"\x11" * 32)
BOB = PrivateKey(b"\x12" * 32)
CAROL = PrivateKey(b"\x13" * 32)


def tx(sender: PrivateKey, nonce: int, *, chain: str = CHAIN, memo: bytes = b"") -> SignedTx:
    body = {"chain": chain, "kind": "transfer", "nonce": nonce, "to": b"\x09" * 32, "asset": "CNY.BANKA",
            "amount": 5}
    if memo:
        body["memo"] = memo
    return SignedTx.create(sender, body)


def forged(t: SignedTx) -> SignedTx:
    return SignedTx.from_wire(codec.encode({"sig": bytes(64), "tx": t.body_bytes}))


@pytest.fixture
def nonces() -> dict[bytes, int]:
    return {}


@pytest.fixture
def pool(nonces: dict[bytes, int]) -> Iterator[Mempool]:
    mp = Mempool(CHAIN, lambda s: nonces.get(s, 0),
                 limits=MempoolLimits(max_txs=20, max_bytes=1 << 20, per_sender_max=8, nonce_window=10))
    yield mp
    mp.close()


async def codes(mp: Mempool, txs: list[SignedTx] | list[bytes]) -> list[str]:
    raws = [t.raw if isinstance(t, SignedTx) else t for t in txs]
    return [r.code for r in await mp.add_many(raws)]


async def test_valid_txs_are_admitted_and_reported_with_their_hash(pool: Mempool) -> None:
    t = tx(ALICE, 0)
    [res] = await pool.add_many([t.raw])
    assert res.accepted and res.code == "accepted" and res.hash == t.hash and res.hash_hex == t.hash_hex
    assert len(pool) == 1 and pool.size_bytes == len(t.raw)
    assert pool.get(t.hash) == t and pool.status(t.hash) == "pending" and pool.status(b"\x00" * 32) is None


async def test_undecodable_oversized_and_wrong_chain_txs_are_rejected_with_codes(pool: Mempool) -> None:
    non_canonical = b"\x82\xa2tx\xc4\x01x\xa3sig\xc4\x40" + bytes(64)  # keys out of order
    got = await codes(pool, [b"\xc1", non_canonical, b"\x00" * (64 * 1024 + 1), tx(ALICE, 0, chain="other")])
    assert got == ["malformed", "non_canonical", "too_large", "wrong_chain"]
    assert len(pool) == 0


async def test_a_duplicate_is_rejected_whether_pending_in_the_same_batch_or_recently_committed(pool: Mempool) -> None:
    t = tx(ALICE, 0)
    assert await codes(pool, [t, t]) == ["accepted", "duplicate"]
    assert await codes(pool, [t]) == ["duplicate"]
    pool.remove_committed([t])
    assert await codes(pool, [t]) == ["already_committed"]


async def test_a_bad_signature_is_rejected_and_cannot_ride_on_a_verified_copy(pool: Mempool) -> None:
    good = tx(ALICE, 0)
    assert await codes(pool, [forged(good)]) == ["bad_signature"]
    assert await codes(pool, [good]) == ["accepted"]
    assert pool.is_verified(good.hash, good.sig)
    assert not pool.is_verified(good.hash, bytes(64))
    pool.remove_committed([good])
    assert pool.is_verified(good.hash, good.sig)  # still cached after leaving the pool


async def test_each_signature_is_verified_once(pool: Mempool) -> None:
    t = tx(BOB, 0)
    assert await pool.verify_txs([t]) == [True]
    assert pool.stats.verified == 1
    assert await codes(pool, [t]) == ["accepted"]
    assert await pool.verify_txs([t, forged(tx(BOB, 1))]) == [True, False]
    assert pool.stats.verified == 2


async def test_the_nonce_window_is_relative_to_the_committed_next_nonce(pool: Mempool, nonces: dict[bytes, int]) -> None:
    nonces[ALICE.public_key] = 5
    got = await codes(pool, [tx(ALICE, 4), tx(ALICE, 5), tx(ALICE, 14), tx(ALICE, 15)])
    assert got == ["nonce_too_low", "accepted", "accepted", "nonce_too_high"]


async def test_a_second_tx_with_a_pending_nonce_is_a_conflict(pool: Mempool) -> None:
    assert await codes(pool, [tx(ALICE, 0), tx(ALICE, 0, memo=b"other")]) == ["accepted", "nonce_conflict"]
    assert await codes(pool, [tx(ALICE, 0, memo=b"third")]) == ["nonce_conflict"]


async def test_a_sender_cannot_hold_more_than_its_share(pool: Mempool) -> None:
    got = await codes(pool, [tx(ALICE, n) for n in range(10)])
    assert got == ["accepted"] * 8 + ["sender_limit"] * 2
    assert await codes(pool, [tx(BOB, 0)]) == ["accepted"]


async def test_a_full_pool_by_count_answers_mempool_full_and_does_not_grow(pool: Mempool) -> None:
    txs = [tx(s, n) for s in (ALICE, BOB, CAROL) for n in range(8)]  # 24 > max_txs 20
    got = await codes(pool, txs)
    assert got.count("accepted") == 20 and got[20:] == ["mempool_full"] * 4
    assert len(pool) == 20
    assert pool.stats.rejected["mempool_full"] == 4


async def test_a_full_pool_by_bytes_answers_mempool_full() -> None:
    one = tx(ALICE, 0)
    mp = Mempool(CHAIN, lambda s: 0, limits=MempoolLimits(max_bytes=len(one.raw) * 2 + 10))
    try:
        got = await codes(mp, [one, tx(ALICE, 1), tx(ALICE, 2)])
        assert got == ["accepted", "accepted", "mempool_full"]
        assert mp.size_bytes <= mp.limits.max_bytes
    finally:
        mp.close()


async def test_a_batch_larger_than_the_limit_is_refused_whole() -> None:
    mp = Mempool(CHAIN, lambda s: 0, limits=MempoolLimits(max_batch=2))
    try:
        assert await codes(mp, [tx(ALICE, n) for n in range(3)]) == ["batch_too_large"] * 3
        assert len(mp) == 0
    finally:
        mp.close()


async def test_admitted_txs_are_handed_to_the_gossiper_with_their_source(pool: Mempool) -> None:
    seen: list[tuple[list[bytes], bytes | None]] = []
    pool.set_gossip(lambda txs, source: seen.append(([t.hash for t in txs], source)))
    a, b = tx(ALICE, 0), tx(BOB, 0)
    await pool.add_many([a.raw, b"\xc1", b.raw], source=b"P" * 32)
    await pool.add_many([a.raw])  # duplicate: nothing new to gossip
    assert seen == [([a.hash, b.hash], b"P" * 32)]
