"""History backfill between real P2P nodes: after a state sync, every older block, receipt, tx position and
event arrives, verified back along the hash chain; liars are refused and penalised."""

from __future__ import annotations

import dataclasses
import time

import pytest

from protocol import codec
from protocol.block import Block
from protocol.ledger import keys
from protocol.ledger.store import enc
from protocol.messages import T_RES_REQ
from protocol.syncmsg import ResultsRequest, ResultsResponse
from storage import schema
from storage.blocks import tx_hash_of
from tests.unit import test_sync_blocks
from tests.unit.test_sync_blocks import (
    NET,
    Net,
    SyncNode,
    copy_chain,
    failures,
    grow,
    served,
    sign_checkpoint,
    sign_commit,
    until,
)

net = test_sync_blocks.net  # the loopback sync network fixture, shared



def txs(h: int) -> tuple[bytes, ...]:
    return tuple(b"tx-%d-%d" % (h, i) for i in range(h % 3 + 1))


def index_of(node: SyncNode) -> list[tuple[bytes, bytes]]:
    """Every derived index entry (events, account/kind indexes, tx positions) the node stores."""
    db = node.store.db
    return [(k, v) for p in keys.INDEX_PREFIXES for k, v in db.iterate(prefix=schema.state_key(p))]


def backfilled(node: SyncNode, head: int) -> bool:
    """Joined by a snapshot, at `head`, and history complete (a fresh node's history_from is 0 too)."""
    return bool(node.installed) and node.blocks.height() == head and node.blocks.history_from() == 0


def assert_same_history(node: SyncNode, ref: SyncNode, head: int, unknown_root: int | None = None) -> None:
    """`node` serves exactly what `ref` does for every height 1..head: block, certificate, receipts, block
    events, the position of every tx, the state and results roots after every height, and every index
    entry. `unknown_root`: a height whose state root no header this node holds certifies yet (the one below
    a snapshot at the head: block head+1 will carry it)."""
    for h in range(1, head + 1):
        assert node.blocks.get_block_bytes(h) == ref.blocks.get_block_bytes(h), h
        assert node.blocks.get_certificate(h) is not None
        assert node.blocks.receipts_at(h) == ref.blocks.receipts_at(h), h
        assert node.blocks.block_events_at(h) == ref.blocks.block_events_at(h), h
        assert node.blocks.results_root_at(h) == ref.blocks.results_root_at(h), h
        if h == unknown_root:
            assert node.blocks.state_root_at(h) is None
        else:
            assert node.blocks.state_root_at(h) == ref.blocks.state_root_at(h), h
        block = node.blocks.get_block(h)
        assert block is not None
        for i, raw in enumerate(block.txs):
            assert node.blocks.get_tx(tx_hash_of(raw)) == (h, i, raw)
    assert node.blocks.state_root_at(0) == ref.blocks.state_root_at(0)
    assert index_of(node) == index_of(ref)


@pytest.mark.parametrize("head", [40, 35])  # 35: the snapshot is the head (an idle chain): no block above it
async def test_a_state_synced_node_backfills_every_block_receipt_and_event_down_to_genesis(
        net: Net, head: int) -> None:
    a, b = await net.add(0), await net.add(1)
    grow(a, head, stable_upto=35, txs=txs)
    copy_chain(a, b, head)
    c = await net.add(2, state_sync=True)
    await net.link(c, a)
    await net.link(c, b)
    seen: list[tuple[bool, int]] = []
    c.sync.request(head, [a.key, b.key])
    await until(lambda: c.blocks.height() == head and (seen.append((c.status.backfilling, c.status.history_from))
                                                         or True))
    assert [p.height for p in c.installed] == [35], "it joined by state sync"
    await until(lambda: (seen.append((c.status.backfilling, c.status.history_from)) or True)
                and backfilled(c, head))
    await until(lambda: not c.status.backfilling)
    assert c.status.history_from == 0
    assert any(running and 0 < hf <= 36 for running, hf in seen), "progress was visible while it ran"
    assert c.registry.get_sample_value("smeledger_history_blocks_backfilled_total") == 35
    assert_same_history(c, a, head, unknown_root=34 if head == 35 else None)
    assert served(a, "res_resp") + served(b, "res_resp") >= 1


async def test_a_backfilled_node_serves_its_history_to_the_next_newcomer(net: Net) -> None:
    a = await net.add(0)
    grow(a, 40, stable_upto=35, txs=txs)
    c = await net.add(2, state_sync=True)
    await net.link(c, a)
    c.sync.request(40, [a.key])
    await until(lambda: backfilled(c, 40))
    root, last = c.blocks.state_root(), c.blocks.last_block_hash() or b""
    c.sync.note_stable_checkpoint(40, last, root, sign_checkpoint(40, last, root).to_value())
    d = await net.add(3, state_sync=True)
    await net.link(d, c)  # only the backfilled node: everything d gets below its snapshot comes from c
    d.sync.request(40, [c.key])
    await until(lambda: backfilled(d, 40))
    assert [p.height for p in d.installed] == [40] and served(c, "res_resp") >= 1
    assert_same_history(d, a, 40, unknown_root=39)


