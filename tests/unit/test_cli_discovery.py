"""The CLI finds its node (--node, else SMELEDGER_NODE, else the testnet directory, else the default),
takes global options before or after the command, answers errors as JSON with `--json`, and `init`
checks before it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from client import discovery
from client.errors import ClientError

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k != "SMELEDGER_NODE"}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env={**e, "PYTHONPATH": str(ROOT), **env})


def _testnet(d: Path, urls: list[str]) -> Path:
    d.mkdir(parents=True)
    (d / "nodes.json").write_text(json.dumps([{"name": f"n{i}", "admin_url": u, "home": f"n{i}"}
                                              for i, u in enumerate(urls)]))
    return d


def test_the_node_comes_from_node_then_the_environment_then_the_testnet_then_the_default(tmp_path: Path) -> None:
    net = _testnet(tmp_path / ".testnet", ["http://127.0.0.1:18701", "http://127.0.0.1:18702"])
    env = {"SMELEDGER_NODE": "http://env:1"}
    assert discovery.resolve("http://flag:1", env=env, cwd=tmp_path).urls == ("http://flag:1",)
    assert discovery.resolve(None, env=env, cwd=tmp_path).source == "SMELEDGER_NODE"
    t = discovery.resolve(None, env={}, cwd=tmp_path)
    assert t.urls == ("http://127.0.0.1:18701", "http://127.0.0.1:18702") and t.testnet == net
    assert discovery.resolve(None, str(net), env={}, cwd=ROOT / "docs").testnet == net
    assert discovery.resolve(None, env={}, cwd=tmp_path / "elsewhere").urls == (discovery.DEFAULT_NODE,)


def test_a_broken_or_missing_nodes_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="no testnet at"):
        discovery.resolve(None, str(tmp_path / "none"), env={})
    (tmp_path / "nodes.json").write_text('[{"name": 1}]')
    with pytest.raises(ClientError) as e:
        discovery.resolve(None, str(tmp_path), env={})
    assert e.value.code == "bad_testnet"


def test_global_options_work_after_the_command_and_between_tx_and_its_kind(tmp_path: Path, dead_urls: Any) -> None:
    dead = dead_urls(1)[0]
    for args in (["--json", "--node", dead, "status"], ["status", "--node", dead, "--json"],
                 ["tx", "--node", dead, "--json", "transfer", "--wallet", str(tmp_path / "w.json"),
                  "--to", "ab" * 32, "--asset", "CNY.BANKA", "--amount", "5"]):
        p = cli(*args, SMELEDGER_PASSWORD="x")
        assert p.returncode == 1, (args, p.stderr)
        err = json.loads(p.stderr)
        assert set(err) == {"error", "message"} and err["error"] in ("unreachable", "wallet_error"), err


def test_with_json_every_error_is_one_json_object_with_a_stable_code(tmp_path: Path, dead_urls: Any) -> None:
    dead = dead_urls(1)[0]
    p = cli("--json", "status", "--node", dead)
    assert json.loads(p.stderr)["error"] == "unreachable" and dead in json.loads(p.stderr)["message"]
    p = cli("--json", "query", "widgets", "1")
    assert p.returncode == 2 and json.loads(p.stderr)["error"] == "usage"
    p = cli("--json", "tx", "transfer", "--bogus")
    assert p.returncode == 2 and json.loads(p.stderr)["error"] == "usage" and p.stdout == ""
    p = cli("status", cwd=tmp_path, SMELEDGER_NODE=dead)
    assert p.returncode == 1 and p.stderr.startswith("error: cannot reach " + dead)


def test_status_without_node_reads_the_testnet_directory_in_the_working_directory(tmp_path: Path,
                                                                                   dead_urls: Any) -> None:
    _testnet(tmp_path / ".testnet", dead_urls(2))
    p = cli("--json", "status", cwd=tmp_path)
    rows = json.loads(p.stdout)
    assert p.returncode == 1 and [r["name"] for r in rows] == ["n0", "n1"]
    assert all(r["error"] == "unreachable" for r in rows)


def test_init_refuses_a_name_with_a_newline_and_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "h"
    p = cli("init", "--home", str(home), "--name", "bank\nA")
    assert p.returncode == 1 and "node.name" in p.stderr and "printable" in p.stderr
    assert not home.exists()


def test_init_writes_a_config_with_tomli_w_and_a_systemd_unit_for_that_home(tmp_path: Path) -> None:
    home = tmp_path / "h"
    p = cli("--json", "init", "--home", str(home), "--name", 'bank "A"', "--chain-id", "c1")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    cfg = tomllib.loads((home / "config.toml").read_text())
    assert cfg["node"] == {"name": 'bank "A"', "chain_id": "c1"}
    example = Path(info["example_config"])
    assert example.is_file() and str(example) in (home / "config.toml").read_text().splitlines()[0]
    unit = (home / "smeledger.service").read_text()
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    assert Path(exec_start.split("=", 1)[1].split()[0]).is_absolute() and info["systemd_unit"].endswith(".service")
    assert f"--home {home}" in unit and f"ReadWritePaths={home}" in unit and "/var/lib/smeledger" not in unit
