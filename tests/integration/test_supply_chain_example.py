"""The issue's supply-chain storyline (examples/supply_chain.py) runs green on a fresh real testnet and
every node reports the same state root afterwards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import ROOT, Net

pytestmark = pytest.mark.integration


def test_the_supply_chain_example_runs_green_and_all_nodes_agree_on_the_state_root(tmp_path: Path) -> None:
    net = Net(tmp_path / "tn")
    try:
        net.start()
        first = next(iter(net.nodes.values()))["admin_url"]
        p = subprocess.run([sys.executable, "examples/supply_chain.py", "--node", first, "--wallets",
                            str(net.dir / "wallets")], cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        assert "[ERR]" not in p.stdout
        assert "all nodes agree" in p.stdout
        height, _root = net.common_root(list(net.nodes))
        assert height > 10
    finally:
        net.close()
