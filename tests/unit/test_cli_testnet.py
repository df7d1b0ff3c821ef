"""`smeledger testnet`: the generated directory is complete, private where it must be, and consistent."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from client.errors import ClientError
from client.wallet import Wallet, read_password
from devtools import testnet
from node import config, genesis
from node.errors import NodeError
from protocol.ledger import apply_genesis
from protocol.state import MemoryState, Overlay


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("t") / "net"
    testnet.create(d, base_port=27700, accounts=3, kdf="min")
    return d


def test_the_default_cast_is_four_validators_and_a_regulator_on_shifted_ports(net: Path) -> None:
    rows = testnet.load_nodes(net)
    assert [(r["name"], r["role"]) for r in rows] == [
        ("banka", "validator"), ("bankb", "validator"), ("smea", "validator"), ("smeb", "validator"),
        ("regulator", "observer")]
    assert [r["admin_url"] for r in rows] == [f"http://127.0.0.1:{28701 + i}" for i in range(5)]
    assert [r["p2p"] for r in rows] == [f"127.0.0.1:{27701 + i}" for i in range(5)]
    assert set(rows[0]) == {"name", "role", "admin_url", "p2p", "home", "public_key"}


def test_every_home_has_a_private_key_token_and_a_full_mesh_config(net: Path) -> None:
    rows = testnet.load_nodes(net)
    keys = {r["public_key"] for r in rows}
    for r in rows:
        home = net / r["name"]
        for secret in ("node_key.json", "admin.token"):
            assert stat.S_IMODE(os.stat(home / secret).st_mode) == 0o600
        cfg = config.load(home)
        assert {p.public_key.hex() for p in cfg.p2p.peers} == keys - {r["public_key"]}
        assert [k.hex() for k in cfg.p2p.observers] == [rows[-1]["public_key"]]
        assert cfg.api.host == "127.0.0.1" and cfg.testnet.allow_time_offset is True
        assert genesis.load(cfg.node.genesis_file).hash == genesis.load(net / "genesis.json").hash


def test_the_genesis_validators_are_the_validator_nodes_and_its_ledger_spec_applies(net: Path) -> None:
    g = genesis.load(net / "genesis.json")
    rows = testnet.load_nodes(net)
    assert [v.public_key.hex() for v in g.validators] == [r["public_key"] for r in rows if r["role"] == "validator"]
    overlay = Overlay(MemoryState())
    apply_genesis(overlay, g.ledger)
    assert overlay.changes()


def test_demo_wallets_are_funded_and_open_with_the_password_file(net: Path) -> None:
    pw = read_password(net / "wallets" / "PASSWORD")
    assert stat.S_IMODE(os.stat(net / "wallets" / "PASSWORD").st_mode) == 0o600
    names = sorted(p.stem for p in (net / "wallets").glob("*.json"))
    assert names == sorted(["banka", "bankb", "smea", "smeb", "supplier", "investor1", "investor2", "regulator",
                            "user01", "user02", "user03"])
    smea = Wallet.load(net / "wallets" / "smea.json", pw)
    assert smea.roles == ("SME",)
    spec = genesis.load(net / "genesis.json").ledger
    funded = {(b["account"], b["asset"]) for b in spec["balances"]}
    assert (smea.account, "CNY.BANKA") in funded and (smea.account, "CNY.BANKB") in funded
    issuers = {a["id"]: a["issuer"] for a in spec["assets"]}
    banka = json.loads((net / "wallets" / "banka.json").read_text())["public_key"]
    assert issuers["CNY.BANKA"] == banka


def test_the_genesis_hash_is_the_hash_of_the_canonical_document(net: Path) -> None:
    g = genesis.load(net / "genesis.json")
    doc = json.loads((net / "genesis.json").read_text())
    doc_reordered = dict(reversed(list(doc.items())))
    assert genesis.from_value(doc_reordered).hash == g.hash
    doc["genesis_time"] += 1
    assert genesis.from_value(doc).hash != g.hash


@pytest.mark.parametrize(("patch", "fragment"), [
    ({"chain_id": ""}, "chain_id"),
    ({"genesis_time": -1}, "genesis_time"),
    ({"validators": []}, "validators"),
    ({"validators": [{"name": "a", "public_key": "zz"}]}, "validators[0].public_key"),
    ({"consensus": {"nope": 1}}, "consensus.nope"),
    ({"consensus": {"batch_timeout_ms": -1}}, "batch_timeout_ms"),
    ({"extra": 1}, "unknown field extra"),
])
def test_a_bad_genesis_field_is_named(net: Path, patch: dict[str, object], fragment: str) -> None:
    doc = json.loads((net / "genesis.json").read_text())
    doc.update(patch)
    with pytest.raises(NodeError) as e:
        genesis.from_value(doc)
    assert e.value.message.startswith("genesis error:") and fragment in e.value.message


def test_testnet_with_more_nodes_names_them_and_rejects_bad_counts(tmp_path: Path) -> None:
    assert [n for n, _r in testnet.node_names(6, 2)] == [
        "banka", "bankb", "smea", "smeb", "validator5", "validator6", "regulator", "observer2"]
    with pytest.raises(ClientError, match="validators >= 1"):
        testnet.create(tmp_path / "x", validators=0, kdf="min")
    assert not (tmp_path / "x").exists()
