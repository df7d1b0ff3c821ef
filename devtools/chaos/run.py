"""`make chaos`: a seeded fault schedule on a real 4-validator + observer testnet, and a verdict file.

`python -m devtools.chaos --duration 600 --seed 1 [--mode auto|netns|loopback] [--rate 20]` builds the
testnet (devtools/chaos/cluster.py), starts the independent client (devtools/chaos/client.py), plays the
schedule the seed draws (devtools/chaos/schedule.py) and after each episode measures recovery: the time
from the heal until a fresh probe tx is committed on every node and the validators share one view. At the end it heals everything, stops the
load, lets the accepted txs settle and checks the chain (devtools/chaos/verify.py). It writes
`chaos-report.json` with `seed`, `mode`, `duration_s`, `faults` [{t, kind, target, ...}], `txs_accepted`,
`txs_committed`, `txs_lost`, `divergences`, `history_holes`, `invariants_ok`, `max_recovery_s`,
`rss_mib_max` and `failures`, and exits 1 when anything was lost, diverged, broke, crashed, stayed
unrecovered past `RECOVERY_BOUND_S` or outgrew the RSS bound; a failing seed prints the command that
replays its schedule.

Rule: everything the run starts or creates (processes, namespaces, veths, bridge, proxy, temp dir) is
removed on every way out: normal end, failure, exception, SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from client.errors import ClientError
from client.wallet import Wallet, read_password
from devtools.chaos import netns, schedule
from devtools.chaos.client import ASSET, ChaosClient
from devtools.chaos.cluster import Cluster, wait_until
from devtools.chaos.faults import apply_fault, heal_fault, stale_peers
from devtools.chaos.verify import verify
from protocol.tx import SignedTx

RECOVERY_BOUND_S = 10.0
RECOVERY_TIMEOUT_S = 60.0
START_TIMEOUT_S = 90.0
SETTLE_S = 45.0  # after the load stops: give up waiting when nothing commits for this long
PEER_CHECK_AFTER_S = 8.0  # a partition held this long must show in `peers` (heartbeat: 5 s idle timeout)
ACCOUNTS = 25  # user01..user24 send the load, user25 sends the recovery probes
DEFAULT_RSS_MIB = 512  # per node; a node on this testnet holds ~60-100 MiB


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived: the run breaks off, still cleans up and still writes its report."""


def log(t0: float, text: str) -> None:
    print(f"[{time.monotonic() - t0:7.1f}s] {text}", flush=True)


