"""Tx gossip between real P2P nodes on loopback: batches reach everyone and cross each link once."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from node.mempool import Mempool
from node.p2p import P2P, P2PSettings, PeerAddr, TxGossip
from node.p2p.gossip import gossip_id
from protocol import codec
from protocol.crypto import PrivateKey
from protocol.tx import SignedTx
from tests.unit.test_p2p_link import CHAIN, FAST, KEYS, until

SENDERS = [PrivateKey(bytes([100 + i]) * 32) for i in range(10)]


def tx(sender: PrivateKey, nonce: int, amount: int = 1) -> SignedTx:
    return SignedTx.create(sender, {"chain": CHAIN, "kind": "transfer", "nonce": nonce, "to": b"\x09" * 32,
                                    "asset": "CNY.BANKA", "amount": amount})


@dataclass
class Node:
    p2p: P2P
    mempool: Mempool
    gossip: TxGossip
    task: asyncio.Task[None] | None = None


@pytest.fixture
async def net() -> AsyncIterator[list[Node]]:
    nodes: list[Node] = []
    yield nodes
    for n in nodes:
        if n.task is not None:
            n.task.cancel()
    await asyncio.gather(*(n.task for n in nodes if n.task is not None), return_exceptions=True)
    await asyncio.gather(*(n.p2p.stop() for n in nodes))
    for n in nodes:
        n.mempool.close()


async def build(net: list[Node], count: int, links: list[tuple[int, int]], settings: P2PSettings = FAST) -> list[Node]:
    """Start `count` nodes; (i, j) in `links` means node i dials node j."""
    allowed = [k.public_key for k in KEYS[:count]]
    for i in range(count):
        p2p = P2P(KEYS[i], CHAIN, validators=allowed, settings=settings)
        await p2p.start()
        mp = Mempool(CHAIN, lambda _sender: 0)
        net.append(Node(p2p, mp, TxGossip(p2p, mp)))
    for i, j in links:
        target = PeerAddr(net[j].p2p.public_key, "127.0.0.1", net[j].p2p.listen_port or 0)
        net[i].p2p.dial_targets.append(target)
        net[i].p2p._spawn(net[i].p2p._dial_loop(target), "dial")
    for n in net:
        n.task = asyncio.create_task(n.gossip.run())
    return net


async def test_a_tx_admitted_at_one_node_reaches_the_other_two_and_crosses_each_link_once(net: list[Node]) -> None:
    a, b, c = await build(net, 3, [(1, 0), (2, 0), (2, 1)])
    await until(lambda: all(len(n.p2p.connected()) == 2 for n in net))
    txs = [tx(SENDERS[i % 10], i // 10) for i in range(50)]
    res = await a.mempool.add_many([t.raw for t in txs])
    assert all(r.accepted for r in res)
    await until(lambda: len(b.mempool) == 50 and len(c.mempool) == 50)
    await asyncio.sleep(0.1)  # give any redundant relay a chance to show up
    assert a.p2p.stats.gossip_txs_out == 100  # 50 to B, 50 to C
    assert b.p2p.stats.gossip_txs_out == 0 and c.p2p.stats.gossip_txs_out == 0
    assert sum(n.p2p.stats.gossip_txs_in for n in net) == 100
    assert a.p2p.stats.gossip_batches_out <= 4  # batched, not one frame per tx
    assert b.mempool.is_verified(txs[0].hash, txs[0].sig)


async def test_txs_are_relayed_around_a_ring_without_coming_back(net: list[Node]) -> None:
    nodes = await build(net, 4, [(0, 1), (1, 2), (2, 3), (3, 0)])
    await until(lambda: all(len(n.p2p.connected()) == 2 for n in net))
    txs = [tx(SENDERS[0], i) for i in range(20)]
    await nodes[0].mempool.add_many([t.raw for t in txs])
    await until(lambda: all(len(n.mempool) == 20 for n in nodes))
    await asyncio.sleep(0.1)
    received = sum(n.p2p.stats.gossip_txs_in for n in nodes)
    assert 60 <= received <= 80  # 3 nodes need it; at most one crossing per link (4 links)
    assert nodes[0].p2p.stats.gossip_txs_in <= 20


async def test_a_newly_connected_peer_is_offered_the_pending_txs(net: list[Node]) -> None:
    a, b = await build(net, 2, [])
    txs = [tx(SENDERS[1], i) for i in range(5)]
    await a.mempool.add_many([t.raw for t in txs])
    target = PeerAddr(a.p2p.public_key, "127.0.0.1", a.p2p.listen_port or 0)
    b.p2p._spawn(b.p2p._dial_loop(target), "dial")
    await until(lambda: len(b.mempool) == 5)
    assert b.mempool.take_batch(10, 1 << 20) == txs


async def test_an_invalid_tx_from_a_peer_is_rejected_and_not_relayed(net: list[Node]) -> None:
    a, b, c = await build(net, 3, [(0, 1), (1, 2)])  # a line: a - b - c
    await until(lambda: len(b.p2p.connected()) == 2)
    good = tx(SENDERS[2], 0)
    bad = SignedTx.from_wire(codec.encode({"sig": b"\x00" * 64, "tx": tx(SENDERS[3], 0).body_bytes}))
    a.p2p.send(b.p2p.public_key, "txs", {"txs": [good.raw, bad.raw], "also": []})
    await until(lambda: len(c.mempool) == 1)
    assert b.mempool.get(good.hash) is not None and b.mempool.get(bad.hash) is None
    assert b.mempool.stats.rejected["bad_signature"] == 1
    assert c.mempool.get(good.hash) is not None


async def test_gossip_splits_at_the_batch_cap_and_keeps_the_known_sets_bounded(net: list[Node]) -> None:
    capped = dataclasses.replace(FAST, gossip_batch_txs=10, gossip_known_per_peer=16)
    a, b = await build(net, 2, [(1, 0)], settings=capped)
    await until(lambda: a.p2p.is_connected(b.p2p.public_key))
    txs = [tx(SENDERS[i % 5], i // 5) for i in range(50)]
    await a.mempool.add_many([t.raw for t in txs])
    await until(lambda: len(b.mempool) == 50)
    assert a.p2p.stats.gossip_batches_out == 5 and b.p2p.stats.gossip_batches_in == 5
    assert all(len(k) <= 16 for n in net for k in n.gossip._known.values())


async def test_a_tx_whose_batch_was_dropped_is_offered_again_to_the_current_primary(net: list[Node]) -> None:
    settings = dataclasses.replace(FAST, gossip_reoffer_interval=0.05, gossip_reoffer_age=0.1)
    a, b = await build(net, 2, [(0, 1)], settings)
    await until(lambda: all(len(n.p2p.connected()) == 1 for n in net))
    lost = tx(SENDERS[0], 0)
    # the batch to B is lost on the way (as when B's intake queue or mempool is full): A still thinks
    # B has it, so plain gossip would never send it again
    a.gossip._mark(a.gossip._known_set(b.p2p.public_key), [gossip_id(lost.raw)])
    a.gossip.primary = lambda: b.p2p.public_key
    assert (await a.mempool.add_many([lost.raw]))[0].accepted
    await until(lambda: b.mempool.get(lost.hash) is not None)
    assert a.p2p.stats.gossip_reoffered_txs >= 1
    assert b.p2p.stats.gossip_txs_in >= 1


async def test_a_primary_does_not_re_offer_its_own_pending_txs(net: list[Node]) -> None:
    settings = dataclasses.replace(FAST, gossip_reoffer_interval=0.05, gossip_reoffer_age=0.0)
    a, _b = await build(net, 2, [(0, 1)], settings)
    await until(lambda: all(len(n.p2p.connected()) == 1 for n in net))
    a.gossip.primary = lambda: a.p2p.public_key
    assert (await a.mempool.add_many([tx(SENDERS[1], 0).raw]))[0].accepted
    await asyncio.sleep(0.3)
    assert a.p2p.stats.gossip_reoffered_txs == 0
