"""A real multi-process testnet for integration tests: create, start, kill -9, restart, wipe, load.

Rule: every process a `Net` starts is stopped by `Net.close()` (the fixture calls it even when a test
fails); ports come from a free-port probe; loads are bounded in count and time and stop by themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from client.client import Client
from client.errors import ClientError
from client.wallet import Wallet, read_password
from devtools import devnet, testnet
from protocol.api import to_builtins
from protocol.tx import SignedTx
from tests.conftest import free_port_block

ROOT = Path(__file__).resolve().parents[2]


class Net:
    def __init__(self, directory: Path, *, accounts: int = 8) -> None:
        self.dir = directory
        self.base = free_port_block(5)
        p = subprocess.run([sys.executable, "-m", "cli.main", "testnet", "create", "--dir", str(directory), "--base-port",
                            str(self.base), "--accounts", str(accounts), "--kdf", "min"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        self.nodes = {n["name"]: n for n in testnet.load_nodes(directory)}
        self.genesis = json.loads((directory / "genesis.json").read_text())
        self.chain = self.genesis["chain_id"]
        self.validators = [v["name"] for v in self.genesis["validators"]]

    # ---- processes -------------------------------------------------------------------------------

    def home(self, name: str) -> Path:
        return Path(self.nodes[name]["home"])

    def client(self, name: str, timeout: float = 3.0) -> Client:
        return Client(self.nodes[name]["admin_url"], timeout=timeout)

    def start(self, *names: str, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        for name in names or tuple(self.nodes):
            saved = dict(os.environ)
            try:
                os.environ.update(env or {})
                devnet.start_node(self.home(name), args)
            finally:
                os.environ.clear()
                os.environ.update(saved)
        self.wait_healthy(*(names or tuple(self.nodes)))

    def wait_healthy(self, *names: str, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        for name in names:
            while True:
                try:
                    self.client(name, 1.0).health()
                    break
                except ClientError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{name} not healthy:\n{devnet.tail(self.home(name) / 'node.log')}") from None
                    time.sleep(0.1)

    def pid(self, name: str) -> int | None:
        return devnet._pid_of(self.home(name))

    def kill9(self, name: str) -> None:
        pid = self.pid(name)
        assert pid is not None, f"{name} is not running"
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        deadline = time.monotonic() + 5
        while devnet._alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self, name: str) -> int | None:
        """SIGTERM; the exit status once the node has ended (None: it was not running, or still runs 8 s
        later)."""
        pid = self.pid(name)
        if pid is None:
            return None
        os.kill(pid, signal.SIGTERM)
        return self.wait_exit(pid, 8.0)

    @staticmethod
    def wait_exit(pid: int, timeout: float) -> int | None:
        """The exit status of node process `pid` (started by this process) once it has ended; None while it
        still runs after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not our child, or reaped elsewhere: only whether it ended is known
                raise AssertionError(f"pid {pid} is not a child of the test; its exit status is lost") from None
            if done:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def wipe(self, name: str) -> None:
        data = self.home(name) / "data"
        shutil.rmtree(data, ignore_errors=True)

    def close(self) -> None:
        devnet.down(self.dir)
        out = subprocess.run(["pgrep", "-f", f"--home {self.dir}"], capture_output=True, text=True)
        for pid in out.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    # ---- observation -----------------------------------------------------------------------------

    def status(self, name: str) -> dict[str, Any] | None:
        try:
            return to_builtins(self.client(name, 1.0).status())
        except ClientError:
            return None

    def height(self, name: str) -> int:
        st = self.status(name)
        return -1 if st is None else int(st["height"])

    def primary(self) -> str:
        for name in self.validators:
            st = self.status(name)
            if st is not None and st.get("primary_name"):
                return str(st["primary_name"])
        raise AssertionError("no node reports a primary")

    def wait_height(self, names: list[str], height: int, timeout: float) -> float:
        """Seconds until every named node reached `height`; fails with the heights after `timeout`."""
        t0 = time.monotonic()
        while True:
            hs = {n: self.height(n) for n in names}
            if all(h >= height for h in hs.values()):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"height {height} not reached within {timeout}s: {hs}")
            time.sleep(0.05)

    def block_hash(self, name: str, height: int) -> str:
        return self.client(name).block(height).hash

    def assert_same_chain(self, names: list[str], upto: int, start: int = 1) -> None:
        """Every node has the same block hash at every height in [start, upto]."""
        for h in range(start, upto + 1):
            hashes = {n: self.block_hash(n, h) for n in names}
            assert len(set(hashes.values())) == 1, f"fork at height {h}: {hashes}"

    def common_root(self, names: list[str], timeout: float = 20.0) -> tuple[int, str]:
        """Wait until all nodes stop at one height with one state root (call after the load ended)."""
        deadline = time.monotonic() + timeout
        while True:
            sts = [self.status(n) for n in names]
            if all(s is not None for s in sts):
                hs = {s["height"] for s in sts if s}
                roots = {s["state_root"] for s in sts if s}
                if len(hs) == 1 and len(roots) == 1:
                    return hs.pop(), roots.pop()
            if time.monotonic() > deadline:
                raise AssertionError(f"no common height/root: {[(s or {}).get('height') for s in sts]}"
                                     f" {[(s or {}).get('state_root') for s in sts]}")
            time.sleep(0.2)

    def committed(self, name: str, hashes: list[str], wait: float = 15.0) -> set[str]:
        """Which of `hashes` the node reports committed (`GET /txs/{hash}`, as a client sees it); txs still
        pending, or not yet known to this node (gossip may still be on its way), get up to `wait` seconds
        after the first pass over all of them."""
        c = self.client(name, 5.0)
        done: set[str] = set()
        todo = list(hashes)
        deadline: float | None = None
        with ThreadPoolExecutor(8) as pool:
            while True:
                pending = []
                for h, status in zip(todo, pool.map(lambda h: c.tx(h).status, todo), strict=True):
                    if status == "committed":
                        done.add(h)
                    elif status in ("pending", "unknown"):
                        pending.append(h)
                if deadline is None:
                    deadline = time.monotonic() + wait
                if not pending or time.monotonic() > deadline:
                    return done
                todo = pending
                time.sleep(0.2)