async def two_peers(net: Net, liar_first: bool) -> tuple[SyncNode, SyncNode]:
    """(honest, liar). Backfill gives the range nearest its anchor to the idle peers in key order, blocks
    first, results second: the liar's key decides which piece it is asked for first."""
    x, y = sorted([await net.add(0), await net.add(1)], key=lambda n: n.key)
    return (y, x) if liar_first else (x, y)


async def join_from(net: Net, liar: SyncNode, honest: SyncNode) -> SyncNode:
    """A fresh node that state-syncs to 40 from the two and backfills; returns once history is complete."""
    c = await net.add(2, state_sync=True)
    await net.link(c, liar)
    await net.link(c, honest)
    c.sync.request(40, [liar.key, honest.key])
    await until(lambda: backfilled(c, 40))
    return c


async def test_a_peer_serving_a_block_that_does_not_chain_back_to_the_certified_header_is_refused_and_penalised(
        net: Net) -> None:
    a, liar = await two_peers(net, liar_first=True)
    grow(a, 40, stable_upto=35, txs=txs)

    def fork(h: int, raw: bytes, cert: bytes) -> tuple[bytes, bytes]:
        if h > 35:
            return raw, cert
        good = Block.decode(raw)  # certified by a quorum, but not the block the chain holds at h
        bad = Block(dataclasses.replace(good.header, time=good.header.time + 1), good.txs)
        return bad.encode(), codec.encode(sign_commit(bad).to_value())

    copy_chain(a, liar, 40, swap=fork)
    c = await join_from(net, liar, a)
    assert failures(c, "not_chained") >= 1
    assert c.sync.history.book.get(liar.key).until > time.monotonic() + 10, "the liar is left alone for a while"
    assert_same_history(c, a, 40)


async def test_results_that_do_not_match_the_certified_root_are_refused_and_fetched_elsewhere(net: Net) -> None:
    a, liar = await two_peers(net, liar_first=False)
    grow(a, 40, stable_upto=35, txs=txs)
    copy_chain(a, liar, 40)
    with liar.db.batch(sync=True) as batch:  # the liar rewrites a receipt of every block below the snapshot:
        for h in range(1, 36):                # the same tx, so its own store still serves it, but "failed"
            block = liar.blocks.get_block(h)
            assert block is not None
            forged = enc({"tx_hash": tx_hash_of(block.txs[0]), "status": "failed", "code": "frozen",
                          "message": "", "events": []})
            batch.put(schema.receipt_key(h, 0), forged)
    c = await join_from(net, liar, a)
    assert failures(c, "bad_results") >= 1
    assert_same_history(c, a, 40)


async def test_results_larger_than_one_frame_arrive_in_pages(net: Net) -> None:
    small = dataclasses.replace(NET, max_frame=(64 + 80) * 1024)  # a frame budget of 80 KiB...
    a = await net.add(0, p2p=small)
    big = [b"tx-%03d-" % i + b"x" * 1500 for i in range(40)]  # ...a 60 KiB block, ~125 KiB of receipts
    grow(a, 12, stable_upto=10, txs=lambda h: tuple(big) if h == 4 else txs(h))
    asked: list[tuple[int, int]] = []
    serve = a.sync.server._results_response

    def recording(req: ResultsRequest) -> ResultsResponse:
        asked.append((req.start, req.receipt))
        return serve(req)

    a.sync.server._results_response = recording  # type: ignore[method-assign]
    c = await net.add(2, state_sync=True, p2p=small)
    await net.link(c, a)
    c.sync.request(12, [a.key])
    await until(lambda: backfilled(c, 12))
    assert_same_history(c, a, 12)
    assert any(h == 4 and receipt > 0 for h, receipt in asked), "block 4's receipts were asked for in parts"


async def test_a_results_request_for_heights_the_server_lacks_is_answered_none(net: Net) -> None:
    a = await net.add(0)
    grow(a, 5, txs=txs)
    c = await net.add(2)
    await net.link(c, a)
    c.p2p.send(a.key, T_RES_REQ, {"rid": 9, "from": 6, "count": 3, "receipt": 0})
    await until(lambda: served(a, "res_resp", "none") == 1)
    assert failures(c, "unsolicited") == 1, "an answer to a request nobody made is dropped"
