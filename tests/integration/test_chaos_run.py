"""A short seeded chaos run (about a minute) on real processes: the whole `make chaos` machinery, from the
fault schedule to the verdict file, with nothing lost, diverged or broken, and nothing left behind.

The long run stays in `make chaos` (10 minutes by default)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import ROOT

pytestmark = pytest.mark.integration
SEED = 5
DURATION_S = 60
REPORT_KEYS = {"seed", "mode", "duration_s", "faults", "txs_accepted", "txs_committed", "txs_lost", "divergences",
               "history_holes", "invariants_ok", "max_recovery_s", "rss_mib_max", "failures", "replay"}


def _leftovers(pid: int) -> str:
    """Namespaces and links the chaos run of process `pid` made that still exist (its run tag: smc<pid>;
    other runs on the machine are not this test's business)."""
    tag = f"smc{pid}"
    out = []
    for args in (["ip", "netns", "list"], ["ip", "-o", "link", "show"]):
        try:
            out.append(subprocess.run(args, capture_output=True, text=True, timeout=10).stdout)
        except (OSError, subprocess.TimeoutExpired):
            continue
    return "\n".join(line for text in out for line in text.splitlines()
                     if any(word.startswith(tag) and not word[len(tag):len(tag) + 1].isdigit()
                            for word in line.replace(":", " ").replace("@", " ").split()))


def _tmpdir(tmp_path: Path) -> dict[str, str]:
    """The run's environment with its work directory (kept when it fails) under the test's tmp_path."""
    return {**os.environ, "TMPDIR": str(tmp_path)}


def test_a_one_minute_seeded_chaos_run_loses_nothing_diverges_nowhere_and_cleans_up(tmp_path: Path) -> None:
    report_path = tmp_path / "chaos-report.json"
    p = subprocess.Popen([sys.executable, "-m", "devtools.chaos", "--duration", str(DURATION_S), "--seed", str(SEED),
                          "--out", str(report_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=_tmpdir(tmp_path))
    try:
        stdout, stderr = p.communicate(timeout=900)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    report = json.loads(report_path.read_text())
    assert p.returncode == 0, f"{stdout[-4000:]}\n{stderr[-2000:]}"
    assert set(report) >= REPORT_KEYS
    assert report["seed"] == SEED and report["mode"] in ("netns", "loopback")
    assert report["txs_lost"] == 0 and report["divergences"] == 0 and report["history_holes"] == 0
    assert report["invariants_ok"] is True and report["failures"] == []
    assert report["txs_accepted"] > 100 and report["txs_committed"] == report["txs_accepted"]
    assert report["faults"] and all({"t", "kind", "target"} <= set(f) for f in report["faults"])
    assert report["max_recovery_s"] is not None and report["max_recovery_s"] <= 10
    assert f"SEED={SEED}" in report["replay"]
    assert _leftovers(p.pid) == "", "the run left namespaces or links behind"


def test_the_same_seed_draws_the_same_schedule() -> None:
    from devtools.chaos import schedule

    vals, obs = ["banka", "bankb", "smea", "smeb"], ["regulator"]
    a, b = schedule.plan(SEED, 600, vals, obs), schedule.plan(SEED, 600, vals, obs)
    assert a == b
    assert a != schedule.plan(SEED + 1, 600, vals, obs)
    kinds = [e.fault.kind for e in a.episodes]
    assert set(schedule.KINDS) <= set(kinds), "a 10-minute run meets every kind of fault"
    modes = {e.fault.params["mode"] for e in a.episodes if e.fault.kind == "byzantine"}
    assert modes == set(schedule.BYZANTINE_MODES)


def test_a_chaos_run_stopped_midway_leaves_no_process_namespace_or_link_behind(tmp_path: Path) -> None:
    p = subprocess.Popen([sys.executable, "-m", "devtools.chaos", "--duration", "600", "--seed", str(SEED),
                          "--out", str(tmp_path / "r.json")], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=_tmpdir(tmp_path))
    try:
        assert p.stdout is not None
        for line in p.stdout:  # bounded: the run prints this within its start timeout, or exits
            if "episode 0" in line:
                break
        p.send_signal(signal.SIGTERM)
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert p.returncode != 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["failures"] and "replay" in report
    assert _leftovers(p.pid) == "", "the stopped run left namespaces or links behind"
    left = subprocess.run(["pgrep", "-f", f"smeledger-chaos-{SEED}-"], capture_output=True, text=True).stdout
    assert not left.strip(), f"node processes outlived the run: {left}"
