"""The chaos testnet: its node processes, their network (namespaces or loopback) and the link proxy.

`Cluster` writes a 4-validator + observer testnet, puts every node in its own network namespace (mode
`netns`) or leaves them on 127.0.0.1 (mode `loopback`, where namespaces are not permitted), routes every
peer link through the fault-injecting proxy (devtools/chaos/proxy.py, its own process) and rewrites only
the nodes' hosts and peer addresses in their configs. It starts, kills (-9), pauses and resumes nodes,
cuts nodes off, black-holes byte flows between nodes and degrades links.

A byte flow X->Y (what X sends to Y) travels on the link X dialled ("X->Y", direction fwd) and on the link
Y dialled ("Y->X", direction back), so cutting a flow sets both. Cutting a node off: in `netns` its link
to the bridge goes down (its API goes dark too); on loopback every flow to and from it is cut.

Rule: every process and network object made here is undone by `close()`, which is safe to call twice and
is called on every exit path; only processes this object started are signalled, by pid, and each of them
is also tied to the run's life (PR_SET_PDEATHSIG), so not even a SIGKILLed run leaves a node behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

from client.client import Client
from client.errors import ClientError
from devtools import testnet as testnet_mod
from devtools.chaos.netns import NetNs
from node import config as config_mod
from protocol import api

ROOT = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1
P2P_PORT = 7701
API_PORT = 8701
LOG_FILE = "node.log"


try:  # resolved once here: between fork and exec the child only makes this one call
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: close() is the only cleanup
    _PRCTL = None


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills it if the run itself dies (even by SIGKILL), so no node
    outlives the run that started it."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ProxyControl:
    """The proxy process and its JSON-lines control channel (one command at a time)."""

    def __init__(self, seed: int, log_path: Path) -> None:
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "devtools.chaos.proxy", str(seed)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, start_new_session=True, preexec_fn=_die_with_parent)
        self._lock = threading.Lock()

    def cmd(self, **doc: Any) -> dict[str, Any]:
        with self._lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps(doc) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the link proxy died (exit {self.proc.poll()}); see its log")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(f"proxy refused {doc}: {answer.get('error')}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError):
                self.cmd(op="quit")
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(3)
        self._log.close()


class Cluster:
    def __init__(self, workdir: Path, *, mode: str, seed: int, accounts: int) -> None:
        self.dir = workdir
        self.mode = mode
        self.seed = seed
        self.accounts = accounts
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stopped: set[str] = set()  # SIGSTOPped
        self.expected_down: set[str] = set()  # killed by us, not yet restarted
        self.net: NetNs | None = None
        self.proxy: ProxyControl | None = None
        self.names: list[str] = []
        self.validators: list[str] = []
        self.observers: list[str] = []
        self.urls: dict[str, str] = {}
        self.genesis: dict[str, Any] = {}
        self.rss_mib: dict[str, float] = {}
        self.unexpected_exits: list[dict[str, Any]] = []
        self._closed = False

    # ---- building ----------------------------------------------------------------------------------

    def create(self) -> None:
        base = testnet_mod.free_port_block(5, hi=31000) if self.mode == "loopback" else P2P_PORT - 1
        rows = testnet_mod.create(self.dir / "net", validators=4, observers=1, accounts=self.accounts,
                                  base_port=base, kdf="min")
        self.names = [r["name"] for r in rows]
        self.validators = [r["name"] for r in rows if r["role"] == "validator"]
        self.observers = [r["name"] for r in rows if r["role"] == "observer"]
        self.genesis = json.loads((self.dir / "net" / "genesis.json").read_text())
        self._ports = {r["name"]: (int(r["p2p"].rsplit(":", 1)[1]), int(r["admin_url"].rsplit(":", 1)[1]))
                       for r in rows}

    def home(self, name: str) -> Path:
        return self.dir / "net" / name

    def network_up(self) -> None:
        if self.mode == "netns":
            self.net = NetNs(self.names)
            self.net.up()
            ips = dict(self.net.ip)
            proxy_host = self.net.host_ip
        else:
            ips = dict.fromkeys(self.names, "127.0.0.1")
            proxy_host = "127.0.0.1"
        self.proxy = ProxyControl(self.seed, self.dir / "proxy.log")
        ports: dict[str, int] = {}
        for a in self.names:
            for b in self.names:
                if a != b:
                    link = f"{a}->{b}"
                    ports[link] = int(self.proxy.cmd(op="link", name=link, listen=[proxy_host, 0],
                                                     upstream=[ips[b], self._ports[b][0]])["port"])
        for a in self.names:
            self._rewrite(a, ips[a], {b: (proxy_host, ports[f"{a}->{b}"]) for b in self.names if b != a})
            self.urls[a] = f"http://{ips[a]}:{self._ports[a][1]}"

    def _rewrite(self, name: str, host: str, peers: dict[str, tuple[str, int]]) -> None:
        """Only the node's hosts change, and its peers' addresses point at the proxy's links."""
        path = self.home(name) / config_mod.CONFIG_FILE
        doc = tomllib.loads(path.read_text())
        doc["p2p"]["host"] = host
        doc["api"]["host"] = host
        for peer in doc["p2p"]["peers"]:
            peer["host"], peer["port"] = peers[peer["name"]]
        path.write_text(config_mod.render(doc), encoding="utf-8")
        config_mod.load(path)

    # ---- processes ---------------------------------------------------------------------------------

    def start(self, name: str, *, byzantine: str | None = None, skew_ms: int = 0) -> None:
        cmd = [sys.executable, "-m", "cli.main", "run", "--home", str(self.home(name))]
        if byzantine:
            cmd += ["--byzantine", byzantine]
        if self.net is not None:
            cmd = self.net.exec_prefix(name) + cmd
        env = {**os.environ, "SMELEDGER_BYZANTINE_SEED": str(self.seed), "PYTHONPATH": str(ROOT)}
        env.pop("SMELEDGER_FAILPOINTS", None)
        if skew_ms:
            env["SMELEDGER_CLOCK_SKEW_MS"] = str(skew_ms)
        else:
            env.pop("SMELEDGER_CLOCK_SKEW_MS", None)
        with (self.home(name) / LOG_FILE).open("ab") as log:
            self.procs[name] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                                start_new_session=True, preexec_fn=_die_with_parent)
        self.expected_down.discard(name)
        self.stopped.discard(name)

    def kill9(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        self.expected_down.add(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.stopped.discard(name)

    def stop_gracefully(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        self.expected_down.add(name)
        if name in self.stopped:
            self.resume(name)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def pause(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGSTOP)
            self.stopped.add(name)

    def resume(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
        self.stopped.discard(name)

    def check_processes(self) -> None:
        """Sample RSS and note nodes that exited without being killed (a crash is a failed run)."""
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                if name not in self.expected_down:
                    self.expected_down.add(name)
                    self.unexpected_exits.append({"node": name, "exit": code,
                                                  "log": _tail(self.home(name) / LOG_FILE)})
                continue
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    mib = int(line.split()[1]) / 1024
                    self.rss_mib[name] = max(self.rss_mib.get(name, 0.0), mib)

    def client(self, name: str, timeout: float = 1.0) -> Client:
        return Client(self.urls[name], timeout=timeout)

    def status(self, name: str) -> api.Status | None:
        try:
            return self.client(name).status()
        except ClientError:
            return None

    def primary(self) -> str:
        """The primary most validators name (the first running validator when none answers)."""
        votes: Counter[str] = Counter()
        for name in self.validators:
            st = self.status(name)
            if st is not None and st.primary_name:
                votes[st.primary_name] += 1
        if votes:
            return votes.most_common(1)[0][0]
        return next((n for n in self.validators if n not in self.expected_down), self.validators[0])

    # ---- network faults ------------------------------------------------------------------------------

    def _proxy(self) -> ProxyControl:
        assert self.proxy is not None
        return self.proxy

    def set_flow(self, src: str, dst: str, *, cut: bool) -> None:
        """Black-hole (or restore) the bytes `src` sends to `dst`, on both links between them."""
        self._proxy().cmd(op="set", name=f"{src}->{dst}", dir="fwd", cut=cut)
        self._proxy().cmd(op="set", name=f"{dst}->{src}", dir="back", cut=cut)

    def isolate(self, name: str, on: bool) -> None:
        if self.net is not None:
            (self.net.cut if on else self.net.heal)(name)
            return
        for other in self.names:
            if other != name:
                self.set_flow(name, other, cut=on)
                self.set_flow(other, name, cut=on)

    def degrade(self, links: list[str], params: dict[str, Any]) -> None:
        for link in links:
            self._proxy().cmd(op="set", name=link, dir="both", **params)

    def clear_links(self, base: dict[str, Any]) -> None:
        """Every link back to the run's base profile (no cut, no loss)."""
        self._proxy().cmd(op="clear")
        if base:
            self.degrade([f"{a}->{b}" for a in self.names for b in self.names if a != b], base)

    def heal_network(self, base: dict[str, Any]) -> None:
        if self.net is not None:
            for name in list(self.net.down):
                self.net.heal(name)
        self.clear_links(base)

    # ---- teardown ----------------------------------------------------------------------------------------

    def close(self) -> list[str]:
        """Stop every process and remove every network object this cluster made; returns problems."""
        if self._closed:
            return []
        self._closed = True
        problems: list[str] = []
        for name, proc in self.procs.items():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.send_signal(signal.SIGKILL)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    problems.append(f"{name} (pid {proc.pid}) did not exit after SIGKILL")
        if self.proxy is not None:
            self.proxy.close()
        if self.net is not None:
            problems += self.net.teardown()
        return problems


def _tail(path: Path, lines: int = 15) -> str:
    try:
        data = path.read_bytes()[-32 * 1024:]
    except OSError:
        return "(no log)"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def wait_until(pred: Any, timeout_s: float, poll_s: float = 0.25) -> float | None:
    """Seconds until `pred()` held, or None after `timeout_s`."""
    t0 = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            return None
        time.sleep(poll_s)
