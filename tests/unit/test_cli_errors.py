"""The CLI: every error is one `error: ...` line on stderr with a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from client.client import Client
from client.errors import ClientError
from node import config
from tests.conftest import free_port_block

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "SMELEDGER_PASSWORD": ""})


def assert_clean_error(p: subprocess.CompletedProcess[str], fragment: str, rc: int = 1) -> None:
    assert p.returncode == rc, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert fragment in lines[0], lines[0]


def test_run_without_a_config_is_one_clear_json_line(tmp_path: Path) -> None:
    p = cli("run", "--home", str(tmp_path / "nope"))  # a node writes JSON lines only, its start errors too
    assert p.returncode == 1 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    err = json.loads(p.stderr)
    assert err["error"] == "config_error" and "no config file" in err["message"]


def test_status_of_an_unreachable_node_is_one_clear_line() -> None:
    port = free_port_block(1) + 1
    assert_clean_error(cli("status", "--node", f"http://127.0.0.1:{port}"), "cannot reach")


def test_wallet_errors_are_one_clear_line(tmp_path: Path) -> None:
    assert_clean_error(cli("wallet", "show", str(tmp_path / "missing.json")), "no keystore")
    (tmp_path / "junk.json").write_text("]]")
    assert_clean_error(cli("wallet", "show", str(tmp_path / "junk.json")), "not valid JSON")


def test_wallet_new_then_show_check_and_a_wrong_password(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "bad").write_text("nope\n")
    w = tmp_path / "w.json"
    p = cli("--json", "wallet", "new", "--out", str(w), "--name", "me", "--roles", "sme",
            "--password-file", str(tmp_path / "pw"), "--kdf", "min")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["name"] == "me" and info["roles"] == ["SME"] and stat.S_IMODE(os.stat(w).st_mode) == 0o600
    p = cli("wallet", "show", str(w), "--check", "--password-file", str(tmp_path / "pw"), "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["password_ok"] is True
    assert_clean_error(cli("wallet", "show", str(w), "--check", "--password-file", str(tmp_path / "bad")),
                       "wrong password")
    assert_clean_error(cli("wallet", "new", "--out", str(w), "--password-file", str(tmp_path / "pw")), "exists")


def test_tx_with_a_wrong_password_or_unreachable_node_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "bad").write_text("nope\n")
    w = tmp_path / "w.json"
    assert cli("wallet", "new", "--out", str(w), "--password-file", str(tmp_path / "pw"), "--kdf", "min").returncode == 0
    port = free_port_block(1) + 1
    args = ["tx", "transfer", "--node", f"http://127.0.0.1:{port}", "--wallet", str(w), "--to", "ab" * 32,
            "--asset", "CNY.BANKA", "--amount", "5"]
    assert_clean_error(cli(*args, "--password-file", str(tmp_path / "bad")), "wrong password")
    assert_clean_error(cli(*args, "--password-file", str(tmp_path / "pw")), "cannot reach")


def test_usage_errors_exit_2_without_a_traceback() -> None:
    assert_clean_error(cli("query", "widgets", "1"), "unknown thing", rc=2)
    p = cli("tx", "no-such-kind")
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_testnet_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep me")
    assert_clean_error(cli("testnet", "create", "--dir", str(tmp_path), "--kdf", "min"), "not empty")
    assert (tmp_path / "x").read_text() == "keep me"


def test_init_creates_a_private_key_a_token_and_a_valid_config_and_refuses_twice(tmp_path: Path) -> None:
    home = tmp_path / "h"
    p = cli("--json", "init", "--home", str(home), "--name", "n1", "--chain-id", "c1")
    assert p.returncode == 0, p.stderr
    assert len(json.loads(p.stdout)["public_key"]) == 64
    for f in ("node_key.json", "admin.token"):
        assert stat.S_IMODE(os.stat(home / f).st_mode) == 0o600
    cfg = config.load(home)
    assert (cfg.node.name, cfg.node.chain_id, cfg.api.host) == ("n1", "c1", "127.0.0.1")
    assert_clean_error(cli("init", "--home", str(home)), "already exists")


def test_load_without_wallets_says_which_directory_is_missing(tmp_path: Path) -> None:
    assert_clean_error(cli("load", "--node", "http://127.0.0.1:1", "--wallets", str(tmp_path / "none")),
                       "does not exist", rc=2)


def test_a_second_node_on_the_same_home_reports_the_locked_database(tmp_path: Path) -> None:
    base = free_port_block(1)
    assert cli("testnet", "create", "--dir", str(tmp_path / "net"), "--validators", "1", "--observers", "0",
               "--accounts", "0", "--base-port", str(base), "--kdf", "min").returncode == 0
    home = tmp_path / "net" / "banka"
    first = subprocess.Popen([sys.executable, "-m", "cli.main", "run", "--home", str(home)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = Client(f"http://127.0.0.1:{base + 1001}", timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.health()
                break
            except ClientError:
                assert time.monotonic() < deadline and first.poll() is None, "first node did not start"
                time.sleep(0.1)
        second = cli("run", "--home", str(home))
        # a node reports through its log: every line JSON (journald), the failure named once, exit non-zero
        assert second.returncode == 1 and not second.stderr and "Traceback" not in second.stdout
        lines = [json.loads(line) for line in second.stdout.splitlines()]
        failed = [x for x in lines if x["event"] == "node_failed"]
        assert len(failed) == 1 and "in use by another process" in failed[0]["error"]
        assert failed[0]["code"] == "db_locked"
    finally:
        first.terminate()
        first.wait(10)
    assert first.returncode == 0
