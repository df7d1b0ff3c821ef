"""Accepted means durable, with real node processes: a node killed right after it answered `accepted` (or at
the exact point its journal made the batch durable) commits the batch on every node after its restart; a
node killed just before that point never answered, and commits each tx of that batch at most once.

In these tests the accepting node is the only one that ever heard of the batch before it died, so only its
journal can bring the batch back. The `net` fixture stops every process it started, also on failure.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.errors import ClientError
from client.wallet import Wallet, read_password
from node.journal import FRAME_HEADER, HASH
from protocol.tx import SignedTx
from tests.integration.harness import Net

pytestmark = pytest.mark.integration
ALL = ["banka", "bankb", "smea", "smeb", "regulator"]


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path / "tn", accounts=6)
    try:
        yield n
    finally:
        n.close()


def _users(net: Net) -> list[Wallet]:
    pw = read_password(net.dir / "wallets" / "PASSWORD")
    return [Wallet.load(net.dir / "wallets" / f"user{i:02d}.json", pw) for i in range(1, 7)]


def _batch(net: Net, nonces: range = range(5)) -> list[SignedTx]:
    """Transfers from six demo users, each to the next, `nonces` each (0..4: their first txs); amount 1 + nonce."""
    users = _users(net)
    return [SignedTx.create(w.key, {"chain": net.chain, "kind": "transfer", "nonce": n, "asset": "CNY.BANKA",
                                    "to": users[(i + 1) % len(users)].public_key, "amount": 1 + n})
            for i, w in enumerate(users) for n in nonces]


def _statuses(net: Net, name: str, hashes: list[str]) -> dict[str, str]:
    c = net.client(name, 5.0)
    return {h: c.tx(h).status for h in hashes}


def _wait_committed_everywhere(net: Net, hashes: list[str], timeout: float = 45.0) -> dict[str, dict[str, int]]:
    """Poll every node until each of `hashes` is committed there; returns what is not, per node and status."""
    deadline = time.monotonic() + timeout
    while True:
        missing: dict[str, dict[str, int]] = {}
        for name in ALL:
            st = _statuses(net, name, hashes)
            counts: dict[str, int] = {}
            for s in st.values():
                if s != "committed":
                    counts[s] = counts.get(s, 0) + 1
            if counts:
                missing[name] = counts
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.5)


def test_a_batch_accepted_by_a_node_killed_right_after_its_200_answer_commits_on_every_node_after_its_restart(
        net: Net) -> None:
    net.start("banka")  # alone: no peer can hear of the batch, no block can commit without a quorum
    txs = _batch(net)
    doc = net.client("banka", 10.0).submit(txs)
    assert doc.accepted == len(txs) and doc.error is None
    net.kill9("banka")
    net.start()  # every node, banka restarting from its journal
    hashes = [t.hash.hex() for t in txs]
    assert _wait_committed_everywhere(net, hashes) == {}


def test_a_node_that_dies_at_the_journal_sync_point_commits_the_batch_on_every_node_after_its_restart(
        net: Net) -> None:
    net.start()
    victim = next(n for n in net.validators if n != net.primary())  # a backup: it proposes nothing
    net.stop(victim)
    net.start(victim, env={"SMELEDGER_FAILPOINTS": "journal.after_sync=exit"})
    pid = net.pid(victim)
    txs = _batch(net)
    with pytest.raises(ClientError) as err:  # it dies after the fsync, before its answer
        net.client(victim, 10.0).submit(txs)
    assert err.value.code == "unreachable"
    assert pid is not None and net.wait_exit(pid, 10.0) == 137
    hashes = [t.hash.hex() for t in txs]
    for name in (n for n in ALL if n != victim):  # the batch never left the victim
        assert set(_statuses(net, name, hashes).values()) == {"unknown"}
    net.start(victim)
    assert _wait_committed_everywhere(net, hashes) == {}


def _journal_path(net: Net, name: str) -> Path:
    return net.home(name) / "data" / "journal" / "accepted.log"


def _events(net: Net, name: str, event: str) -> list[dict[str, Any]]:
    """The node's log records of `event`, oldest first (node.log spans every run of the node)."""
    lines = (net.home(name) / "node.log").read_text().splitlines()
    return [doc for doc in (json.loads(x) for x in lines if f'"{event}"' in x) if doc.get("event") == event]


