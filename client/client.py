"""Python client SDK for the node API (synchronous, stdlib urllib): the CLI, load tools and tests use it.

`Client(url)` submits signed txs (msgpack), reads status, txs, blocks and ledger objects, verifies an
account's Merkle proofs against a state root (`verify_account_proof`) and waits for commits.
Rule: every failure is a `ClientError` carrying the node's error code and HTTP status (or `unreachable`
when the node cannot be reached); no urllib exception escapes.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from client.errors import ClientError
from protocol import codec
from protocol.errors import ProtocolError
from protocol.merkle import Proof, verify_proof
from protocol.tx import SignedTx

DEFAULT_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MSGPACK = "application/msgpack"


class Client:
    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT, token: str | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.token = token

    # ---- transport ---------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, body: bytes | None = None, content_type: str | None = None,
                ok_statuses: Sequence[int] = (200,), auth: bool = False) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status, raw, ctype = resp.status, resp.read(MAX_RESPONSE_BYTES), resp.headers.get_content_type()
        except urllib.error.HTTPError as exc:
            status, raw, ctype = exc.code, exc.read(MAX_RESPONSE_BYTES), exc.headers.get_content_type()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"cannot reach {self.url}: {reason}", code="unreachable") from None
        doc: Any = raw
        if ctype == "application/json":
            try:
                doc = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ClientError(f"{self.url}{path}: invalid JSON in the response", code="bad_response",
                                  http_status=status) from None
        if status not in ok_statuses:
            code = doc.get("error", "http_error") if isinstance(doc, dict) else "http_error"
            msg = doc.get("message", f"HTTP {status}") if isinstance(doc, dict) else f"HTTP {status}"
            raise ClientError(f"{method} {path}: {msg}", code=code, http_status=status, body=doc)
        return status, doc

    def get(self, path: str, **params: Any) -> Any:
        q = {k: v for k, v in params.items() if v is not None}
        if q:
            path += "?" + urllib.parse.urlencode(q)
        return self.request("GET", path)[1]

    # ---- node ------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = self.get("/health")
        return out

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = self.get("/status")
        return out

    def peers(self) -> dict[str, Any]:
        out: dict[str, Any] = self.get("/peers")
        return out

    # ---- txs -------------------------------------------------------------------------------------

    def submit(self, txs: SignedTx | bytes | Sequence[SignedTx | bytes]) -> dict[str, Any]:
        """POST one signed tx or a batch as msgpack; returns {accepted, rejected, results}.

        A full mempool (503) returns the document too, with `error: mempool_full` (retry the rejected)."""
        if isinstance(txs, (SignedTx, bytes)):
            body = txs.raw if isinstance(txs, SignedTx) else txs
        else:
            items = [t.raw if isinstance(t, SignedTx) else t for t in txs]
            try:
                body = codec.encode([codec.decode(r) for r in items])
            except ProtocolError as exc:
                raise ClientError(f"a tx in the batch is not canonical msgpack: {exc.message}",
                                  code="bad_tx") from None
        _status, doc = self.request("POST", "/txs", body=body, content_type=MSGPACK, ok_statuses=(200, 503))
        return doc if isinstance(doc, dict) else {"results": []}

    def tx(self, tx_hash: str | bytes) -> dict[str, Any]:
        h = tx_hash.hex() if isinstance(tx_hash, bytes) else tx_hash
        _s, doc = self.request("GET", f"/txs/{h}", ok_statuses=(200, 404))
        if isinstance(doc, dict) and doc.get("error") not in (None, "not_found"):
            raise ClientError(doc.get("message", "bad answer"), code=doc["error"])
        out: dict[str, Any] = doc
        return out

    def wait_for_commit(self, tx_hash: str | bytes, timeout: float = 30.0, poll: float = 0.1) -> dict[str, Any]:
        """Poll until the tx is committed or failed; raises ClientError(code="timeout") otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.tx(tx_hash)
            if doc.get("status") in ("committed", "failed"):
                return doc
            if time.monotonic() >= deadline:
                raise ClientError(f"tx {doc.get('hash')} not committed within {timeout} s "
                                  f"(last status: {doc.get('status')})", code="timeout")
            time.sleep(poll)

    # ---- chain and ledger ----------------------------------------------------------------------------

    def block(self, height: int) -> dict[str, Any]:
        out: dict[str, Any] = self.get(f"/blocks/{int(height)}")
        return out

    def blocks(self, limit: int = 20) -> dict[str, Any]:
        out: dict[str, Any] = self.get("/blocks", limit=limit)
        return out

    def account(self, account_id: str | bytes, proof: bool = False) -> dict[str, Any]:
        aid = account_id.hex() if isinstance(account_id, bytes) else account_id
        out: dict[str, Any] = self.get(f"/accounts/{aid}", proof=1 if proof else None)
        return out

    def verified_account(self, account_id: str | bytes, timeout: float = 10.0) -> dict[str, Any]:
        """The account, with its proofs checked against a committed header (see `check_account_proof`)."""
        return self.check_account_proof(self.account(account_id, proof=True), timeout)

    def check_account_proof(self, doc: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Check an `/accounts/{id}?proof=1` answer against the header of block height+1, which commits
        to the state root after `height` (waits up to `timeout` for that block to be committed).
        Raises ClientError (code `bad_proof`) when the root or a proof does not match."""
        proof = doc.get("proof")
        if not isinstance(proof, dict):
            raise ClientError("the answer carries no proof (ask with proof=1)", code="no_proof")
        deadline = time.monotonic() + timeout
        while True:
            try:
                header = self.block(int(proof["height"]) + 1)["header"]
                break
            except ClientError as exc:
                if exc.code != "not_found" or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
        if header["state_root"] != proof["state_root"] or not verify_account_proof(doc, header["state_root"]):
            raise ClientError("account proof does not match the committed header", code="bad_proof")
        doc["verified_height"] = int(proof["height"]) + 1
        return doc

    def query(self, thing: str, ident: str) -> dict[str, Any]:
        out: dict[str, Any] = self.get(f"/{thing}/{urllib.parse.quote(ident, safe='')}")
        return out

    def events(self, account: str | None = None, kind: str | None = None, from_height: int | None = None,
               limit: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = self.get("/events", account=account, kind=kind, from_height=from_height, limit=limit)
        return out

    def set_time_offset(self, offset_ms: int) -> dict[str, Any]:
        body = json.dumps({"offset_ms": offset_ms}).encode()
        _s, doc = self.request("POST", "/admin/time-offset", body=body, content_type="application/json", auth=True)
        out: dict[str, Any] = doc
        return out


def verify_account_proof(doc: dict[str, Any], state_root: str | bytes | None = None) -> bool:
    """Check every proof in an `/accounts/{id}?proof=1` answer against `state_root` (hex or bytes;
    default: the root the answer names; pass a root from a committed header to trust only the chain)."""
    proof = doc.get("proof")
    if not isinstance(proof, dict) or not isinstance(proof.get("proofs"), list):
        raise ClientError("the answer carries no proof (ask with proof=1)", code="no_proof")
    root_hex = state_root.hex() if isinstance(state_root, bytes) else (state_root or proof.get("state_root"))
    try:
        root = bytes.fromhex(str(root_hex))
        for item in proof["proofs"]:
            value = item.get("value")
            p = Proof.from_value({"key": bytes.fromhex(item["key"]),
                                  "value": bytes.fromhex(value) if value is not None else None,
                                  "entries": [bytes.fromhex(e) for e in item["entries"]],
                                  "siblings": [bytes.fromhex(s) for s in item["siblings"]]})
            if not verify_proof(root, p):
                return False
    except (ValueError, KeyError, TypeError, ProtocolError):
        return False
    return True
