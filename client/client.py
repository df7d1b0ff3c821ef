"""The synchronous Python SDK (`Client`, stdlib urllib): the CLI, the dev tools and the tests use it.

    c = Client("http://127.0.0.1:8701")                 # or a list of node URLs: failover in order
    receipt = c.transfer(wallet, to=bob, asset="CNY.BANKA", amount=150_00).wait()

Every call is an operation of `client.ops` driven here with blocking I/O; `client.aio.AsyncClient`
drives the same operations with aiohttp, so the two have one surface and one behaviour. Answers are the
typed documents of `protocol.api` (`Status`, `TxStatus`, `Receipt`, `Account`, ...).
Rule: every failure is a `ClientError` subclass carrying a stable code (the node's error code, the
receipt's code, or `unreachable`/`timeout`/`bad_response`); no urllib exception escapes. A node that
cannot be reached is skipped for the next URL, and a followed tx is re-submitted there by its bytes.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from client import discovery, ops
from client.errors import ClientError, Unreachable
from client.kinds import KindBuilders
from client.light import Trust
from client.wallet import Wallet
from protocol import api
from protocol.block import BlockHeader
from protocol.tx import SignedTx

__all__ = ["Client", "Submitted"]

T = TypeVar("T")
DEFAULT_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


def normalize_urls(url: str | Sequence[str]) -> list[str]:
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise ClientError("no node URL given", code="usage")
    return [(u if u.startswith(("http://", "https://")) else "http://" + u).rstrip("/") for u in urls]


class NodeList:
    """The node URLs a client may use, the one that answered last first (shared by both drivers)."""

    def __init__(self, url: str | Sequence[str], timeout: float, token: str | None) -> None:
        self.urls = normalize_urls(url)
        self.current = 0
        self.timeout = timeout
        self.token = token

    @property
    def url(self) -> str:
        return self.urls[self.current]

    def order(self) -> list[int]:
        n = len(self.urls)
        return [(self.current + i) % n for i in range(n)]

    def headers(self, req: ops.Request) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if req.content_type:
            h["Content-Type"] = req.content_type
        if req.auth and self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    def answered(self, i: int, req: ops.Request, status: int, ctype: str, body: bytes) -> ops.Response:
        self.current = i
        if status not in req.ok:
            raise ops.error_of(status, ctype, body, f"{req.method} {req.path.split('?')[0]}")
        return ops.Response(status, ctype, body, self.urls[i])

    def unreachable(self, errors: list[str]) -> Unreachable:
        return Unreachable("cannot reach " + "; ".join(errors))


@dataclass(frozen=True, slots=True)
class Submitted:
    """A tx a node accepted: `wait()` follows it to a final status and returns its `Receipt`."""

    client: Client
    tx: SignedTx
    sender: bytes | None = None

    @property
    def hash(self) -> str:
        return self.tx.hash_hex

    def status(self) -> api.TxStatus:
        return self.client.tx(self.hash)

    def follow(self, timeout: float = ops.DEFAULT_WAIT_S) -> api.TxStatus:
        """The final status (committed, failed or dropped) without raising for failed or dropped."""
        return self.client.run(ops.follow(self.hash, self.tx.raw, timeout))

    def wait(self, timeout: float = ops.DEFAULT_WAIT_S) -> api.Receipt:
        """The receipt once committed; raises TxFailed (receipt code), TxDropped or TxTimeout."""
        return self.client.run(ops.wait(self.hash, self.tx.raw, timeout, self.client.session, self.sender))


class Client(KindBuilders):
    """Blocking client of one node (or several, for failover). Not for sharing between threads."""

    def __init__(self, url: str | Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, token: str | None = None) -> None:
        self.nodes = NodeList(url, timeout, token)
        self.session = ops.Session()

    @classmethod
    def discover(cls, node: str | None = None, testnet: str | None = None, **kw: Any) -> Client:
        """A client of the node `--node`/`SMELEDGER_NODE`/the testnet directory/the default names
        (`client.discovery`); on a testnet, its other nodes take over when the first cannot be reached."""
        return cls(list(discovery.resolve(node, testnet).urls), **kw)

    @property
    def url(self) -> str:
        return self.nodes.url

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release (urllib keeps no connections); here for parity with AsyncClient."""

    # ---- the driver -------------------------------------------------------------------------------

    def _http(self, req: ops.Request) -> ops.Response:
        errors = []
        for i in self.nodes.order():
            url = self.nodes.urls[i]
            r = urllib.request.Request(url + req.path, data=req.body, method=req.method,
                                       headers=self.nodes.headers(req))
            try:
                with urllib.request.urlopen(r, timeout=self.nodes.timeout) as resp:
                    status, body, ctype = resp.status, resp.read(MAX_RESPONSE_BYTES), resp.headers.get_content_type()
            except urllib.error.HTTPError as exc:
                status, body, ctype = exc.code, exc.read(MAX_RESPONSE_BYTES), exc.headers.get_content_type()
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
                continue
            return self.nodes.answered(i, req, status, ctype, body)
        raise self.nodes.unreachable(errors)

    def run(self, op: ops.Op[T]) -> T:
        """Drive one operation of `client.ops` to its result."""
        try:
            item = next(op)
            while True:
                try:
                    if isinstance(item, ops.Request):
                        value: Any = self._http(item)
                    elif isinstance(item, ops.Sleep):
                        time.sleep(item.seconds)
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

    def health(self) -> api.Health:
        return self.run(ops.get("/health", api.Health))

    def status(self) -> api.Status:
        """Height, view, primary, peers, mempool size, sync state (DESIGN section 6)."""
        return self.run(ops.get("/status", api.Status))

    def peers(self) -> api.Peers:
        return self.run(ops.get("/peers", api.Peers))

    def metrics(self) -> str:
        """The node's Prometheus text."""
        return self.run(ops.text("/metrics"))

    # ---- txs ---------------------------------------------------------------------------------------

    def send_kind(self, wallet: Wallet, kind: str, values: dict[str, Any], nonce: int | None = None) -> Submitted:
        """Check, build, sign and submit a tx of any kind from its field values (what every builder calls);
        the nonce is the wallet's next one, tracked here, unless given."""
        tx = self.run(ops.send(self.session, wallet, kind, values, nonce))
        return Submitted(self, tx, wallet.public_key if nonce is None else None)

    def send(self, tx: SignedTx) -> Submitted:
        """Submit one signed tx (built elsewhere); raises TxRejected when the node refuses it."""
        self.run(ops.submit_one(tx.raw, f"{tx.kind} {tx.hash_hex}"))
        return Submitted(self, tx)

    def submit(self, txs: SignedTx | bytes | Sequence[SignedTx | bytes]) -> api.SubmitResult:
        """POST one signed tx or a batch; the per-tx rows (accepted or rejected with a code)."""
        items = [txs] if isinstance(txs, (SignedTx, bytes)) else list(txs)
        return self.run(ops.submit([t.raw if isinstance(t, SignedTx) else t for t in items]))

    def tx(self, tx_hash: str | bytes) -> api.TxStatus:
        """`pending`, `committed`, `failed`, `dropped` or `unknown` (never raises for a 404)."""
        return self.run(ops.tx_status(tx_hash))

    def follow(self, tx_hash: str | bytes, timeout: float = ops.DEFAULT_WAIT_S) -> api.TxStatus:
        """Poll until the tx is final (committed, failed or dropped); raises TxTimeout."""
        h = tx_hash.hex() if isinstance(tx_hash, bytes) else tx_hash
        return self.run(ops.follow(h, None, timeout))

    def wait(self, tx_hash: str | bytes, timeout: float = ops.DEFAULT_WAIT_S) -> api.Receipt:
        """The receipt of a committed tx; raises TxFailed, TxDropped or TxTimeout."""
        h = tx_hash.hex() if isinstance(tx_hash, bytes) else tx_hash
        return self.run(ops.wait(h, None, timeout))

    def next_nonce(self, wallet: Wallet) -> int:
        """Reserve the wallet's next nonce (asked of the node once, then counted here)."""
        return self.run(ops.reserve_nonce(self.session, wallet.public_key))

    def reset_nonces(self) -> None:
        self.session.nonces.clear()

    def open_memo(self, wallet: Wallet, tx_hash: str | bytes) -> str:
        """The text of a committed transfer's memo, opened with the recipient's wallet."""
        return self.run(ops.open_memo(wallet, tx_hash))

    # ---- chain and ledger --------------------------------------------------------------------------

    def block(self, height: int) -> api.Block:
        return self.run(ops.get(f"/blocks/{int(height)}", api.Block))

    def blocks(self, limit: int = 20, before: int | None = None) -> api.BlockList:
        return self.run(ops.get("/blocks", api.BlockList, limit=limit, before=before))

    def block_bytes(self, height: int) -> bytes:
        return self.run(ops.block_bytes(height))

    def account(self, account_id: str | bytes, proof: bool = False) -> api.Account:
        return self.run(ops.account(account_id, proof))

    def verified_account(self, account_id: str | bytes, trust: Trust, timeout: float = 10.0) -> api.Account:
        """The account as a light client sees it: every returned balance, role and nonce checked against
        its Merkle proof, the proofs against the state root in the header of block height+2 (pipelined:
        block h carries the root after h-2), whose commit certificate verifies against the validators of
        `trust` (client/light.py); raises ProofError. Waits up to `timeout` for that block: an idle chain
        makes none."""
        return self.run(ops.verified_account(account_id, trust, timeout))

    def check_account_proof(self, acc: api.Account, trust: Trust, timeout: float = 10.0) -> api.Account:
        """`verified_account` for an answer already fetched with `account(id, proof=True)`."""
        return self.run(ops.check_account(acc, trust, None, timeout))

    def committed_header(self, trust: Trust, height: int, timeout: float = 10.0) -> BlockHeader:
        """The header of block `height`, once its commit certificate verifies against `trust`."""
        return self.run(ops.committed_header(trust, height, timeout))

    def query(self, thing: str, ident: str | bytes) -> dict[str, Any]:
        """A ledger object: thing is assets, receivables, loans, campaigns, collateral, fx-quotes, credit,
        trace (by tx hash)."""
        return self.run(ops.query(thing, ident))

    def events(self, account: str | None = None, kind: str | None = None, from_height: int | None = None,
               limit: int | None = None) -> api.EventPage:
        """Events, oldest first, filtered by account and/or kind (`more` says whether a later page exists)."""
        return self.run(ops.get("/events", api.EventPage, account=account, kind=kind, from_height=from_height,
                                limit=limit))

    # ---- operator (testnet) ------------------------------------------------------------------------

    def time_offset(self) -> api.TimeOffset:
        return self.run(ops.get("/admin/time-offset", api.TimeOffset))

    def set_time_offset(self, offset_ms: int) -> api.TimeOffset:
        """Move testnet block time forward (operator: needs the node's admin token)."""
        return self.run(ops.post_json("/admin/time-offset", api.TimeOffsetRequest(offset_ms=offset_ms),
                                      api.TimeOffset, auth=True))
