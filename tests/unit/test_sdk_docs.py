"""docs/sdk.md is true: every example runs, in order, against an in-process testnet node, and every tx
kind of the ledger's registry has an example that calls its typed builder."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from client.codegen import method_name
from devtools import testnet as testnet_mod
from protocol.ledger import KINDS
from tests.conftest import ephemeral, free_port_block, load_home

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"
_BLOCK = re.compile(r"^#{2,3} (?P<title>.+?)\n(?P<body>.*?)(?=^#{2,3} |\Z)", re.S | re.M)
_CODE = re.compile(r"```python\n(.*?)```", re.S)


def sections() -> list[tuple[str, str]]:
    """(heading, python code) of every section with a code block, in document order."""
    out = []
    for m in _BLOCK.finditer(DOC.read_text(encoding="utf-8")):
        code = "\n".join(_CODE.findall(m.group("body")))
        if code:
            out.append((m.group("title").strip(), code))
    return out


def test_every_tx_kind_has_an_example_that_calls_its_typed_builder() -> None:
    by_title = dict(sections())
    missing = [k for k in sorted(KINDS) if f"c.{method_name(k)}(" not in by_title.get(k, "")]
    assert not missing, f"docs/sdk.md has no example for: {missing}"
    assert len(KINDS) == 26


async def test_every_example_in_the_sdk_guide_runs_green(tmp_path: Path, start_node: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / ".testnet"
    testnet_mod.create(d, validators=1, observers=0, accounts=2, base_port=free_port_block(1), kdf="min")
    node = await start_node(ephemeral(load_home(d / "banka")))
    assert node.api is not None
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMELEDGER_NODE", node.api.url)
    namespace: dict[str, Any] = {"__name__": "sdk_docs"}
    for title, code in sections():
        try:
            await asyncio.to_thread(exec, compile(code, f"docs/sdk.md: {title}", "exec"), namespace)
        except Exception as exc:  # name the example that broke, with its error
            raise AssertionError(f"the example '{title}' failed: {type(exc).__name__}: {exc}") from exc
