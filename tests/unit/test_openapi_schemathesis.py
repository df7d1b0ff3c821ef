"""The OpenAPI document is generated from the models the handlers parse and answer with, and a bounded
schemathesis run (`--checks all`: server errors, status codes, content types, response schemas,
schema-valid input accepted, schema-violating input rejected, ...) finds nothing against a node whose
ledger holds an object of every kind (made by running docs/sdk.md)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from node.api import openapi
from protocol import api
from tests.unit.conftest import Story

SEED = os.environ.get("SMELEDGER_SCHEMATHESIS_SEED", "20261125")
EXAMPLES = os.environ.get("SMELEDGER_SCHEMATHESIS_EXAMPLES", "50")


def test_every_schema_in_the_document_comes_from_a_model() -> None:
    doc = openapi.spec()
    schemas = doc["components"]["schemas"]
    models = {t.__name__ for t in vars(api).values() if isinstance(t, type) and issubclass(t, api.Doc)}
    assert set(schemas) <= models and {"Status", "TxStatus", "Loan", "SubmitJson", "Error"} <= set(schemas)
    limit = next(p for p in doc["paths"]["/events"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": api.MAX_EVENTS_LIMIT, "default": 100}
    tx_hex = schemas["SubmitJson"]["properties"]["txs"]["items"]
    assert tx_hex["pattern"] == "^(?:[0-9a-fA-F]{2})*$"  # odd-length hex is refused by schema and handler alike


def _config(path: Path, ids: dict[str, str]) -> None:
    """Real ids for the routes that read one object, so their answers are checked against their models."""
    rows = []
    for route, (param, value) in {"/accounts/{id}": ("id", ids["account"]), "/assets/{id}": ("id", "CNY.BANKA"),
                                  "/receivables/{id}": ("id", ids["receivable"]), "/loans/{id}": ("id", ids["loan"]),
                                  "/campaigns/{id}": ("id", ids["campaign"]),
                                  "/collateral/{id}": ("id", ids["collateral"]),
                                  "/fx-quotes/{id}": ("id", ids["quote"]), "/credit/{id}": ("id", ids["account"]),
                                  "/txs/{hash}": ("hash", ids["tx"]), "/trace/{tx_hash}": ("tx_hash", ids["tx"])
                                  }.items():
        rows.append(f'[[operations]]\ninclude-path = "{route}"\nparameters = {{ "path.{param}" = "{value}" }}\n')
    path.write_text("\n".join(rows))


async def test_schemathesis_with_all_checks_finds_no_failure(docs_story: Story, tmp_path: Path) -> None:
    ns, url = docs_story.ns, docs_story.url
    ids = {"account": ns["smea"].account, "receivable": ns["receivable"].tx_hash, "loan": ns["loan"].tx_hash,
           "campaign": ns["campaign"].tx_hash, "collateral": ns["inventory"].tx_hash, "quote": ns["quote"].tx_hash,
           "tx": ns["r"].tx_hash}
    config = tmp_path / "schemathesis.toml"
    _config(config, ids)
    token = (docs_story.testnet / "banka" / "admin.token").read_text().strip()
    st = Path(sys.executable).with_name("schemathesis")
    proc = await asyncio.create_subprocess_exec(
        str(st), "--config-file", str(config), "run", f"{url}/openapi.json", "--checks", "all",
        "--max-examples", EXAMPLES, "--seed", SEED, "--workers", "1", "--no-color", "--generation-database", "none",
        "--header", f"Authorization: Bearer {token}", "--request-timeout", "10",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"schemathesis failed (seed {SEED}):\n{text[-6000:]}"
    assert "No issues found" in text or " 0 failures" in text or "passed" in text, text[-2000:]