class Load:
    """Signed transfers among the demo users from a background thread, to whichever node answers."""

    def __init__(self, net: Net, targets: list[str], *, rate: float = 100.0, max_seconds: float = 60.0,
                 senders: int = 8) -> None:
        self.net = net
        self.targets = targets
        self.rate = rate
        self.max_seconds = max_seconds
        pw = read_password(net.dir / "wallets" / "PASSWORD")
        self.wallets = [Wallet.load(net.dir / "wallets" / f"user{i:02d}.json", pw) for i in range(1, senders + 1)]
        self.nonces: dict[bytes, int] = {}
        self.accepted: list[str] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def __enter__(self) -> Load:
        for w in self.wallets:
            self.nonces[w.public_key] = self._nonce(w)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _nonce(self, w: Wallet) -> int:
        for name in self.targets:
            with contextlib.suppress(ClientError):
                return self.net.client(name).account(w.account).nonce
        raise AssertionError("no node answers for account nonces")

    def snapshot(self) -> list[str]:
        with self.lock:
            return list(self.accepted)

    def _targets(self) -> Iterator[str]:
        while True:
            yield from self.targets

    def _run(self) -> None:
        t0 = time.monotonic()
        i = 0
        targets = self._targets()
        n = len(self.wallets)
        while not self._stop.is_set() and time.monotonic() - t0 < self.max_seconds:
            w, to = self.wallets[i % n], self.wallets[(i + 1) % n]
            tx = SignedTx.create(w.key, {"chain": self.net.chain, "kind": "transfer",
                                         "nonce": self.nonces[w.public_key], "to": to.public_key,
                                         "asset": "CNY.BANKA", "amount": 1})
            for _ in range(len(self.targets)):
                name = next(targets)
                try:
                    answer = self.net.client(name, 1.0).submit([tx])
                except ClientError:  # unreachable, or intake closed while the node stops: try the next
                    continue
                if not answer.results:
                    continue
                res = answer.results[0]
                if res.accepted:
                    self.nonces[w.public_key] += 1
                    with self.lock:
                        self.accepted.append(tx.hash.hex())
                break
            i += 1
            time.sleep(1.0 / self.rate)
