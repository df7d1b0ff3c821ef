"""Issue 15's acceptance as a chaos test (`make chaos`): a 4-validator testnet under a steady 200 tx/s load
(`smeledger load`), and at the primary a gzip bomb, an 8 MB nested msgpack and 2,000 slow-header
connections (devtools/hostile.py). Bounds are "not stalled" bounds, not speed targets: no view change,
/health never slower than 1 s, JSON 4xx within 3 s, every slow connection closed by the node within
45 s, RSS under 300 MiB; and the load commits every tx it submitted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.hostile import Drill
from tests.integration.harness import ROOT, Net

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path / "tn", accounts=16)
    try:
        n.start()
        yield n
    finally:
        n.close()


def test_hostile_clients_at_the_primary_under_load_get_json_4xx_and_consensus_does_not_notice(net: Net) -> None:
    urls = {name: net.nodes[name]["admin_url"] for name in net.validators}
    load = subprocess.Popen([sys.executable, "-m", "cli.main", "load", "--node", urls[net.validators[0]],
                             "--nodes", ",".join(urls.values()), "--wallets", str(net.dir / "wallets"),
                             "--rate", "200", "--duration", "70", "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        net.wait_height(net.validators, 20, timeout=30)  # the load is flowing
        primary = net.primary()
        args = argparse.Namespace(node=urls[primary], nodes=list(urls.values()), pid=net.pid(primary) or 0,
                                  duration=45.0, gzip_bombs=1, nested_clients=1, nested_posts=1, slow_headers=2000)
        report = asyncio.run(Drill(args).run())
        out, err = load.communicate(timeout=120)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    print(json.dumps(report, indent=1))
    before, after = report["views_before"], report["views_after"]
    assert not report["view_changed"], (before, after)
    assert all(after[u]["height"] > before[u]["height"] for u in before)  # commits went on
    for kind in ("keepalive", "fresh"):
        assert report["health_s"][kind]["max"] < 1.0, report["health_s"]
    assert report["health_bad"] == {}
    assert report["answers"] == {"gzip_bomb": {"415 unsupported_encoding": 1},
                                 "nested_msgpack": {"400 bad_msgpack": 1}}
    assert all(report["posts_s"][k]["max"] < 3.0 for k in ("gzip_bomb", "nested_msgpack"))
    slow = report["slow_headers"]
    assert slow["opened"] == 2000 and slow["still_open_at_end"] == 0 and slow["other_answers"] == 0
    assert slow["closed_after_s"]["max"] < 45.0
    assert report["rss_mib"] is not None and report["rss_mib"]["max"] < 300
    result = json.loads(out)
    assert result["rejected"] == 0 and result["committed"] == result["submitted"], err[-2000:]
