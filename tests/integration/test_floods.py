"""Floods on real processes: strangers and stalled handshakes on the P2P port, slow and oversized API
clients, one sender filling its share of the mempool, a validator flooding votes for future views. In each
the flooded node keeps answering its API, its memory stays bounded and honest txs keep committing.

Each test builds a fresh 4-validator + 1-observer testnet on free ports (the `net` fixture stops every
process even when an assertion fails); every flood is bounded in time and in connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from client.errors import ClientError
from client.wallet import Wallet, read_password
from node.p2p import HandshakeError
from node.p2p.handshake import handshake
from node.p2p.stream import FrameStream
from protocol.crypto import PrivateKey
from protocol.tx import SignedTx
from tests.integration.harness import Load, Net

pytestmark = pytest.mark.integration
VALIDATORS = ["banka", "bankb", "smea", "smeb"]
ALL = [*VALIDATORS, "regulator"]
RSS_BOUND_MIB = 400  # a node holds ~60-80 MiB on this testnet; a flood must not grow it without bound
STATUS_TIMEOUT_S = 5.0


class _Tally(dict[str, int]):
    def __missing__(self, key: str) -> int:
        return 0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class Watch:
    """Asks `name` for /status every 0.5 s and samples its RSS while a flood runs (bounded by `seconds`)."""

    def __init__(self, net: Net, name: str, seconds: float) -> None:
        self.net, self.name, self.seconds = net, name, seconds
        self.unanswered: list[str] = []
        self.rss_max = 0.0
        self.polls = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(15)

    def _run(self) -> None:
        pid = self.net.pid(self.name)
        assert pid is not None
        t0 = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - t0 < self.seconds:
            self.polls += 1
            try:
                self.net.client(self.name, STATUS_TIMEOUT_S).status()
            except ClientError as exc:
                self.unanswered.append(str(exc))
            self.rss_max = max(self.rss_max, rss_mib(pid))
            self._stop.wait(0.5)


def run_async_flood(make: Callable[[], object], seconds: float) -> threading.Thread:
    """Run the coroutine `make()` returns in its own thread and loop, for at most `seconds`."""
    async def bounded() -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await make()  # type: ignore[misc]

    t = threading.Thread(target=asyncio.run, args=(bounded(),), daemon=True)
    t.start()
    return t


def p2p_port(net: Net, name: str) -> int:
    return int(str(net.nodes[name]["p2p"]).rsplit(":", 1)[1])


async def stranger_flood(port: int, chain: str, stalled: int, workers: int, counts: dict[str, int]) -> None:
    """`stalled` connections that never speak, `workers` loops of handshakes with unknown keys and of
    random bytes, until cancelled."""
    held = []
    for _ in range(stalled):
        with contextlib.suppress(OSError):
            held.append(await asyncio.open_connection("127.0.0.1", port))

    async def unknown_keys() -> None:
        while True:
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                counts["refused"] += 1
                await asyncio.sleep(0.05)
                continue
            try:
                await handshake(FrameStream(r, 1 << 16), w, PrivateKey(os.urandom(32)), chain, initiator=True,
                                is_allowed=lambda _k: True, timeout=2.0)
                counts["admitted"] += 1
            except (HandshakeError, OSError):  # refused: what a stranger must get
                counts["refused"] += 1
            finally:
                w.transport.abort()

    async def garbage() -> None:
        while True:
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(os.urandom(4096))
                await w.drain()
                await asyncio.sleep(0.05)
                w.transport.abort()
                counts["garbage"] += 1
            except OSError:
                await asyncio.sleep(0.05)

    try:
        await asyncio.gather(*(unknown_keys() for _ in range(workers)), garbage())
    finally:
        for _r, w in held:
            w.transport.abort()


def assert_honest_progress(net: Net, load: Load, watch: Watch, name: str) -> None:
    assert watch.polls >= 5 and not watch.unanswered, f"{name} stopped answering: {watch.unanswered[:3]}"
    assert watch.rss_max < RSS_BOUND_MIB, f"{name} grew to {watch.rss_max:.0f} MiB"
    accepted = load.snapshot()
    assert len(accepted) > 50, "the honest load got too little in"
    assert net.committed(name, accepted, wait=30) == set(accepted), "honest txs stopped committing"


def test_strangers_and_stalled_handshakes_on_the_p2p_port_leave_the_node_serving_and_committing(
        net: Net) -> None:
    net.start()
    target = "banka"
    counts: dict[str, int] = _Tally()
    with Load(net, [target], rate=40, max_seconds=25) as load, Watch(net, target, 25) as watch:
        net.wait_height(ALL, 2, timeout=30)
        flood = run_async_flood(lambda: stranger_flood(p2p_port(net, target), net.chain, 200, 4, counts), 20)
        # a validator restarted during the flood must still get its links back to the flooded node
        net.kill9("smeb")
        net.start("smeb")
        net.wait_height(["smeb"], max(net.height(n) for n in ALL if n != "smeb"), timeout=30)
        flood.join(30)
    assert counts["admitted"] == 0 and counts["refused"] > 20, counts
    assert_honest_progress(net, load, watch, target)
    assert net.client("smeb").peers().count == 4


async def slow_api_flood(port: int, slow: int, counts: dict[str, int]) -> None:
    """`slow` clients trickling a request head one byte a second, and a loop of bodies announced far
    larger than any limit, until cancelled."""
    async def trickle() -> None:
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            counts["refused"] += 1
            return
        try:
            for b in b"POST /txs HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n":
                w.write(bytes([b]))
                await w.drain()
                await asyncio.sleep(1.0)
        except OSError:
            counts["cut"] += 1
        finally:
            w.transport.abort()

    async def oversized() -> None:
        while True:
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(b"POST /txs HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
                        b"Content-Length: 1073741824\r\n\r\n" + b"\x00" * 65536)
                await w.drain()
                line = await asyncio.wait_for(r.readline(), 5)
                counts["answered_" + line.split(b" ")[1].decode() if line else "closed"] += 1
                w.transport.abort()
            except (OSError, TimeoutError, IndexError):
                counts["cut"] += 1
                await asyncio.sleep(0.05)

    await asyncio.gather(*(trickle() for _ in range(slow)), oversized(), oversized())


def test_slow_and_oversized_api_clients_leave_the_node_answering_others_and_committing(net: Net) -> None:
    net.start()
    target = "bankb"
    api_port = int(str(net.nodes[target]["admin_url"]).rsplit(":", 1)[1])
    counts: dict[str, int] = _Tally()
    with Load(net, [target], rate=40, max_seconds=25) as load, Watch(net, target, 25) as watch:
        net.wait_height(ALL, 2, timeout=30)
        flood = run_async_flood(lambda: slow_api_flood(api_port, 200, counts), 20)
        flood.join(30)
    refused_big = sum(v for k, v in counts.items() if k.startswith("answered_4")) + counts["closed"] + counts["cut"]
    assert refused_big > 0 and not any(k.startswith("answered_2") for k in counts), counts
    assert_honest_progress(net, load, watch, target)


def test_one_sender_flooding_the_mempool_gets_its_share_and_others_keep_committing(net: Net) -> None:
    net.start()
    target = "smea"
    pw = read_password(net.dir / "wallets" / "PASSWORD")
    hog = Wallet.load(net.dir / "wallets" / "user08.json", pw)
    client = net.client(target, 30.0)
    nonce = client.account(hog.account).nonce
    with Load(net, [target], rate=40, max_seconds=25, senders=6) as load, Watch(net, target, 25) as watch:
        net.wait_height(ALL, 2, timeout=30)
        codes: dict[str, int] = _Tally()
        # far ahead of its next nonce (never ready: not work), then more than its share of the pool
        txs = [SignedTx.create(hog.key, {"chain": net.chain, "kind": "transfer", "nonce": nonce + 1 + i,
                                         "to": hog.public_key, "asset": "CNY.BANKA", "amount": 1})
               for i in range(1500)]
        for start in range(0, len(txs), 500):
            for row in client.submit(txs[start:start + 500]).results:
                codes["accepted" if row.accepted else row.code] += 1
        time.sleep(5)
    assert codes["accepted"] <= 1000 and codes["sender_limit"] + codes["nonce_too_high"] >= 500, dict(codes)
    assert net.client(target).health().ok, "gapped txs of one sender made the node report a stall"
    assert_honest_progress(net, load, watch, target)


def test_a_validator_flooding_votes_for_future_views_leaves_the_others_serving_and_committing(net: Net) -> None:
    net.start("banka", "bankb", "smea", "regulator")
    net.start("smeb", args=("--byzantine", "flood"))
    target = "banka"
    with Load(net, ["banka", "bankb", "smea"], rate=40, max_seconds=25) as load, Watch(net, target, 25) as watch:
        net.wait_height(ALL, 2, timeout=30)
        time.sleep(20)
    log = (net.home("smeb") / "node.log").read_text()
    assert '"byzantine_mode_on"' in log
    assert_honest_progress(net, load, watch, target)
    text = net.client(target).metrics()
    refused = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("smeledger_consensus_replica_events_total")
                  and ('"dropped_window"' in line or '"dropped_sender_limit"' in line))
    assert refused > 100, "the flood of future-view votes was never bounded"
