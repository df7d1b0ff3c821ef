"""The README's CLI tour works as written: `smeledger testnet up` in a fresh directory, then every command
of the tour without `--node` (the CLI finds `.testnet` by itself), then `smeledger testnet down`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port_block

ROOT = Path(__file__).resolve().parents[2]
TOUR_BASE = 15700  # the README's ports; the test moves them to a free block


def tour_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## CLI tour\n.*?```sh\n(.*?)```", text, re.S)
    assert block, "README.md has no CLI tour"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    return [ln for ln in (x.strip() for x in lines) if ln and not ln.startswith(". .venv")]


def test_every_command_of_the_readme_cli_tour_works_without_node_on_a_fresh_testnet(tmp_path: Path) -> None:
    base = free_port_block(5)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "SMELEDGER_PASSWORD": "tour-password", "PYTHONPATH": str(ROOT)}
    env.pop("SMELEDGER_NODE", None)
    smeledger = [sys.executable, "-m", "cli.main"]
    up = subprocess.run([*smeledger, "testnet", "up", "--base-port", str(base), "--accounts", "2"], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "healthy" in up.stdout and (tmp_path / ".testnet" / "nodes.json").exists()
        script = "\n".join(["set -euo pipefail", *(c.replace(str(TOUR_BASE + 1002), str(base + 1002))
                                                   for c in tour_commands())])
        assert "--node" not in script
        p = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=240)
        assert p.returncode == 0, f"the tour stopped:\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
        assert "Traceback" not in p.stdout + p.stderr
        assert "thanks" in p.stdout.splitlines()  # open-memo printed the recipient's memo
        record = (tmp_path / "load.txt").read_text().split("\n")
        assert record[0] and all(ln.split()[1] == "committed" for ln in record if ln)
        assert (tmp_path / "me.json").exists()
        rows = json.loads(p.stdout.strip().splitlines()[-1])  # testnet status --json
        assert len(rows) == 5 and all("error" not in r for r in rows)
    finally:
        down = subprocess.run([*smeledger, "testnet", "down"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
    assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr
