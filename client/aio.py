"""The asynchronous Python SDK (`AsyncClient`, aiohttp): the same surface as `client.Client`.

    async with AsyncClient("http://127.0.0.1:8701") as c:
        receipt = await (await c.transfer(wallet, to=bob, asset="CNY.BANKA", amount=150_00)).wait()

It drives the same `client.ops` operations as the blocking client, with `await` for I/O and sleeps, so
nonces, failover, re-submission by hash and the error codes behave identically.
Rule: one aiohttp session per client, opened on first use and closed by `close()` / `async with`; every
request has the client's timeout; every failure is a `ClientError` with a stable code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import aiohttp

from client import discovery, ops
from client.client import DEFAULT_TIMEOUT, MAX_RESPONSE_BYTES, NodeList
from client.errors import ClientError
from client.kinds import AsyncKindBuilders
from client.light import Trust
from client.wallet import Wallet
from protocol import api
from protocol.block import BlockHeader
from protocol.tx import SignedTx

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AsyncSubmitted:
    """A tx a node accepted: `await wait()` follows it to a final status and returns its `Receipt`."""

    client: AsyncClient
    tx: SignedTx
    sender: bytes | None = None

    @property
    def hash(self) -> str:
        return self.tx.hash_hex

    async def status(self) -> api.TxStatus:
        return await self.client.tx(self.hash)

    async def follow(self, timeout: float = ops.DEFAULT_WAIT_S) -> api.TxStatus:
        return await self.client.run(ops.follow(self.hash, self.tx.raw, timeout))

    async def wait(self, timeout: float = ops.DEFAULT_WAIT_S) -> api.Receipt:
        """The receipt once committed; raises TxFailed (receipt code), TxDropped or TxTimeout."""
        return await self.client.run(ops.wait(self.hash, self.tx.raw, timeout, self.client.session, self.sender))


class AsyncClient(AsyncKindBuilders):
    """Non-blocking client of one node (or several, for failover). Use one per event loop."""

    def __init__(self, url: str | Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, token: str | None = None) -> None:
        self.nodes = NodeList(url, timeout, token)
        self.session = ops.Session()
        self._http_session: aiohttp.ClientSession | None = None

    @classmethod
    def discover(cls, node: str | None = None, testnet: str | None = None, **kw: Any) -> AsyncClient:
        """A client of the node `--node`/`SMELEDGER_NODE`/the testnet directory/the default names
        (`client.discovery`); on a testnet, its other nodes take over when the first cannot be reached."""
        return cls(list(discovery.resolve(node, testnet).urls), **kw)

    @property
    def url(self) -> str:
        return self.nodes.url

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http_session is not None:
            await self._http_session.close()
            self._http_session = None

    # ---- the driver -------------------------------------------------------------------------------

    async def _http(self, req: ops.Request) -> ops.Response:
        if self._http_session is None:
            self._http_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.nodes.timeout))
        errors = []
        for i in self.nodes.order():
            url = self.nodes.urls[i]
            try:
                async with self._http_session.request(req.method, url + req.path, data=req.body,
                                                      headers=self.nodes.headers(req)) as r:
                    body = await r.content.read(MAX_RESPONSE_BYTES)
                    status, ctype = r.status, r.content_type
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                errors.append(f"{url}: {exc or type(exc).__name__}")
                continue
            return self.nodes.answered(i, req, status, ctype, body)
        raise self.nodes.unreachable(errors)

    async def run(self, op: ops.Op[T]) -> T:
        """Drive one operation of `client.ops` to its result."""
        try:
            item = next(op)
            while True:
                try:
                    if isinstance(item, ops.Request):
                        value: Any = await self._http(item)
                    elif isinstance(item, ops.Sleep):
                        await asyncio.sleep(item.seconds)
                        value = None
                    else:
                        value = time.monotonic()
                except ClientError as exc:
                    item = op.throw(exc)
                    continue
                item = op.send(value)
        except StopIteration as stop:
            result: T = stop.value
            return result

    # ---- node --------------------------------------------------------------------------------------

    async def health(self) -> api.Health:
        return await self.run(ops.get("/health", api.Health))

    async def status(self) -> api.Status:
        return await self.run(ops.get("/status", api.Status))

    async def peers(self) -> api.Peers:
        return await self.run(ops.get("/peers", api.Peers))

    async def metrics(self) -> str:
        return await self.run(ops.text("/metrics"))

    # ---- txs ---------------------------------------------------------------------------------------

    async def send_kind(self, wallet: Wallet, kind: str, values: dict[str, Any], nonce: int | None = None) -> AsyncSubmitted:
        """Check, build, sign and submit a tx of any kind from its field values (what every builder calls)."""
        tx = await self.run(ops.send(self.session, wallet, kind, values, nonce))
        return AsyncSubmitted(self, tx, wallet.public_key if nonce is None else None)

    async def send(self, tx: SignedTx) -> AsyncSubmitted:
        await self.run(ops.submit_one(tx.raw, f"{tx.kind} {tx.hash_hex}"))
        return AsyncSubmitted(self, tx)

    async def submit(self, txs: SignedTx | bytes | Sequence[SignedTx | bytes]) -> api.SubmitResult:
        items = [txs] if isinstance(txs, (SignedTx, bytes)) else list(txs)
        return await self.run(ops.submit([t.raw if isinstance(t, SignedTx) else t for t in items]))

    async def tx(self, tx_hash: str | bytes) -> api.TxStatus:
        return await self.run(ops.tx_status(tx_hash))

    async def follow(self, tx_hash: str | bytes, timeout: float = ops.DEFAULT_WAIT_S) -> api.TxStatus:
        h = tx_hash.hex() if isinstance(tx_hash, bytes) else tx_hash
        return await self.run(ops.follow(h, None, timeout))

    async def wait(self, tx_hash: str | bytes, timeout: float = ops.DEFAULT_WAIT_S) -> api.Receipt:
        h = tx_hash.hex() if isinstance(tx_hash, bytes) else tx_hash
        return await self.run(ops.wait(h, None, timeout))

    async def next_nonce(self, wallet: Wallet) -> int:
        return await self.run(ops.reserve_nonce(self.session, wallet.public_key))

    def reset_nonces(self) -> None:
        self.session.nonces.clear()

    async def open_memo(self, wallet: Wallet, tx_hash: str | bytes) -> str:
        return await self.run(ops.open_memo(wallet, tx_hash))

    # ---- chain and ledger --------------------------------------------------------------------------

    async def block(self, height: int) -> api.Block:
        return await self.run(ops.get(f"/blocks/{int(height)}", api.Block))

    async def blocks(self, limit: int = 20, before: int | None = None) -> api.BlockList:
        return await self.run(ops.get("/blocks", api.BlockList, limit=limit, before=before))

    async def block_bytes(self, height: int) -> bytes:
        return await self.run(ops.block_bytes(height))

    async def account(self, account_id: str | bytes, proof: bool = False) -> api.Account:
        return await self.run(ops.account(account_id, proof))

    async def verified_account(self, account_id: str | bytes, trust: Trust, timeout: float = 10.0) -> api.Account:
        return await self.run(ops.verified_account(account_id, trust, timeout))

    async def check_account_proof(self, acc: api.Account, trust: Trust, timeout: float = 10.0) -> api.Account:
        return await self.run(ops.check_account(acc, trust, None, timeout))

    async def committed_header(self, trust: Trust, height: int, timeout: float = 10.0) -> BlockHeader:
        return await self.run(ops.committed_header(trust, height, timeout))

    async def query(self, thing: str, ident: str | bytes) -> dict[str, Any]:
        return await self.run(ops.query(thing, ident))

    async def events(self, account: str | None = None, kind: str | None = None, from_height: int | None = None,
                     limit: int | None = None) -> api.EventPage:
        return await self.run(ops.get("/events", api.EventPage, account=account, kind=kind,
                                      from_height=from_height, limit=limit))

    # ---- operator (testnet) ------------------------------------------------------------------------

    async def time_offset(self) -> api.TimeOffset:
        return await self.run(ops.get("/admin/time-offset", api.TimeOffset))

    async def set_time_offset(self, offset_ms: int) -> api.TimeOffset:
        return await self.run(ops.post_json("/admin/time-offset", api.TimeOffsetRequest(offset_ms=offset_ms),
                                            api.TimeOffset, auth=True))
