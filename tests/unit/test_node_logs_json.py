"""Every line a node writes is one JSON object: after a barrage of malformed HTTP (a NUL in a header, a
9 KiB request line, bad chunked encoding, TLS on the plain port, a bad HTTP version) the node's log holds
only JSON lines, each refusal is one throttled `api_bad_http` event instead of a traceback, and the
node still answers. Library logging and thread exceptions go through the same JSON formatter."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
from pathlib import Path

from client.client import Client
from devtools import devnet
from node.logging import configure
from tests.conftest import free_port_block

ROOT = Path(__file__).resolve().parents[2]
BARRAGE = [
    b"GET /status HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n",
    b"GET /" + b"a" * 9 * 1024 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /txs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    b"zz\r\nhello\r\n0\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(64),
    b"GET / HTTP/9.9\r\n\r\n",
    b"G\x00T / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 200) for i in range(200)) + b"\r\n",
]


def _send(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(raw)
        try:
            return s.recv(64)
        except OSError:
            return b""


def test_a_node_writes_only_json_lines_after_a_malformed_http_barrage(tmp_path: Path) -> None:
    base = free_port_block(1)
    net = tmp_path / "net"
    home = net / "banka"
    try:
        devnet.up(net, base, validators=1, observers=0, accounts=0, kdf="min", quiet=True)  # waits for /health
        client = Client(f"http://127.0.0.1:{base + 1001}", timeout=1)
        answers = [_send(base + 1001, raw) for raw in BARRAGE * 5]
        assert all((a.startswith(b"HTTP/1.") and b" 400 " in a) or a == b"" for a in answers), answers
        assert client.status().height >= 0  # still serving
    finally:
        devnet.down(net)
    lines = (home / devnet.LOG_FILE).read_text().splitlines()
    docs = []
    for n, line in enumerate(lines, 1):
        try:
            docs.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"node.log line {n} is not JSON: {line[:200]}") from None
    refused = [d for d in docs if d["event"] == "api_bad_http"]
    assert refused and all(d["node"] == "banka" and d["code"] and d["error"] for d in refused)
    assert len(refused) <= len(BARRAGE), "repeats of one kind of refusal are throttled"  # 35 bad requests sent
    assert not [d for d in docs if "exception" in d], "no tracebacks for a client's malformed request"
    assert any(d["event"] == "node_stopped" for d in docs)


def test_library_records_warnings_and_thread_exceptions_are_json() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, threading.excepthook)
    try:
        configure("info", out, node="n1")
        logging.getLogger("some.library").warning("disk %s is slow", "sda")
        t = threading.Thread(target=lambda: 1 / 0, name="worker")
        t.start()
        t.join()
        logging.getLogger("py.warnings").warning("DeprecationWarning: old")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        threading.excepthook = saved[2]
        logging.captureWarnings(False)
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    lib = docs[0]
    assert (lib["event"], lib["logger"], lib["message"], lib["node"], lib["level"]) == (
        "library_logged", "some.library", "disk sda is slow", "n1", "warning")
    crash = docs[1]
    assert crash["logger"] == "smeledger.uncaught" and "ZeroDivisionError" in crash["exception"]
    assert docs[2]["logger"] == "py.warnings"
