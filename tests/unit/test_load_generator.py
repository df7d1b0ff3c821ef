"""The load generator's pure parts: rate pacing, per-sender nonce bookkeeping, result accounting, and the
benchmark's steady-state arithmetic. No sockets, no processes."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest

from client.errors import ClientError, UsageError
from client.wallet import Wallet
from devtools import load
from devtools.bench import attribute, next_rate, steady_rate
from devtools.load_book import (
    Pacer,
    PendingTx,
    SenderBook,
    Tally,
    batch_body,
    block_tx_hashes,
    percentile,
    sign_transfer,
)
from protocol import codec
from protocol.crypto import DOMAIN_TX, PrivateKey, verify
from protocol.tx import SignedTx


def _tx(sender: int, nonce: int) -> PendingTx:
    return PendingTx(sender, nonce, bytes([sender, nonce % 256]) * 16, b"")


def _book(senders: int, per_sender: int, max_inflight: int = 100) -> SenderBook:
    book = SenderBook(senders, max_inflight)
    for n in range(per_sender):
        for s in range(senders):
            book.add_signed(_tx(s, n))
    return book


def test_the_pacer_releases_rate_times_elapsed_and_never_more_than_the_total() -> None:
    p = Pacer(rate=1000, duration=2.0, start=100.0)
    assert p.total == 2000
    assert p.due(99.0) == 0  # before the start nothing is due
    assert p.due(100.5) == 500
    p.release(500)
    assert p.due(100.5) == 0  # released txs are not due twice
    assert p.due(100.75) == 250
    p.release(250)
    assert p.due(1000.0) == 1250  # long after the end: only the rest of the bounded total
    p.release(1250)
    assert p.finished and p.due(2000.0) == 0


def test_the_pacer_catches_up_after_a_late_tick_instead_of_losing_txs() -> None:
    p = Pacer(rate=200, duration=10.0, start=0.0)
    p.release(p.due(0.05))
    assert p.released == 10
    late = p.due(0.55)  # the loop slept 500 ms instead of 15
    assert late == 100  # 110 due by now, 10 already released
    assert p.released + late == 110


def test_a_non_positive_rate_or_duration_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        Pacer(rate=0, duration=1, start=0)
    with pytest.raises(UsageError):
        Pacer(rate=10, duration=-1, start=0)


def test_take_spreads_txs_round_robin_over_senders_in_nonce_order() -> None:
    book = _book(senders=3, per_sender=4)
    got, fresh = book.take(7)
    assert fresh == 7
    assert [(t.sender, t.nonce) for t in got] == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2)]
    assert [s.inflight for s in book.s] == [3, 2, 2]
    assert [(t.sender, t.nonce) for t in book.take(2)[0]] == [(1, 2), (2, 2)]


def test_a_sender_at_its_inflight_bound_is_skipped_until_a_commit_frees_a_slot() -> None:
    book = _book(senders=2, per_sender=5, max_inflight=2)
    assert book.take(10)[1] == 4  # 2 per sender, the rest waits
    assert book.take(10) == ([], 0)
    book.committed(1)
    assert [(t.sender, t.nonce) for t in book.take(10)[0]] == [(1, 2)]


def test_a_retried_tx_goes_back_before_higher_nonces_of_its_sender() -> None:
    book = _book(senders=1, per_sender=5)
    first, _ = book.take(3)  # nonces 0, 1, 2
    book.give_back(first[2])
    book.give_back(first[1])  # out of order on purpose
    assert book.s[0].inflight == 1 and book.retries() == 2
    again, fresh = book.take(1)  # retries go whenever allowed; they do not use up the fresh quota
    assert [t.nonce for t in again] == [1, 2, 3] and fresh == 1
    assert book.retries() == 0


def test_a_final_rejection_stalls_its_sender_but_not_the_others() -> None:
    book = _book(senders=2, per_sender=3)
    (a0, _b0), _ = book.take(2)
    book.rejected(a0, "bad_signature")
    assert book.stalled() == 1 and book.s[0].stalled == "bad_signature"
    assert [(t.sender, t.nonce) for t in book.take(5)[0]] == [(1, 1), (1, 2)]
    assert book.backlog() == 0  # the stalled sender's queue is not counted as work left


def test_percentile_is_nearest_rank_and_none_for_no_samples() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(list(reversed(values)), 100) == 100.0


def test_the_tally_summary_counts_rejections_by_code_and_reports_latency_in_ms() -> None:
    t = Tally(submitted=10, accepted=7, committed=6, first_sent=1.0, last_sent=3.0)
    t.rejected.update({"sender_limit": 2, "bad_signature": 1})
    t.latencies = [0.1, 0.2, 0.3, 0.4]
    s = t.summary(elapsed=5.0)
    assert s["rejected"] == 3 and s["rejected_by_code"] == {"bad_signature": 1, "sender_limit": 2}
    assert s["submit_rate"] == 5.0
    assert s["latency_p50_ms"] == 200.0 and s["latency_p95_ms"] == 400.0
    assert Tally().summary(0.0)["latency_p50_ms"] is None


def test_a_batch_body_is_the_canonical_msgpack_list_of_the_signed_txs() -> None:
    w = Wallet(PrivateKey(bytes(32)))
    for n in (1, 15, 16, 300):
        raws = [sign_transfer(w, "c", i, bytes(32), "CNY.BANKA", 1)[1] for i in range(n)]
        body = batch_body(raws)
        assert body == codec.encode([codec.decode(r) for r in raws])


def test_a_signed_transfer_verifies_and_its_hash_is_the_body_hash() -> None:
    w = Wallet(PrivateKey(bytes(range(32))))
    h, raw = sign_transfer(w, "smeledger-testnet", 7, b"\x01" * 32, "CNY.BANKA", 3)
    tx = SignedTx.from_wire(raw)
    assert tx.hash == h and tx.nonce == 7 and tx.kind == "transfer" and tx.body["amount"] == 3
    assert verify(w.public_key, DOMAIN_TX, tx.body_bytes, tx.sig)


def test_missing_or_empty_wallet_directories_are_usage_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="does not exist"):
        load.load_wallets(tmp_path / "nope")
    with pytest.raises(UsageError, match="no wallet files"):
        load.load_wallets(tmp_path)


def test_cli_defaults_fill_in_and_nodes_split_on_commas() -> None:
    a = load._defaults(argparse.Namespace(node="http://x:1", nodes="http://a:1, http://b:2", rate=5.0,
                                          duration=1.0, batch=None))
    assert a.nodes == ["http://a:1", "http://b:2"] and a.batch == 200 and a.max_inflight == 400
    b = load._defaults(argparse.Namespace(node="http://x:1", rate=5.0, duration=1.0))
    assert b.nodes == ["http://x:1"] and b.confirm is True


def test_a_single_node_load_inside_a_testnet_fails_over_to_the_other_nodes(tmp_path: Path) -> None:
    (tmp_path / "wallets").mkdir()
    (tmp_path / "nodes.json").write_text(json.dumps([{"name": n, "admin_url": f"http://127.0.0.1:870{i}",
                                                      "home": n} for i, n in enumerate(["a", "b", "c"], 1)]))
    a = load._defaults(argparse.Namespace(node="http://127.0.0.1:8701", testnet=str(tmp_path), rate=5.0,
                                          duration=1.0))
    assert a.wallets == str(tmp_path / "wallets")
    run = load.LoadRun(a)
    assert run.nodes == ["http://127.0.0.1:8701", "http://127.0.0.1:8702", "http://127.0.0.1:8703"]
    assert {run.pick_node(k) for k in range(6)} == {0}  # the asked-for node only, while it answers
    run.down_until[0] = time.monotonic() + 60
    assert {run.pick_node(k) for k in range(6)} == {1, 2}  # it is down: the others take over
    found = load._defaults(argparse.Namespace(testnet=str(tmp_path), rate=5.0, duration=1.0))  # no --node
    assert found.nodes == ["http://127.0.0.1:8701"] and found.fallback == ["http://127.0.0.1:8702",
                                                                           "http://127.0.0.1:8703"]


def test_steady_rate_drops_the_warm_up_and_divides_txs_by_header_time() -> None:
    blocks = [{"height": 1, "time": 0, "tx_count": 10},  # warm-up, dropped
              {"height": 2, "time": 2000, "tx_count": 500},  # first kept block: its txs predate the window
              {"height": 3, "time": 3000, "tx_count": 1000},
              {"height": 4, "time": 4000, "tx_count": 1000},
              {"height": 5, "time": 4500, "tx_count": 0}]  # empty blocks are ignored
    r = steady_rate(blocks, warm_s=2.0)
    assert r["committed_tps"] == 1000.0 and r["blocks"] == 4 and r["window_s"] == 2.0
    assert steady_rate([{"height": 1, "time": 0, "tx_count": 5}])["committed_tps"] is None


def test_attribution_averages_execution_and_round_time_over_validators() -> None:
    names = ("smeledger_block_execute_seconds_sum", "smeledger_block_execute_seconds_count",
             "smeledger_consensus_round_seconds_sum", "smeledger_consensus_round_seconds_count",
             "smeledger_committed_txs_total", "smeledger_consensus_view_changes_total")
    zero = dict.fromkeys(names, 0.0)
    after = dict(zip(names, (2.0, 4.0, 4.0, 4.0, 8000.0, 0.0), strict=True))
    r = attribute([zero, zero], [after, after])
    assert r["execute_ms_per_block"] == 500.0 and r["execute_us_per_tx"] == 250.0
    assert r["round_ms_avg"] == 1000.0 and r["execute_share_of_round"] == 0.5 and r["view_changes"] == 0


def test_the_bench_doubles_until_saturation_then_bisects_to_a_ten_percent_step() -> None:
    assert next_rate(500, 0) == 1000 and next_rate(1000, 0) == 2000
    assert next_rate(1000, 2000) == 1500
    assert next_rate(1500, 2000) == 1750
    assert next_rate(1750, 2000) == 1850
    assert next_rate(1850, 2000) == 0  # within 10% of the saturated rate: done
    assert next_rate(0, 500) == 250  # even the first level saturated: search below it


def test_block_tx_hashes_reads_time_and_tx_hashes_from_the_raw_block_answer() -> None:
    from protocol.block import GENESIS_PARENT, Block

    w = Wallet(PrivateKey(bytes(range(32))))
    signed = [sign_transfer(w, "c", i, bytes(32), "CNY.BANKA", 1) for i in range(3)]
    block = Block.build(chain="c", height=1, parent=GENESIS_PARENT, proposer=bytes(32), view=0, time=1234,
                        state_root=bytes(32), results_root=bytes(32), txs=[raw for _h, raw in signed])
    body = codec.encode({"block": block.encode(), "certificate": b""})
    assert block_tx_hashes(body) == (1234, [h for h, _raw in signed])
    with pytest.raises(ValueError):
        block_tx_hashes(b"\xc1")
    with pytest.raises(ValueError):
        block_tx_hashes(codec.encode({"certificate": b""}))


class _Answer:
    def __init__(self, status: int, doc: object) -> None:
        self.status, self.doc = status, doc

    async def __aenter__(self) -> _Answer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def json(self, content_type: object = None) -> object:
        return self.doc


class _Nodes:
    """A fake aiohttp session: each node URL answers GET /txs/{hash} from a table (or is down)."""

    def __init__(self, table: dict[str, tuple[int, object] | None]) -> None:
        self.table = table

    def get(self, url: str) -> _Answer:
        node = url.split("/txs/")[0]
        answer = self.table[node]
        if answer is None:
            raise OSError("connection refused")
        return _Answer(*answer)


async def test_a_tx_is_lost_only_when_every_node_that_answers_does_not_know_it() -> None:
    run = load.LoadRun(load._defaults(argparse.Namespace(nodes="http://a,http://b,http://c", rate=5.0,
                                                         duration=1.0)))
    h = b"\x01" * 32
    unknown = (404, {"hash": h.hex(), "status": "unknown"})
    cases = [({"http://a": unknown, "http://b": (200, {"status": "dropped", "reason": "sender_frozen"}),
               "http://c": unknown}, "dropped"),
             ({"http://a": unknown, "http://b": (200, {"status": "pending"}), "http://c": unknown}, "pending"),
             ({"http://a": None, "http://b": (200, {"status": "committed"}), "http://c": None}, "committed"),
             ({"http://a": unknown, "http://b": None, "http://c": unknown}, "lost"),
             ({"http://a": None, "http://b": None, "http://c": None}, "unconfirmed")]
    for table, want in cases:
        assert await run.status_anywhere(_Nodes(table), h, 0) == want, table


def test_the_record_lists_every_accepted_hash_with_its_final_status(tmp_path: Path) -> None:
    out = tmp_path / "rec.txt"
    load.write_record(str(out), {b"\x02" * 32: "lost", b"\x01" * 32: "committed"})
    assert out.read_text().splitlines() == ["01" * 32 + " committed", "02" * 32 + " lost"]


def test_progress_is_json_lines_at_most_every_interval_when_not_on_a_terminal() -> None:
    import io

    from devtools.progress import Reporter

    stream = io.StringIO()
    r = Reporter("load", 100, "json", every=3600.0, stream=stream)
    r._last = -1e9  # the first update is due
    r.update(10, committed=5)
    r.update(20, committed=9)  # within the interval: held back
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert len(lines) == 1 and lines[0]["event"] == "progress" and lines[0]["done"] == 10
    assert lines[0]["committed"] == 5 and lines[0]["total"] == 100
    quiet = io.StringIO()
    Reporter("load", 100, "none", stream=quiet).update(50)
    assert quiet.getvalue() == ""


def test_a_run_with_lost_txs_exits_non_zero_naming_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    summary = {**Tally(submitted=3, accepted=3, committed=2, lost=1).summary(1.0), "senders": 2,
               "stalled_senders": 0, "blocks": 1}

    async def fake_main(self: load.LoadRun) -> dict[str, object]:
        self.final = {b"\x01" * 32: "committed", b"\x02" * 32: "committed", b"\x03" * 32: "lost"}
        return dict(summary)
    monkeypatch.setattr(load.LoadRun, "main", fake_main)
    record = tmp_path / "r.txt"
    with pytest.raises(ClientError) as e:
        load.run(argparse.Namespace(nodes="http://a", rate=5.0, duration=1.0, record=str(record), json=True))
    assert e.value.code == "lost" and "1 accepted txs were lost" in e.value.message
    assert record.read_text().count(" lost") == 1
