"""One name per metric: a node exports each figure once (no `smeledger_p2p_peers_connected` beside
`smeledger_peers`, no `smeledger_consensus_height` beside `smeledger_height`, no `<counter>_created`
series), and every metric the alert rules use is one a node exports. Where `promtool` is installed
(Debian's `prometheus` package), it also checks the rules, the scrape config and the live exposition."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import configs
from tests.conftest import ephemeral, load_home

REMOVED_ALIASES = {"smeledger_p2p_peers_connected", "smeledger_consensus_height"}


async def _exposition(single_home: Path, start_node: Any) -> str:
    node = await start_node(ephemeral(load_home(single_home / "banka")))
    async with aiohttp.ClientSession() as s, s.get(node.api.url + "/metrics") as r:
        return await r.text()


async def test_each_figure_has_one_name_and_the_alert_rules_use_only_exported_ones(single_home: Path,
                                                                                    start_node: Any) -> None:
    text = await _exposition(single_home, start_node)
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"smeledger_height", "smeledger_peers", "smeledger_view"} <= names
    assert not names & REMOVED_ALIASES
    assert not [n for n in names if n.endswith("_created")]
    used = set(re.findall(r"\bsmeledger_[a-z0-9_]+", configs.read(configs.ALERTS)))
    exported = names | {n + "_total" for n in names} | {n + s for n in names for s in ("_bucket", "_sum", "_count")}
    assert used and used <= exported, f"alert rules use metrics no node exports: {sorted(used - exported)}"


async def test_promtool_accepts_the_rules_the_scrape_config_and_the_exposition(
        single_home: Path, start_node: Any, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("no promtool: install Debian's prometheus package (.ci/run does)")
    text = await _exposition(single_home, start_node)
    for args in (["check", "rules", str(configs.path(configs.ALERTS))],
                 ["check", "config", str(configs.path(configs.PROMETHEUS))]):
        p = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
