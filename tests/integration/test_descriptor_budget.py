"""A node started with a small open-file limit splits it (node/fdbudget.py) so the database always has
room: a thousand client connections are held to the API's share, the excess is pushed out or refused
cleanly, and the node keeps committing with no storage error in its log."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.client import Client
from client.errors import ClientError
from client.txbuild import build_body, sign
from client.wallet import Wallet, read_password
from devtools import testnet
from node import fdbudget
from tests.conftest import free_port_block
from tests.integration.harness import ROOT

pytestmark = pytest.mark.integration
NOFILE = 1024
# one validator, no peers to dial, 64 pending handshakes: 1024 - 512 - 66 - 256 = 190 API connections
BUDGET = fdbudget.plan(NOFILE, p2p=fdbudget.p2p_descriptors(1, 0, 64), api_wanted=1024)


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def test_a_node_with_1024_descriptors_holds_a_connection_flood_to_its_api_share_and_keeps_committing(
        tmp_path: Path) -> None:
    d = tmp_path / "tn"
    testnet.create(d, validators=1, observers=0, accounts=2, base_port=free_port_block(1), kdf="min")
    home = d / "banka"
    url = testnet.load_nodes(d)[0]["admin_url"]
    log = (home / "node.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "run", "--home", str(home)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=_limit_descriptors)
    socks: list[socket.socket] = []
    try:
        client = Client(url, timeout=2)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(ClientError):
                client.health()
                break
            assert time.monotonic() < deadline and proc.poll() is None, (home / "node.log").read_text()[-3000:]
            time.sleep(0.1)
        port = int(url.rsplit(":", 1)[1])
        baseline = len(os.listdir(f"/proc/{proc.pid}/fd"))
        for i in range(1000):  # from four addresses: the node's total cap binds, not the per-address one
            s = socket.create_connection(("127.0.0.1", port), source_address=(f"127.0.0.{1 + i % 4}", 0))
            s.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
            socks.append(s)
        time.sleep(1.0)
        held = len(os.listdir(f"/proc/{proc.pid}/fd")) - baseline  # the API's connections, nothing else grew
        assert 0 < held <= BUDGET.api_connections
        pw = read_password(d / "wallets" / "PASSWORD")
        a, b = (Wallet.load(d / "wallets" / f"{n}.json", pw) for n in ("user01", "user02"))
        for nonce in range(3):
            tx = sign(a, build_body("transfer", {"to": b.account, "asset": "CNY.BANKA", "amount": "1"},
                                    chain=testnet.CHAIN_ID, sender=a.public_key, nonce=nonce))
            assert client.submit(tx).results[0].accepted
            assert client.follow(tx.hash, timeout=15).status == "committed"
        assert client.health().ok is True
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
    events = [json.loads(line) for line in (home / "node.log").read_text().splitlines()]
    budget = next(e for e in events if e["event"] == "descriptor_budget")
    assert {k: budget[k] for k in BUDGET.as_log()} == BUDGET.as_log()
    assert not [e for e in events if e["level"] == "error"]
    assert proc.returncode == 0
