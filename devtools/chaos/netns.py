"""Network namespaces for a chaos testnet: each node in its own namespace with its own address, joined to
the host by a veth pair on one bridge; the fault-injecting proxy listens on the bridge's address.

Layout for run tag `smc<pid>`: bridge `smc<pid>br` holding 10.213.X.1/24; node i in namespace `smc<pid>n<i>`
with 10.213.X.(10+i) on its end of the pair `smc<pid>h<i>` (host side, on the bridge) / `smc<pid>p<i>`.
Cutting a node off takes its host-side link down: packets stop both ways, no FIN, no RST, exactly as a
pulled cable (its API goes dark too, so the client must fail over).

Rule: every object carries this run's tag and is recorded as it is made; `teardown()` removes all of them
and is safe to call twice (the orchestrator calls it from `finally`, atexit and its signal handlers);
`sweep_stale()` removes what runs whose process is gone left behind. Only root may do any of this:
`available()` says whether this machine permits it, and why not.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess

from devtools.devnet import _alive

TAG_PREFIX = "smc"
SUBNET_BASE = "10.213"
_OWN = re.compile(rf"^{TAG_PREFIX}(\d+)(?:br|[hpn]\d+|probe)$")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def available() -> tuple[bool, str]:
    """(True, "") when namespaces, veth pairs and bridges can be made here; else (False, why not)."""
    if shutil.which("ip") is None:
        return False, "no `ip` command (iproute2)"
    if os.geteuid() != 0:
        return False, "not root (network namespaces need CAP_NET_ADMIN)"
    probe = f"{TAG_PREFIX}{os.getpid()}probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return False, f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return True, ""


def sweep_stale() -> list[str]:
    """Delete namespaces and links of earlier runs whose process is gone (first killing what still runs
    inside those namespaces: nodes that run started); returns what was removed."""
    removed = []
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        m = _OWN.match(name)
        if m and not _alive(int(m.group(1))):
            for pid in _ip("netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", name, check=False)
            removed.append(name)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        name = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
        m = _OWN.match(name)
        if m and not _alive(int(m.group(1))):
            _ip("link", "del", name, check=False)
            removed.append(name)
    return removed


def _free_subnet() -> str:
    used = _ip("-4", "-o", "addr", "show", check=False).stdout
    for x in range(1, 255):
        net = f"{SUBNET_BASE}.{(os.getpid() + x) % 250 + 1}"
        if f" {net}." not in used:
            return net
    raise RuntimeError(f"no free /24 in {SUBNET_BASE}.0.0/16")


class NetNs:
    def __init__(self, names: list[str]) -> None:
        self.tag = f"{TAG_PREFIX}{os.getpid()}"
        self.names = list(names)
        self.bridge = f"{self.tag}br"
        net = _free_subnet()
        self.host_ip = f"{net}.1"
        self.ns = {n: f"{self.tag}n{i}" for i, n in enumerate(names)}
        self.host_side = {n: f"{self.tag}h{i}" for i, n in enumerate(names)}
        self.node_side = {n: f"{self.tag}p{i}" for i, n in enumerate(names)}
        self.ip = {n: f"{net}.{10 + i}" for i, n in enumerate(names)}
        ipaddress.ip_address(self.host_ip)  # well-formed, or fail before touching anything
        self._made_ns: list[str] = []
        self._made_links: list[str] = []
        self.down: set[str] = set()

    def up(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._made_links.append(self.bridge)
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for n in self.names:
            ns, host, peer = self.ns[n], self.host_side[n], self.node_side[n]
            _ip("netns", "add", ns)
            self._made_ns.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("link", "add", host, "type", "veth", "peer", "name", peer)
            self._made_links.append(host)
            _ip("link", "set", peer, "netns", ns)
            _ip("link", "set", host, "master", self.bridge)
            _ip("link", "set", host, "up")
            _ip("-n", ns, "addr", "add", f"{self.ip[n]}/24", "dev", peer)
            _ip("-n", ns, "link", "set", peer, "up")

    def exec_prefix(self, name: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[name]]

    def cut(self, name: str) -> None:
        """Take the node's link to the bridge down: it is cut off from every peer and from the client."""
        _ip("link", "set", self.host_side[name], "down")
        self.down.add(name)

    def heal(self, name: str) -> None:
        _ip("link", "set", self.host_side[name], "up")
        self.down.discard(name)

    def teardown(self) -> list[str]:
        """Remove every link and namespace this run made (processes in them must be stopped first);
        returns the errors, if any, as text."""
        errors = []
        for link in reversed(self._made_links):
            p = _ip("link", "del", link, check=False)
            if p.returncode != 0 and "Cannot find device" not in p.stderr:
                errors.append(p.stderr.strip())
        for ns in reversed(self._made_ns):
            p = _ip("netns", "del", ns, check=False)
            if p.returncode != 0 and "No such file" not in p.stderr:
                errors.append(p.stderr.strip())
        self._made_links.clear()
        self._made_ns.clear()
        return errors
