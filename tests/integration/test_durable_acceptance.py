"""Accepted means durable, with real node processes: a node killed right after it answered `accepted` (or at
the exact point its journal made the batch durable) commits the batch on every node after its restart.

In both tests the accepting node is the only one that ever heard of the batch before it died, so only its
journal can bring the batch back. The `net` fixture stops every process it started, also on failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.errors import ClientError
from client.wallet import Wallet, read_password
from devtools import devnet
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


def _batch(net: Net, per_sender: int = 5) -> list[SignedTx]:
    """Transfers from six demo users, nonces 0..per_sender-1 each (their first txs)."""
    pw = read_password(net.dir / "wallets" / "PASSWORD")
    users = [Wallet.load(net.dir / "wallets" / f"user{i:02d}.json", pw) for i in range(1, 7)]
    return [SignedTx.create(w.key, {"chain": net.chain, "kind": "transfer", "nonce": n, "asset": "CNY.BANKA",
                                    "to": users[(i + 1) % len(users)].public_key, "amount": 1 + n})
            for i, w in enumerate(users) for n in range(per_sender)]


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
    deadline = time.monotonic() + 10
    while pid is not None and devnet._alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    hashes = [t.hash.hex() for t in txs]
    for name in (n for n in ALL if n != victim):  # the batch never left the victim
        assert set(_statuses(net, name, hashes).values()) == {"unknown"}
    net.start(victim)
    assert _wait_committed_everywhere(net, hashes) == {}
