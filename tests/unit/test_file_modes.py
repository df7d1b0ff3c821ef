"""File modes of node homes (node/files.py): whatever the umask, `smeledger init`, testnet creation and a
running node give every directory 0700, every secret 0600 and the rest 0644; and a node refuses to start
while its key or admin token is open to group or others, naming the file and the chmod to run."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.errors import KeyFileError
from tests.conftest import ephemeral, free_port_block, load_home

REPO = Path(__file__).resolve().parents[2]
SECRETS = {"node_key.json", "admin.token", "PASSWORD", "SMELEDGER-SEAL"}
PUBLIC = {"config.toml", "genesis.json", "nodes.json", "smeledger.service"}


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _expected(p: Path, root: Path) -> int | None:
    """The mode `p` must have; None for LevelDB's own files (0644 by LevelDB, inside a 0700 directory)."""
    if p.is_dir():
        return 0o700
    if p.name in SECRETS or p.parent.name == "wallets":
        return 0o600
    if p.name in PUBLIC:
        return 0o644
    if p.parent.name == "journal":  # the accepted-tx journal (node/journal.py)
        return 0o600
    assert p.parent.name == "data", f"unexpected file {p.relative_to(root)}"
    return None


def test_init_testnet_creation_and_a_node_under_umask_000_give_every_file_its_mode(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, dataclasses, io, os, sys
        os.umask(0)
        from cli.main import main
        from devtools import testnet
        from node import config
        from node.service import Node
        assert main(["init", "--home", {str(tmp_path / "srv" / "new" / "home")!r}, "--name", "n1",
                     "--chain-id", "c1"]) == 0
        testnet.create({str(tmp_path / "net")!r}, validators=1, observers=0, accounts=2,
                       base_port={free_port_block(1)}, kdf="min")
        cfg = config.load({str(tmp_path / "net" / "banka")!r})
        cfg = dataclasses.replace(cfg, api=dataclasses.replace(cfg.api, port=0),
                                  p2p=dataclasses.replace(cfg.p2p, port=0, peers=()))

        async def run_briefly():
            node = Node(cfg, log_stream=io.StringIO())
            task = asyncio.create_task(node.run())
            await asyncio.wait_for(node.ready.wait(), 20)
            node.request_stop()
            await asyncio.wait_for(task, 10)

        asyncio.run(run_briefly())
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    checked = 0
    for root in (tmp_path / "srv", tmp_path / "net"):
        for p in [root, *sorted(root.rglob("*"))]:
            want = _expected(p, root)
            if want is None:
                assert _mode(p) & 0o022 == 0, f"{p} is writable by group or others"
            else:
                assert _mode(p) == want, f"{p.relative_to(tmp_path)} is {oct(_mode(p))}, not {oct(want)}"
            checked += 1
    assert (tmp_path / "net" / "banka" / "data" / "CURRENT").exists() and checked > 20


@pytest.mark.parametrize(("name", "mode"), [("node_key.json", 0o640), ("node_key.json", 0o604),
                                            ("admin.token", 0o640), ("admin.token", 0o604)])
async def test_a_node_refuses_to_start_while_its_key_or_token_is_open_to_others(
        single_home: Path, start_node: Any, name: str, mode: int) -> None:
    path = single_home / "banka" / name
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as info:
        await start_node(ephemeral(load_home(single_home / "banka")))
    assert str(path) in info.value.message and f"run: chmod 600 {path}" in info.value.message
    assert not (single_home / "banka" / "data").exists()  # refused before anything was opened


async def test_a_token_opened_to_others_after_the_start_disables_operator_routes(
        single_home: Path, start_node: Any) -> None:
    node = await start_node(ephemeral(load_home(single_home / "banka")))
    token_path = single_home / "banka" / "admin.token"
    token = token_path.read_text().strip()
    os.chmod(token_path, 0o644)
    async with aiohttp.ClientSession() as s, s.post(node.api.url + "/admin/time-offset", json={"offset_ms": 1},
                                                    headers={"Authorization": f"Bearer {token}"}) as r:
        doc = await r.json()
    assert r.status == 403 and doc["error"] == "forbidden" and f"chmod 600 {token_path}" in doc["message"]
