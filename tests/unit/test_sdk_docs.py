"""docs/sdk.md is true: every example runs, in order, against an in-process testnet node (the
`docs_story` fixture), and every tx kind of the ledger's registry has an example that calls its typed
builder."""

from __future__ import annotations

import asyncio

from client.codegen import method_name
from protocol.ledger import KINDS
from tests.unit.conftest import Story, sdk_doc_sections


def test_every_tx_kind_has_an_example_that_calls_its_typed_builder() -> None:
    by_title = dict(sdk_doc_sections())
    missing = [k for k in sorted(KINDS) if f"c.{method_name(k)}(" not in by_title.get(k, "")]
    assert not missing, f"docs/sdk.md has no example for: {missing}"
    assert len(KINDS) == 26


async def test_every_example_in_the_sdk_guide_runs_green(docs_story: Story) -> None:
    ns = docs_story.ns
    for name in ("receivable", "loan", "campaign", "inventory", "quote"):  # objects the examples created
        assert ns[name].ok and ns[name].height is not None, name
    status = await asyncio.to_thread(ns["c"].status)  # the node runs on this loop: block a thread, not it
    assert status.height >= ns["campaign"].height