def _balances(net: Net, name: str, accounts: list[str]) -> dict[str, int]:
    c = net.client(name, 5.0)
    return {a: c.account(a).balances.get("CNY.BANKA", 0) for a in accounts}


def _applied_once(before: dict[str, int], txs: list[SignedTx]) -> dict[str, int]:
    """The balances `before` after each of `txs` moved its amount exactly once."""
    after = dict(before)
    for tx in txs:
        after[tx.sender.hex()] -= tx.body["amount"]
        after[tx.body["to"].hex()] += tx.body["amount"]
    return after


@pytest.mark.parametrize("tail", ["as_the_kill_left_it", "torn_in_its_last_record"])
def test_a_node_that_dies_before_its_journal_sync_never_answers_accepted_and_commits_that_batch_at_most_once(
        net: Net, tail: str) -> None:
    """The client of the dying POST heard no answer, so for it each tx of that batch may commit or not, and it
    retries; what it must never see is a tx applied twice or in part. The bytes written before the sync
    survive a process death (the page cache outlives the process), so the node restores that batch; a power
    loss may tear them instead (`torn_in_its_last_record`): the torn record is cut and logged, and only the
    whole records before it are restored. Earlier batches, answered `accepted`, are never lost."""
    accounts = [w.account for w in _users(net)]
    net.start("banka", env={"SMELEDGER_FAILPOINTS": "journal.before_sync=exit@2"})  # alone: nothing leaves it
    before = _balances(net, "banka", accounts)
    first, second = _batch(net, range(5)), _batch(net, range(5, 10))
    doc = net.client("banka", 10.0).submit(first)  # the first synced batch: answered
    assert doc.accepted == len(first) and doc.error is None
    journal = _journal_path(net, "banka")
    synced = journal.stat().st_size
    pid = net.pid("banka")
    with pytest.raises(ClientError) as err:  # the second: it dies before the sync, so before any answer
        net.client("banka", 10.0).submit(second)
    assert err.value.code == "unreachable"
    assert pid is not None and net.wait_exit(pid, 10.0) == 137
    written = journal.stat().st_size
    assert written > synced  # the batch's records were written, not synced
    if tail == "torn_in_its_last_record":
        os.truncate(journal, written - 5)
    restored = second if tail == "as_the_kill_left_it" else second[:-1]

    net.start()  # every node; banka from its journal
    first_hashes, second_hashes = [t.hash.hex() for t in first], [t.hash.hex() for t in second]
    assert _wait_committed_everywhere(net, first_hashes + [t.hash.hex() for t in restored]) == {}
    cuts = _events(net, "banka", "journal_tail_cut")
    if tail == "as_the_kill_left_it":
        assert cuts == []
    else:
        last = FRAME_HEADER.size + 1 + HASH + len(second[-1].raw)  # the last record's frame: 5 bytes short
        assert [(c["at"], c["cut_bytes"], c["reason"]) for c in cuts] == [(written - last, last - 5, "truncated")]
    assert _events(net, "banka", "journal_restored")[-1]["readmitted"] == len(first) + len(restored)
    for name in ALL:  # before the client retries: what committed moved its money once
        st = _statuses(net, name, second_hashes)
        assert {h for h, s in st.items() if s == "committed"} == {t.hash.hex() for t in restored}
        assert set(st.values()) <= {"committed", "unknown"}
        assert _balances(net, name, accounts) == _applied_once(before, first + restored)

    retry = net.client("banka", 10.0).submit(second)  # the client retries what it was never told
    assert [r.accepted or r.code in ("already_committed", "nonce_too_low") for r in retry.results] == \
        [True] * len(second)
    assert _wait_committed_everywhere(net, second_hashes) == {}
    height, _root = net.common_root(ALL, timeout=30)  # one height, one state root
    net.assert_same_chain(ALL, height)
    for name in ALL:
        assert _balances(net, name, accounts) == _applied_once(before, first + second)
        assert {net.client(name).account(a).nonce for a in accounts} == {10}
