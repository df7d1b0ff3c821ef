"""The light client against an in-process node: a verified account is proven field by field back to the
genesis validators, and a tampered answer, a wrong root, a forged certificate or another genesis each
raise a ProofError saying which link broke. The sync SDK runs in a thread so the node keeps serving."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from client import ops
from client.client import Client
from client.errors import ProofError
from client.light import Trust, certifying_height, committed_header
from client.txbuild import build_body, sign
from client.wallet import Wallet, read_password
from node.service import Node
from protocol import api, codec
from protocol.block import STATE_ROOT_LAG
from protocol.consensus.certs import CommitCertificate
from protocol.crypto import DOMAIN_CONSENSUS, PrivateKey, sha256
from protocol.ledger import keys
from tests.conftest import ephemeral, load_home
from tests.unit.test_cli_errors import cli


@pytest.fixture
async def node(single_home: Path, start_node: Any) -> Node:
    n: Node = await start_node(ephemeral(load_home(single_home / "banka")))
    return n


def _client(node: Node) -> Client:
    assert node.api is not None
    return Client(node.api.url)


def _wallets(home: Path) -> tuple[Wallet, Wallet]:
    pw = read_password(home / "wallets" / "PASSWORD")
    return Wallet.load(home / "wallets" / "user01.json", pw), Wallet.load(home / "wallets" / "user02.json", pw)


async def _next_block(c: Client, w: Wallet, to: Wallet) -> None:
    """Commit one more block (an idle chain makes none), towards the header that certifies the proof height."""
    nonce = (await asyncio.to_thread(c.account, w.account)).nonce
    tx = sign(w, build_body("transfer", {"to": to.account, "asset": "CNY.BANKA", "amount": "1"},
                            chain="smeledger-testnet", sender=w.public_key, nonce=nonce))
    assert (await asyncio.to_thread(c.submit, tx)).results[0].accepted
    assert (await asyncio.to_thread(c.follow, tx.hash, 20.0)).status == "committed"


async def _with_blocks(c: Client, w: Wallet, to: Wallet, job: asyncio.Future[Any]) -> Any:
    """Await a light-client `job` while committing blocks (at most 40), so the header two blocks after
    whatever height it reads at gets committed whenever it reads."""
    for _ in range(40):
        if job.done():
            break
        await _next_block(c, w, to)
        await asyncio.wait({job}, timeout=0.2)
    return await job


async def _proven_answer(node: Node, home: Path) -> tuple[Client, Wallet, dict[str, Any]]:
    c = _client(node)
    a, b = _wallets(home)
    await _next_block(c, a, b)  # a has a nonce, a credit record and a changed balance
    doc = api.to_builtins(await asyncio.to_thread(c.account, a.account, True))
    for _ in range(STATE_ROOT_LAG):  # block height+2 carries the state root after `height` (pipelined)
        await _next_block(c, b, a)
    return c, a, doc


async def _check(c: Client, doc: dict[str, Any], trust: Trust) -> dict[str, Any]:
    """Check an (edited) answer as the SDK would have received it."""
    acc = api.convert(doc, api.Account)
    out: dict[str, Any] = api.to_builtins(await asyncio.to_thread(c.check_account_proof, acc, trust, 20.0))
    return out


async def test_a_verified_account_is_every_field_the_node_answered_each_proven(node: Node, single_home: Path) -> None:
    c, a, doc = await _proven_answer(node, single_home)
    trust = Trust.load(single_home / "genesis.json")
    got = await _check(c, copy.deepcopy(doc), trust)
    assert got["verified_height"] == doc["proof"]["header_height"] == doc["proof"]["height"] + STATE_ROOT_LAG
    for field in ("id", "registered", "nonce", "balances", "name", "roles", "kyc", "frozen", "signing_key",
                  "signing_key_nonce", "credit_score"):
        assert got[field] == doc[field], field
    assert got["nonce"] == 1 and got["balances"]["CNY.BANKA"] > 0
    job = asyncio.ensure_future(asyncio.to_thread(c.verified_account, a.account, trust, 20.0))
    now = await _with_blocks(c, a, _wallets(single_home)[1], job)
    assert now.id == a.account and now.nonce >= 1 and now.proof is None


@pytest.mark.parametrize(("tamper", "code"), [
    (lambda d: d["balances"].__setitem__("CNY.BANKA", 10**14), "answer_mismatch"),
    (lambda d: d["balances"].__setitem__("USD.BANKB", 10**14), "unproven"),
    (lambda d: d.__setitem__("roles", ["BANK", "REGULATOR"]), "answer_mismatch"),
    (lambda d: d.__setitem__("nonce", 0), "answer_mismatch"),
    (lambda d: d.__setitem__("credit_score", 900), "answer_mismatch"),
    (lambda d: d["proof"].__setitem__("proofs", d["proof"]["proofs"][:-1]), "unproven"),
])
async def test_a_tampered_answer_is_refused_naming_the_field(node: Node, single_home: Path, tamper: Any,
                                                             code: str) -> None:
    c, _a, doc = await _proven_answer(node, single_home)
    tamper(doc)
    with pytest.raises(ProofError) as exc:
        await _check(c, doc, Trust.load(single_home / "genesis.json"))
    assert exc.value.code == code, exc.value.message


async def test_a_proof_under_another_root_than_the_committed_headers_is_refused(node: Node, single_home: Path) -> None:
    c, a, doc = await _proven_answer(node, single_home)
    trust = Trust.load(single_home / "genesis.json")
    older = copy.deepcopy(doc)
    older["proof"]["height"] -= 1  # the node claims the proofs are of an earlier state: another root
    with pytest.raises(ProofError) as exc:
        await _check(c, older, trust)
    assert exc.value.code == "bad_proof" and "does not verify against the state root" in exc.value.message
    forged = copy.deepcopy(doc)  # a proof whose value was rewritten (and the answer with it)
    key = keys.balance(bytes.fromhex(a.account), "CNY.BANKA").hex()
    item = next(p for p in forged["proof"]["proofs"] if p["key"] == key)
    item["value"] = codec.encode(10**14).hex()
    forged["balances"]["CNY.BANKA"] = 10**14
    with pytest.raises(ProofError) as exc:
        await _check(c, forged, trust)
    assert exc.value.code == "bad_proof"


async def test_the_state_root_a_proof_names_is_certified_by_the_header_two_blocks_later_not_the_next(
        node: Node, single_home: Path) -> None:
    c, _a, doc = await _proven_answer(node, single_home)
    trust = Trust.load(single_home / "genesis.json")
    height = doc["proof"]["height"]
    headers = {h: committed_header(trust, await asyncio.to_thread(c.run, ops.block_answer(h)), h)
               for h in (height + 1, height + 2)}
    assert headers[height + 2].state_root.hex() == doc["proof"]["state_root"]
    assert headers[height + 1].state_root.hex() != doc["proof"]["state_root"]  # the state after height-1
    lying = copy.deepcopy(doc)  # the root and header height the node names are not taken on its word
    lying["proof"]["state_root"], lying["proof"]["header_height"] = "00" * 32, height + 1
    assert (await _check(c, lying, trust))["verified_height"] == height + 2
    lying["proof"]["height"] = -1
    with pytest.raises(ProofError) as exc:
        await _check(c, lying, trust)
    assert exc.value.code == "bad_proof"


async def test_a_forged_certificate_or_another_chains_validators_are_refused(node: Node, single_home: Path) -> None:
    c, _a, doc = await _proven_answer(node, single_home)
    trust = Trust.load(single_home / "genesis.json")
    height = certifying_height(doc["proof"]["height"])
    answer = await asyncio.to_thread(c.run, ops.block_answer(height))
    assert committed_header(trust, answer, height).height == height
    real = codec.decode(answer)
    cert = CommitCertificate.from_value(codec.decode(real["certificate"]))
    stranger = PrivateKey(sha256(b"not a validator"))
    sig = stranger.sign(DOMAIN_CONSENSUS, cert.signed_bytes(trust.chain_id, 0))
    fake = CommitCertificate(height=cert.height, view=cert.view, block_hash=cert.block_hash, sigs=((0, sig),))
    forged = codec.encode({"block": real["block"], "certificate": codec.encode(fake.to_value())})
    for bad_answer, bad_trust in ((forged, trust),
                                  (answer, Trust(trust.chain_id, (stranger.public_key,), trust.genesis_hash))):
        with pytest.raises(ProofError) as exc:
            committed_header(bad_trust, bad_answer, height)
        assert exc.value.code == "bad_certificate" and "genesis validators" in exc.value.message
    other_cert = codec.encode({"block": real["block"], "certificate": codec.encode(
        CommitCertificate(height=cert.height, view=cert.view, block_hash=b"\x01" * 32, sigs=cert.sigs).to_value())})
    with pytest.raises(ProofError) as exc:
        committed_header(trust, other_cert, height)
    assert exc.value.code == "bad_certificate" and "another block" in exc.value.message


def test_a_genesis_file_that_does_not_hash_to_the_given_hash_is_refused(single_home: Path) -> None:
    path = single_home / "genesis.json"
    trust = Trust.load(path)
    assert Trust.load(path, trust.genesis_hash) == trust
    with pytest.raises(ProofError) as exc:
        Trust.load(path, b"\x00" * 32)
    assert exc.value.code == "genesis_mismatch"
    doc = json.loads(path.read_text())
    doc["validators"][0]["public_key"] = "zz"
    with pytest.raises(ProofError) as exc:
        Trust.from_genesis(doc)
    assert exc.value.code == "bad_genesis"


async def test_the_cli_answers_a_proven_account_and_refuses_another_genesis(node: Node, single_home: Path,
                                                                           tmp_path: Path) -> None:
    c, a, _doc = await _proven_answer(node, single_home)
    assert node.api is not None
    base = ("--json", "query", "accounts", a.account, "--proof", "--node", node.api.url)
    genesis = str(single_home / "genesis.json")
    job = asyncio.ensure_future(asyncio.to_thread(cli, *base, "--genesis", genesis))
    p = await _with_blocks(c, a, _wallets(single_home)[1], job)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["id"] == a.account and got["verified_height"] >= 1 and "CNY.BANKA" in got["balances"]
    p = await asyncio.to_thread(cli, *base, "--genesis", genesis, "--genesis-hash", "00" * 32)
    assert p.returncode == 1 and json.loads(p.stderr)["error"] == "genesis_mismatch"
    other = json.loads((single_home / "genesis.json").read_text())
    other["validators"][0]["public_key"] = PrivateKey(sha256(b"x")).public_key.hex()
    (tmp_path / "other.json").write_text(json.dumps(other))
    job = asyncio.ensure_future(asyncio.to_thread(cli, *base, "--genesis", str(tmp_path / "other.json")))
    p = await _with_blocks(c, a, _wallets(single_home)[1], job)
    assert p.returncode == 1 and json.loads(p.stderr)["error"] == "bad_certificate", p.stderr
