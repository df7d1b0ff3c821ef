"""Local multi-process testnet control for the Makefile: `python -m devtools.devnet up|down|status`.

`up` creates the testnet directory when missing (same code as `smeledger testnet`), starts every node
as its own detached process `smeledger run --home D/<name>` (new session, output to `<home>/node.log`,
pid in `<home>/node.pid`), waits until each answers /health, and prints name, role, admin URL and p2p
address. Already running nodes are left alone, so `up` is idempotent. `down` sends SIGTERM, waits,
SIGKILLs stragglers after a timeout, removes the pid files and reports.

Rule: only pids this tool recorded are signalled, and only after checking that the process is the node
of that home (a stale pid file never kills an unrelated process).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from client.client import Client
from client.errors import ClientError
from client.wallet import Wallet, read_password
from devtools import testnet as testnet_mod
from node.files import PUBLIC_FILE, write_public
from protocol.tx import SignedTx


class DevnetError(ClientError):
    """The local testnet could not be started, checked or stopped."""

    code = "devnet_error"


PID_FILE = "node.pid"
LOG_FILE = "node.log"
HEALTH_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 8.0
LOG_TAIL_LINES = 25


def _pid_of(home: Path) -> int | None:
    try:
        return int((home / PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _is_our_node(pid: int, home: Path) -> bool:
    """True when `pid` is alive and is `smeledger run --home <home>`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): trust the pid file we wrote
    args = [c.decode(errors="replace") for c in cmd]
    if "run" not in args or "--home" not in args:
        return False
    i = args.index("--home")
    return i + 1 < len(args) and Path(args[i + 1]).resolve() == home.resolve()


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _command(home: Path, extra: tuple[str, ...] = ()) -> list[str]:
    script = Path(sys.executable).parent / "smeledger"
    if script.exists():
        return [str(script), "run", "--home", str(home), *extra]
    return [sys.executable, "-m", "cli.main", "run", "--home", str(home), *extra]


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        data = path.read_bytes()[-64 * 1024:]
    except OSError:
        return "(no log)"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def start_node(home: Path, extra: tuple[str, ...] = ()) -> int:
    """Start `smeledger run --home HOME [extra...]` detached; returns its pid."""
    home = home.resolve()
    log = os.open(home / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PUBLIC_FILE)
    try:
        os.fchmod(log, PUBLIC_FILE)  # whatever the umask (node/files.py)
        proc = subprocess.Popen(_command(home, extra), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, cwd=str(home))
    finally:
        os.close(log)
    write_public(home / PID_FILE, f"{proc.pid}\n".encode())
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def up(directory: Path, base_port: int, *, validators: int = 4, observers: int = 1, accounts: int = 8,
       timeout: float = HEALTH_TIMEOUT_S, kdf: str = "interactive", quiet: bool = False) -> list[dict[str, Any]]:
    if not (directory / testnet_mod.NODES_FILE).exists():
        testnet_mod.create(directory, validators=validators, observers=observers, accounts=accounts,
                           base_port=base_port, kdf=kdf)
        if not quiet:
            print(f"created testnet in {directory}")
    nodes = testnet_mod.load_nodes(directory)
    first_p2p = int(str(nodes[0].get("p2p", ":0")).rsplit(":", 1)[-1]) if nodes else base_port + 1
    if first_p2p != base_port + 1 and not quiet:
        print(f"note: {directory} was created with base port {first_p2p - 1}, not {base_port}; using its "
              f"ports (run `make testnet-clean` to regenerate)")
    started: dict[str, int] = {}
    for n in nodes:
        home = directory / n["name"]
        pid = _pid_of(home)
        if pid is not None and _is_our_node(pid, home):
            if not quiet:
                print(f"{n['name']}: already running (pid {pid})")
            continue
        started[n["name"]] = start_node(home)
    deadline = time.monotonic() + timeout
    pending = {n["name"]: n for n in nodes}
    while pending:
        for name, n in list(pending.items()):
            home = directory / name
            pid = started.get(name) or _pid_of(home)
            if pid is not None and name in started and not _alive(pid):
                raise DevnetError(f"node {name} exited during startup; last lines of {home / LOG_FILE}:\n"
                                  f"{tail(home / LOG_FILE)}")
            try:
                if Client(n["admin_url"], timeout=1.0).health().ok:
                    del pending[name]
            except ClientError:
                pass
        if not pending:
            break
        if time.monotonic() > deadline:
            name = sorted(pending)[0]
            home = directory / name
            raise DevnetError(f"node {name} did not answer {pending[name]['admin_url']}/health within "
                              f"{timeout:.0f} s; last lines of {home / LOG_FILE}:\n{tail(home / LOG_FILE)}")
        time.sleep(0.1)
    return nodes


def wait_first_commit(directory: Path, nodes: list[dict[str, Any]], timeout: float) -> int:
    """Make sure the network commits: on a fresh chain submit one warm-up transfer (0.01 CNY.BANKA from
    the last demo user to itself) and wait until every node has committed a block. Returns the height."""
    clients = [Client(n["admin_url"], timeout=2.0) for n in nodes]
    heights = [c.status().height for c in clients]
    if min(heights) == 0 and max(heights) == 0:
        users = sorted((directory / "wallets").glob("user*.json"))
        if not users:
            return 0
        wallet = Wallet.load(users[-1], read_password(directory / "wallets" / "PASSWORD"))
        chain = clients[0].status().chain_id
        nonce = clients[0].account(wallet.account).nonce
        tx = SignedTx.create(wallet.key, {"chain": chain, "kind": "transfer", "nonce": nonce,
                                          "to": wallet.public_key, "asset": "CNY.BANKA", "amount": 1})
        clients[0].submit(tx)
    deadline = time.monotonic() + timeout
    while True:
        heights = []
        for c in clients:
            try:
                heights.append(c.status().height)
            except ClientError:
                heights.append(0)
        if min(heights) >= 1:
            return min(heights)
        if time.monotonic() > deadline:
            lagging = [n["name"] for n, h in zip(nodes, heights, strict=True) if h < 1]
            name = lagging[0]
            raise DevnetError(f"no block committed on {', '.join(lagging)} within {timeout:.0f} s; last lines of "
                              f"{directory / name / LOG_FILE}:\n{tail(directory / name / LOG_FILE)}")
        time.sleep(0.1)


def down(directory: Path, timeout: float = STOP_TIMEOUT_S) -> list[tuple[str, str]]:
    """Stop every node of the testnet; returns (name, outcome) rows."""
    if not directory.exists():
        return []
    nodes = testnet_mod.load_nodes(directory)
    report: list[tuple[str, str]] = []
    signalled: dict[str, int] = {}
    for n in nodes:
        home = directory / n["name"]
        pid = _pid_of(home)
        if pid is None:
            report.append((n["name"], "not running"))
        elif not _is_our_node(pid, home):
            report.append((n["name"], "not running (stale pid file)"))
            (home / PID_FILE).unlink(missing_ok=True)
        else:
            os.kill(pid, signal.SIGTERM)
            signalled[n["name"]] = pid
    t0 = time.monotonic()
    while signalled and time.monotonic() - t0 < timeout:
        for name, pid in list(signalled.items()):
            if not _alive(pid):
                report.append((name, f"stopped (pid {pid}, {time.monotonic() - t0:.1f} s)"))
                (directory / name / PID_FILE).unlink(missing_ok=True)
                del signalled[name]
        time.sleep(0.05)
    for name, pid in signalled.items():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        report.append((name, f"killed after {timeout:.0f} s (pid {pid})"))
        (directory / name / PID_FILE).unlink(missing_ok=True)
    return report


def table(nodes: list[dict[str, Any]]) -> str:
    lines = [f"{'name':<10} {'role':<10} {'admin URL':<26} p2p"]
    lines += [f"{n['name']:<10} {n['role']:<10} {n['admin_url']:<26} {n['p2p']}" for n in nodes]
    return "\n".join(lines)


def start(directory: Path, base_port: int, *, timeout: float = HEALTH_TIMEOUT_S, **create: Any) -> dict[str, Any]:
    """`up`, then wait for the first commit; returns what `smeledger testnet up` reports."""
    t0 = time.monotonic()
    nodes = up(directory, base_port, timeout=timeout, **create)
    healthy = time.monotonic() - t0
    height = wait_first_commit(directory, nodes, timeout)
    return {"dir": str(directory), "nodes": nodes, "healthy_s": round(healthy, 1), "height": height,
            "committing_s": round(time.monotonic() - t0, 1), "status_page": nodes[0]["admin_url"] + "/",
            "wallets": str(directory / "wallets"), "password_file": str(directory / "wallets" / "PASSWORD")}


def summary(doc: dict[str, Any]) -> str:
    return (f"{table(doc['nodes'])}\nall {len(doc['nodes'])} nodes healthy after {doc['healthy_s']} s and "
            f"committing (height {doc['height']}) after {doc['committing_s']} s; web status page: "
            f"{doc['status_page']}  ·  smeledger status  ·  wallets: {doc['wallets']} "
            f"(password in {doc['password_file']})")


def main(argv: list[str] | None = None) -> int:
    """`python -m devtools.devnet up|down` (kept for scripts; `smeledger testnet up|down` is the same)."""
    ap = argparse.ArgumentParser(prog="python -m devtools.devnet")
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("--dir", default=".testnet")
    u.add_argument("--base-port", type=int, default=7700)
    u.add_argument("--timeout", type=float, default=HEALTH_TIMEOUT_S)
    d = sub.add_parser("down")
    d.add_argument("--dir", default=".testnet")
    d.add_argument("--timeout", type=float, default=STOP_TIMEOUT_S)
    args = ap.parse_args(argv)
    directory = Path(args.dir)
    try:
        if args.cmd == "up":
            print(summary(start(directory, args.base_port, timeout=args.timeout)))
            return 0
        rows = down(directory, args.timeout)
        print("\n".join(f"{name:<10} {outcome}" for name, outcome in rows) or f"no testnet at {directory}")
        return 0
    except ClientError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