class ChaosRun:
    def __init__(self, cluster: Cluster, plan: schedule.Plan, *, rate: float, rss_bound: float) -> None:
        self.c = cluster
        self.plan = plan
        self.rate = rate
        self.rss_bound = rss_bound
        self.faults: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.t0 = time.monotonic()
        self.client: ChaosClient | None = None
        self._probe: SignedTx | None = None
        self._probe_nonce = 0
        self._stop_monitor = threading.Event()

    # ---- setup ---------------------------------------------------------------------------------------

    def setup(self) -> None:
        c = self.c
        c.create()
        c.network_up()
        c.clear_links(self.plan.base_links)
        for name in c.names:
            c.start(name)
        if wait_until(lambda: all(self._healthy(n) for n in c.names), START_TIMEOUT_S) is None:
            c.check_processes()
            raise RuntimeError(f"the testnet did not start within {START_TIMEOUT_S:.0f} s: "
                               f"{[n for n in c.names if not self._healthy(n)]} not healthy; "
                               f"{c.unexpected_exits[:1]}")
        pw = read_password(c.dir / "net" / "wallets" / "PASSWORD")
        wallets = [Wallet.load(c.dir / "net" / "wallets" / f"user{i:02d}.json", pw) for i in range(1, ACCOUNTS + 1)]
        self.probe_wallet = wallets.pop()
        self.client = ChaosClient(c.genesis["chain_id"], wallets, c.urls, rate=self.rate, seed=self.plan.seed)
        self._probe_nonce = c.client(c.names[0], 5).account(self.probe_wallet.account).nonce
        threading.Thread(target=self._monitor, name="chaos-monitor", daemon=True).start()

    def _healthy(self, name: str) -> bool:
        try:
            return self.c.client(name).health().ok
        except ClientError:
            return False

    def _monitor(self) -> None:
        while not self._stop_monitor.wait(1.0):
            self.c.check_processes()

    # ---- the schedule -----------------------------------------------------------------------------------

    def play(self) -> None:
        assert self.client is not None
        self.client.start()
        self.t0 = time.monotonic()
        log(self.t0, f"load started: {self.rate:g} tx/s from {len(self.client.wallets)} senders; "
                     f"{len(self.plan.episodes)} episodes planned, byzantine validator {self.plan.byzantine}")
        time.sleep(schedule.WARMUP_S)
        for i, ep in enumerate(self.plan.episodes):
            if time.monotonic() - self.t0 >= self.plan.duration_s:
                break
            entry = self._episode(i, ep)
            self.faults.append(entry)
            if self.c.unexpected_exits:
                break
            time.sleep(ep.gap_s)

    def _resolve(self, target: str) -> str:
        return self.c.primary() if target == schedule.PRIMARY else target

    def _episode(self, i: int, ep: schedule.Episode) -> dict[str, Any]:
        f = ep.fault
        targets = [t for t in f.targets if t != "|"]
        resolved = [self._resolve(t) for t in targets]
        if f.kind == "kill2" and resolved[0] == resolved[1]:
            resolved[1] = next(v for v in self.c.validators if v != resolved[0])
        t_apply = time.monotonic() - self.t0
        entry: dict[str, Any] = {"t": round(t_apply, 1), "kind": f.kind, "target": ",".join(resolved),
                                 "hold_s": ep.hold_s, **f.params}
        if schedule.PRIMARY in f.targets:
            entry["primary_targeted"] = True
        if f.kind == "split":
            cut = f.targets.index("|")
            entry["target"] = "+".join(f.targets[:cut]) + " | " + "+".join(f.targets[cut + 1:])
        log(self.t0, f"episode {i}: {f.kind} {entry['target']} {f.params or ''} for {ep.hold_s} s"
                     + (f" (+ links {ep.links.params} on {len(ep.links.targets)})" if ep.links else ""))
        apply_fault(self.c, f, resolved)
        if ep.links is not None:
            self.c.degrade(list(ep.links.targets), ep.links.params)
            entry["links"] = {"on": list(ep.links.targets), **ep.links.params}
        if f.kind in ("isolate", "split", "oneway") and ep.hold_s >= PEER_CHECK_AFTER_S + 1:
            time.sleep(PEER_CHECK_AFTER_S)
            stale = stale_peers(self.c, f, resolved)
            entry["stale_peer_links"] = stale
            if stale:
                self.failures.append(f"episode {i} ({f.kind}): `peers` still lists cut links after "
                                     f"{PEER_CHECK_AFTER_S:g} s: {stale}")
            time.sleep(ep.hold_s - PEER_CHECK_AFTER_S)
        else:
            time.sleep(ep.hold_s)
        t_heal = time.monotonic()
        heal_fault(self.c, f, resolved)
        self.c.clear_links(self.plan.base_links)
        entry["heal_t"] = round(t_heal - self.t0, 1)
        recovery = self._recover(t_heal)
        entry["recovery_s"] = None if recovery is None else round(recovery, 2)
        log(self.t0, f"  healed; recovered in {entry['recovery_s']} s")
        if recovery is None:
            self.failures.append(f"episode {i} ({f.kind} {entry['target']}): not recovered within "
                                 f"{RECOVERY_TIMEOUT_S:.0f} s of the heal")
        elif recovery > RECOVERY_BOUND_S:
            self.failures.append(f"episode {i} ({f.kind} {entry['target']}): recovery took {recovery:.1f} s "
                                 f"(bound {RECOVERY_BOUND_S:g} s)")
        return entry

    # ---- recovery probe ----------------------------------------------------------------------------------

    def _recover(self, t_heal: float) -> float | None:
        """Seconds from the heal until a fresh probe tx is committed on every node and every validator is
        in the same view (a validator left alone in another view no longer votes: one more crash would
        stall the chain, so it has not recovered; the one once run byzantine included: its own replica is
        honest and leaves a view only with a quorum, docs/consensus.md)."""
        assert self.client is not None
        c = self.c
        if self._probe is not None and self._committed_somewhere(self._probe.hash.hex()):
            self._probe, self._probe_nonce = None, self._probe_nonce + 1  # a late probe: measure with a fresh one
        if self._probe is None:
            self._probe = SignedTx.create(self.probe_wallet.key, {
                "chain": c.genesis["chain_id"], "kind": "transfer", "nonce": self._probe_nonce,
                "to": self.client.wallets[0].public_key, "asset": ASSET, "amount": 1})
        probe = self._probe
        h = probe.hash.hex()
        deadline = t_heal + RECOVERY_TIMEOUT_S
        accepted_by: str | None = None
        while accepted_by is None and time.monotonic() < deadline:
            for name in c.names:
                try:
                    rows = c.client(name, 2.0).submit([probe]).results
                except ClientError:
                    continue
                if rows and (rows[0].accepted or rows[0].code in ("duplicate", "already_committed", "nonce_too_low")):
                    accepted_by = name
                    break
            if accepted_by is None:
                time.sleep(0.25)
        if accepted_by is None:
            return None
        self.client.track(probe, accepted_by)

        def everywhere() -> bool:
            views: dict[str, int] = {}
            for name in c.names:
                try:
                    cl = c.client(name, 2.0)
                    if cl.tx(h).status != "committed":
                        return False
                    if name in c.validators:
                        views[name] = cl.status().view
                except ClientError:
                    return False
            return len(set(views.values())) == 1

        if wait_until(everywhere, max(0.0, deadline - time.monotonic())) is None:
            return None
        self._probe = None
        self._probe_nonce += 1
        return time.monotonic() - t_heal

    def _committed_somewhere(self, h: str) -> bool:
        for name in self.c.names:
            try:
                if self.c.client(name, 2.0).tx(h).status == "committed":
                    return True
            except ClientError:
                continue
        return False

    # ---- the end -------------------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        assert self.client is not None
        c = self.c
        log(self.t0, "healing everything and stopping the load")
        c.heal_network({})
        for name in c.names:
            if name in c.stopped:
                c.resume(name)
            proc = c.procs.get(name)
            if proc is None or proc.poll() is not None:
                c.start(name)
        self.client.stop_load()
        recovery = self._recover(time.monotonic())
        if recovery is None:
            self.failures.append("after the final heal: no probe tx committed on every node within "
                                 f"{RECOVERY_TIMEOUT_S:.0f} s")
        left = self.client.settle(SETTLE_S)
        log(self.t0, f"settled: {len(self.client.accepted)} accepted, {left} not yet seen committed; verifying")
        self.client.stop()
        self._stop_monitor.set()
        accepted = sorted(self.client.accepted)
        verdict = verify(c.urls, c.genesis, accepted)
        c.check_processes()
        lost = [h for h in accepted if h not in verdict.in_chain]
        statuses = self.client.final_statuses(lost[:50])
        recoveries = [f["recovery_s"] for f in self.faults]
        max_recovery = None if None in recoveries else max(recoveries, default=0.0)
        rss_max = round(max(c.rss_mib.values(), default=0.0), 1)
        if lost:
            dropped = Counter(self.client.dropped[h].split(":", 1)[1] for h in lost if h in self.client.dropped)
            self.failures.append(f"{len(lost)} accepted txs are not in the chain"
                                 + (f" (dropped by their node: {dict(dropped)})" if dropped else ""))
        if verdict.divergences:
            self.failures.append(f"{verdict.divergences} divergences")
        if verdict.history_holes:
            self.failures.append(f"{verdict.history_holes} history holes")
        if not verdict.invariants_ok:
            self.failures.append("ledger invariants broken")
        if rss_max > self.rss_bound:
            self.failures.append(f"RSS {rss_max} MiB above the bound {self.rss_bound:g} MiB")
        for crash in c.unexpected_exits:
            self.failures.append(f"node {crash['node']} exited by itself (status {crash['exit']})")
        if self.client.tally.rejected:
            self.failures.append(f"valid transfers refused: {dict(self.client.tally.rejected)}")
        return {
            "seed": self.plan.seed, "mode": c.mode, "duration_s": self.plan.duration_s,
            "faults": self.faults,
            "txs_accepted": len(accepted), "txs_committed": len(verdict.committed_everywhere),
            "txs_lost": len(lost), "divergences": verdict.divergences, "history_holes": verdict.history_holes,
            "invariants_ok": verdict.invariants_ok, "max_recovery_s": max_recovery, "rss_mib_max": rss_max,
            "failures": self.failures,
            "detail": {
                "height": verdict.height, "converged": verdict.converged, "problems": verdict.problems,
                "holes_by_node": verdict.holes_by_node, "failed_receipts": verdict.failed_receipts,
                "byzantine_validator": self.plan.byzantine, "base_links": self.plan.base_links,
                "rss_mib": {n: round(v, 1) for n, v in c.rss_mib.items()},
                "lost_sample": {h: {"sender": self.client.accepted[h].sender[:16],
                                    "nonce": self.client.accepted[h].nonce,
                                    "accepted_by": self.client.accepted[h].node,
                                    "t": self.client.accepted[h].t, "now": statuses.get(h)}
                                for h in lost[:50]},
                "posts": self.client.tally.posts, "unanswered_posts": self.client.tally.unanswered_posts,
                "dropped": {h: r for h, r in sorted(self.client.dropped.items()) if h in lost},
                "retried": dict(self.client.tally.retried), "rejected": dict(self.client.tally.rejected),
                "unexpected_exits": c.unexpected_exits,
            },
        }


