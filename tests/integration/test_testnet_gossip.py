"""Real node processes started through the CLI: a tx submitted to one node reaches every node's mempool.

Creates a 4-validator + 1-observer testnet with `smeledger testnet` on a free port block, starts every
node with `python -m devtools.devnet up` (which runs `smeledger run --home ...` per node), and always stops
them again, checking that no node process is left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from client.client import Client
from client.light import Trust
from client.txbuild import build_body, sign
from client.wallet import Wallet, read_password
from devtools import devnet, testnet
from protocol.block import STATE_ROOT_LAG
from tests.conftest import free_port_block

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_a_tx_posted_to_one_node_is_pending_on_every_node_within_a_second(tmp_path: Path) -> None:
    d = tmp_path / "tn"
    base = free_port_block(5)
    p = _run("-m", "cli.main", "testnet", "create", "--dir", str(d), "--base-port", str(base), "--accounts", "2",
             "--kdf", "min")
    assert p.returncode == 0, p.stderr
    nodes = testnet.load_nodes(d)
    try:
        p = _run("-m", "devtools.devnet", "up", "--dir", str(d), "--base-port", str(base), "--timeout", "40")
        assert p.returncode == 0, p.stdout + p.stderr
        clients = [Client(n["admin_url"], timeout=5) for n in nodes]
        deadline = time.monotonic() + 20
        while any(c.status().peers < len(nodes) - 1 for c in clients):
            assert time.monotonic() < deadline, [c.status().peers for c in clients]
            time.sleep(0.1)
        assert {c.status().chain_id for c in clients} == {"smeledger-testnet"}

        pw = read_password(d / "wallets" / "PASSWORD")
        a, b = (Wallet.load(d / "wallets" / f"{n}.json", pw) for n in ("user01", "user02"))
        tx = sign(a, build_body("transfer", {"to": b.account, "asset": "CNY.BANKA", "amount": "100"},
                                chain="smeledger-testnet", sender=a.public_key, nonce=0))
        t0 = time.monotonic()
        assert clients[0].submit(tx).results[0].accepted
        waiting = set(range(len(clients)))
        while waiting and time.monotonic() - t0 < 1.0:
            waiting = {i for i in waiting if clients[i].tx(tx.hash).status not in ("pending", "committed")}
            time.sleep(0.01)
        assert not waiting, f"not pending within 1 s on {[nodes[i]['name'] for i in waiting]}"

        # with the consensus driver wired in, the tx commits everywhere and account proofs verify
        # against the header of the block two later, which commits to the state root
        if clients[0].status().consensus:
            for c in clients:
                assert c.follow(tx.hash, timeout=15).status == "committed"
            with ThreadPoolExecutor(1) as pool:  # it reads the account now and waits for block height+2
                trust = Trust.load(d / "genesis.json")
                verified = pool.submit(clients[3].verified_account, b.account, trust, timeout=30)
                time.sleep(0.5)
                for nonce in (1, 2):  # two more blocks (an idle chain makes none)
                    more = sign(a, build_body("transfer", {"to": b.account, "asset": "CNY.BANKA", "amount": "1"},
                                              chain="smeledger-testnet", sender=a.public_key, nonce=nonce))
                    assert clients[1].submit(more).results[0].accepted
                    assert clients[1].follow(more.hash, timeout=15).status == "committed"
                acc = verified.result(timeout=40)
            # read after the first transfer committed (height >= 1): proven by block height+2's certified header
            assert acc.verified_height is not None and acc.verified_height >= 1 + STATE_ROOT_LAG
            assert acc.balances["CNY.BANKA"] >= 100
    finally:
        p = _run("-m", "devtools.devnet", "down", "--dir", str(d))
        pids = [devnet._pid_of(d / n["name"]) for n in nodes]
        assert p.returncode == 0, p.stderr
    assert pids == [None] * len(nodes)
    for line in p.stdout.splitlines():
        assert "stopped" in line, p.stdout
    out = subprocess.run(["pgrep", "-f", f"--home {d}"], capture_output=True, text=True)
    assert out.stdout.strip() == "", f"node processes left behind: {out.stdout}"
    assert os.path.exists(d / "banka" / "node.log")
