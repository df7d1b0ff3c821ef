"""Fixtures of the unit tests that need a ledger with an object of every kind: `docs_story` runs the
examples of docs/sdk.md, in order, against an in-process node (in `tmp_path/.testnet`, found by the SDK
through SMELEDGER_NODE) and gives the node and the examples' variables (wallets, receipts)."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools import testnet as testnet_mod
from node.service import Node
from tests.conftest import ephemeral, free_port_block, load_home

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"
_BLOCK = re.compile(r"^#{2,3} (?P<title>.+?)\n(?P<body>.*?)(?=^#{2,3} |\Z)", re.S | re.M)
_CODE = re.compile(r"```python\n(.*?)```", re.S)


def sdk_doc_sections() -> list[tuple[str, str]]:
    """(heading, python code) of every section of docs/sdk.md with a code block, in document order."""
    out = []
    for m in _BLOCK.finditer(DOC.read_text(encoding="utf-8")):
        code = "\n".join(_CODE.findall(m.group("body")))
        if code:
            out.append((m.group("title").strip(), code))
    return out


@pytest.fixture
def dead_urls() -> Iterator[Callable[[int], list[str]]]:
    """`dead_urls(n)`: n URLs of 127.0.0.1 ports that refuse connections for the whole test (bound, never
    listening, so no other process on the machine can take them meanwhile)."""
    held: list[socket.socket] = []

    def make(n: int) -> list[str]:
        urls = []
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
            urls.append(f"http://127.0.0.1:{s.getsockname()[1]}")
        return urls

    yield make
    for s in held:
        s.close()


@dataclass
class Story:
    node: Node
    url: str
    testnet: Path
    ns: dict[str, Any]  # the variables the examples left: c, smea, loan, receivable, ...


@pytest.fixture
async def docs_story(tmp_path: Path, start_node: Any, monkeypatch: pytest.MonkeyPatch) -> Story:
    d = tmp_path / ".testnet"
    testnet_mod.create(d, validators=1, observers=0, accounts=2, base_port=free_port_block(1), kdf="min")
    node = await start_node(ephemeral(load_home(d / "banka")))
    assert node.api is not None
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMELEDGER_NODE", node.api.url)
    ns: dict[str, Any] = {"__name__": "sdk_docs"}
    for title, code in sdk_doc_sections():
        try:
            await asyncio.to_thread(exec, compile(code, f"docs/sdk.md: {title}", "exec"), ns)
        except Exception as exc:  # name the example that broke, with its error
            raise AssertionError(f"the example '{title}' of docs/sdk.md failed: {type(exc).__name__}: {exc}") from exc
    return Story(node, node.api.url, d, ns)
