"""Throughput probes for the mempool and tx gossip: `python -m devtools.p2p_bench [--txs N]`.

Rule: a measurement tool, not a test: it prints numbers and asserts nothing about timing. Everything
runs in one process on 127.0.0.1 with ephemeral ports.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from node.mempool import Mempool, MempoolLimits
from node.p2p.gossip import TxGossip
from node.p2p.node import P2P
from node.p2p.types import P2PSettings, PeerAddr
from protocol.crypto import PrivateKey
from protocol.tx import SignedTx

CHAIN = "bench"


def make_txs(n: int, senders: int = 100) -> list[SignedTx]:
    keys = [PrivateKey(i.to_bytes(4, "big") * 8) for i in range(senders)]
    return [SignedTx.create(keys[i % senders], {"chain": CHAIN, "kind": "transfer", "nonce": i // senders,
                                                "to": b"\x05" * 32, "asset": "CNY.BANKA", "amount": 100 + i})
            for i in range(n)]


def limits(n: int) -> MempoolLimits:
    return MempoolLimits(max_txs=n * 2, per_sender_max=n, nonce_window=n)


async def admission(txs: list[SignedTx], batch: int) -> float:
    mp = Mempool(CHAIN, lambda _s: 0, limits=limits(len(txs)))
    try:
        t0 = time.perf_counter()
        for i in range(0, len(txs), batch):
            res = await mp.add_many([t.raw for t in txs[i:i + batch]])
            assert all(r.accepted for r in res), res[0]
        return len(txs) / (time.perf_counter() - t0)
    finally:
        mp.close()


async def gossip(txs: list[SignedTx], batch: int) -> tuple[float, float]:
    """Admit at A, wait until all are in B's mempool. Returns (tx/s end to end, MB/s on the wire)."""
    keys = [PrivateKey(b"\xa1" * 32), PrivateKey(b"\xa2" * 32)]
    allowed = [k.public_key for k in keys]
    settings = P2PSettings()
    a = P2P(keys[0], CHAIN, validators=allowed, settings=settings)
    await a.start()
    b = P2P(keys[1], CHAIN, validators=allowed, settings=settings,
            dial=[PeerAddr(a.public_key, "127.0.0.1", a.listen_port or 0)])
    await b.start()
    pools = [Mempool(CHAIN, lambda _s: 0, limits=limits(len(txs))) for _ in range(2)]
    gs = [TxGossip(a, pools[0]), TxGossip(b, pools[1])]
    runs = [asyncio.create_task(g.run()) for g in gs]
    try:
        while not a.connected():
            await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        for i in range(0, len(txs), batch):
            await pools[0].add_many([t.raw for t in txs[i:i + batch]])
        deadline = time.perf_counter() + 120
        while len(pools[1]) < len(txs) and time.perf_counter() < deadline:
            await asyncio.sleep(0.002)
        dt = time.perf_counter() - t0
        if len(pools[1]) < len(txs):
            raise SystemExit(f"gossip incomplete: {len(pools[1])}/{len(txs)}")
        return len(txs) / dt, a.stats.bytes_out / dt / 1e6
    finally:
        for t in runs:
            t.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        await b.stop()
        await a.stop()
        for p in pools:
            p.close()


async def transport(txs: list[SignedTx], batch: int, rounds: int) -> tuple[float, float]:
    """`txs` batches A -> B through the sealed channel to a counting handler (no mempool): the wire path
    alone (encode, seal, write, read, open, strict decode, Txs.from_value). Returns (tx/s, MB/s)."""
    from protocol.messages import Txs

    keys = [PrivateKey(b"\xb1" * 32), PrivateKey(b"\xb2" * 32)]
    allowed = [k.public_key for k in keys]
    a = P2P(keys[0], CHAIN, validators=allowed)
    await a.start()
    b = P2P(keys[1], CHAIN, validators=allowed, dial=[PeerAddr(a.public_key, "127.0.0.1", a.listen_port or 0)])
    got = [0]

    def count(_peer: bytes, body: object) -> None:
        got[0] += len(Txs.from_value(body).txs)

    b.register("txs", count)
    await b.start()
    try:
        while not a.connected():
            await asyncio.sleep(0.01)
        bodies = [Txs(txs=tuple(t.raw for t in txs[i:i + batch])).to_value() for i in range(0, len(txs), batch)]
        total = len(txs) * rounds
        t0 = time.perf_counter()
        for _ in range(rounds):
            for body in bodies:
                while not a.send(b.public_key, "txs", body):
                    await asyncio.sleep(0.001)
            await asyncio.sleep(0)
        while got[0] < total and time.perf_counter() - t0 < 120:
            await asyncio.sleep(0.001)
        dt = time.perf_counter() - t0
        return got[0] / dt, a.stats.bytes_out / dt / 1e6
    finally:
        await b.stop()
        await a.stop()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--txs", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    txs = make_txs(args.txs)
    print(f"txs: {len(txs)}, {sum(len(t.raw) for t in txs) // len(txs)} bytes each, batch {args.batch}")
    rate = await admission(txs, args.batch)
    print(f"mempool admission (decode + checks + signature): {rate:,.0f} tx/s")
    rate = await admission(txs, len(txs))
    print(f"mempool admission, one batch of {len(txs)}: {rate:,.0f} tx/s")
    rate, mbs = await gossip(txs, args.batch)
    print(f"gossip A -> B, admitted at A until all in B's mempool: {rate:,.0f} tx/s ({mbs:.2f} MB/s on the wire)")
    rate, mbs = await transport(txs, args.batch, 10)
    print(f"wire only, txs batches A -> B to a counting handler: {rate:,.0f} tx/s ({mbs:.1f} MB/s)")


if __name__ == "__main__":
    asyncio.run(main())