def _mode(wanted: str) -> tuple[str, str]:
    if wanted == "loopback":
        return "loopback", "asked for"
    ok, why = netns.available()
    if wanted == "netns" and not ok:
        raise SystemExit(f"error: network namespaces are not permitted here: {why}")
    return ("netns", "") if ok else ("loopback", why)


def replay_command(seed: int, duration: float, mode: str) -> str:
    return f"make chaos SEED={seed} DURATION={duration:g} MODE={mode}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=float(os.environ.get("DURATION") or 600))
    p.add_argument("--seed", type=int, default=int(os.environ.get("SEED") or 1))
    p.add_argument("--mode", choices=("auto", "netns", "loopback"), default=os.environ.get("MODE") or "auto")
    p.add_argument("--rate", type=float, default=20.0, help="transfers per second")
    p.add_argument("--rss-mib", type=float, default=DEFAULT_RSS_MIB, help="RSS bound per node")
    p.add_argument("--out", default="chaos-report.json")
    p.add_argument("--keep", action="store_true", help="keep the run's directory (node homes and logs)")
    args = p.parse_args(argv)
    mode, why = _mode(args.mode)
    if why and args.mode == "auto":
        print(f"network namespaces not permitted ({why}): running the schedule with the proxy on loopback")
    if mode == "netns":
        swept = netns.sweep_stale()
        if swept:
            print(f"removed leftovers of earlier runs: {', '.join(swept)}")
    workdir = Path(tempfile.mkdtemp(prefix=f"smeledger-chaos-{args.seed}-"))
    cluster = Cluster(workdir, mode=mode, seed=args.seed, accounts=ACCOUNTS)
    atexit.register(cluster.close)

    def on_signal(signum: int, _frame: Any) -> None:
        raise Stopped(f"stopped by signal {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    plan = schedule.plan(args.seed, args.duration, ["banka", "bankb", "smea", "smeb"], ["regulator"])
    run = ChaosRun(cluster, plan, rate=args.rate, rss_bound=args.rss_mib)
    report: dict[str, Any]
    try:
        run.setup()
        run.play()
        report = run.finish()
    except (RuntimeError, ClientError, OSError, Stopped, KeyboardInterrupt) as exc:
        report = {"seed": args.seed, "mode": mode, "duration_s": args.duration, "faults": run.faults,
                  "failures": [*run.failures, f"the run broke off: {exc or type(exc).__name__}"]}
    finally:
        problems = cluster.close()
        if problems:
            print("teardown problems: " + "; ".join(problems), file=sys.stderr)
    report["replay"] = replay_command(args.seed, args.duration, mode)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    ok = not report["failures"]
    keep = args.keep or not ok
    if keep:
        print(f"node homes and logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = {k: report.get(k) for k in ("seed", "mode", "txs_accepted", "txs_committed", "txs_lost",
                                          "divergences", "history_holes", "invariants_ok", "max_recovery_s",
                                          "rss_mib_max")}
    print(json.dumps(summary))
    if ok:
        print(f"chaos: PASS ({len(report.get('faults', []))} faults); report in {args.out}")
        return 0
    print(f"chaos: FAIL; report in {args.out}")
    for f in report["failures"]:
        print(f"  - {f}")
    print(f"replay this schedule: {report['replay']}")
    return 1
