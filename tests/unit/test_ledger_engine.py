"""Ledger engine and genesis: nonces, savepoints, roles, frozen senders, key rotation, genesis validation."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.block import GENESIS_PARENT, BlockHeader
from protocol.ledger import (
    CODES,
    KINDS,
    ROLE_MATRIX,
    GenesisError,
    apply_block,
    apply_genesis,
    keys,
    next_nonce,
)
from protocol.ledger.events import EVENTS
from protocol.ledger.harness import Harness, replay, state_digest
from protocol.ledger.model import DAY_MS, BlockCtx, Params, Receipt
from protocol.ledger.store import emit, enc, unpack
from protocol.state import MemoryState, Overlay

PEOPLE = [("reg", ["REGULATOR"]), ("bank", ["BANK"]), ("sme", ["SME"]), ("sme2", ["SME"]), ("inv", ["INVESTOR"])]


def chain() -> Harness:
    return Harness(PEOPLE, assets=[("CNY.BANK", "bank")],
                   balances=[("bank", "CNY.BANK", 10**9), ("sme", "CNY.BANK", 10**6), ("inv", "CNY.BANK", 10**6)])


def test_a_transfer_moves_money_and_bumps_the_nonce():
    h = chain()
    r = h.send("sme", "transfer", to=h.id("sme2"), asset="CNY.BANK", amount=250)
    assert r.ok and r.code == "ok"
    assert r.events[0].kind == "funds_moved"
    assert next_nonce(h.state, h.id("sme")) == 1
    assert unpack(h.state.get(keys.balance(h.id("sme2"), "CNY.BANK"))) == 250


def test_a_wrong_nonce_fails_with_bad_nonce_and_changes_nothing():
    h = chain()
    tx = h.tx("sme", "transfer", nonce=5, to=h.id("sme2"), asset="CNY.BANK", amount=1)
    r = h.block([tx]).receipts[0]
    assert r.code == "bad_nonce" and r.status == "failed"
    assert set(h.last_changes) <= {keys.HEIGHT, keys.TIME, keys.EVENT_CURSOR, keys.RESULTS}


def test_a_failed_tx_changes_only_its_nonce():
    h = chain()
    r = h.send("sme", "transfer", to=h.id("sme2"), asset="CNY.BANK", amount=10**7)
    assert r.code == "insufficient_funds" and r.events == ()
    assert set(h.last_changes) - {keys.HEIGHT, keys.TIME, keys.EVENT_CURSOR, keys.RESULTS} == {keys.nonce(h.id("sme"))}
    assert next_nonce(h.state, h.id("sme")) == 1


def test_replaying_an_included_tx_is_rejected_as_bad_nonce():
    h = chain()
    tx = h.tx("sme", "transfer", to=h.id("sme2"), asset="CNY.BANK", amount=1)
    assert h.block([tx]).receipts[0].ok
    assert h.block([tx]).receipts[0].code == "bad_nonce"


def test_two_txs_of_one_sender_in_a_block_run_in_nonce_order():
    h = chain()
    t0 = h.tx("sme", "transfer", nonce=0, to=h.id("sme2"), asset="CNY.BANK", amount=1)
    t1 = h.tx("sme", "transfer", nonce=1, to=h.id("sme2"), asset="CNY.BANK", amount=2)
    res = h.block([t0, t1])
    assert [r.code for r in res.receipts] == ["ok", "ok"]
    assert [e.index for r in res.receipts for e in r.events] == sorted(e.index for r in res.receipts for e in r.events)


def test_an_unknown_kind_fails_with_unknown_kind():
    h = chain()
    assert h.send("sme", "teleport").code == "unknown_kind"


def test_an_unregistered_sender_fails_with_not_registered():
    h = chain()
    h.add_key("stranger")
    assert h.send("stranger", "transfer", to=h.id("sme"), asset="CNY.BANK", amount=1).code == "not_registered"


def test_a_sender_without_the_role_fails_with_forbidden_role():
    h = chain()
    assert h.send("sme", "issue", asset="CNY.BANK", amount=1).code == "forbidden_role"
    assert h.send("bank", "receivable-issue", debtor=h.id("sme"), face=1, asset="CNY.BANK",
                  due=h.time + DAY_MS, doc=b"d" * 32).code == "forbidden_role"


def test_unknown_and_mistyped_fields_fail_with_bad_field():
    h = chain()
    assert h.send("sme", "transfer", to=h.id("sme2"), asset="CNY.BANK", amount=1, extra=1).code == "bad_field"
    assert h.send("sme", "transfer", to=h.id("sme2"), asset="CNY.BANK", amount=0).code == "bad_field"
    assert h.send("sme", "transfer", to=b"short", asset="CNY.BANK", amount=1).code == "bad_field"
    assert h.send("sme", "transfer", asset="CNY.BANK", amount=1).code == "bad_field"


def test_a_frozen_participant_can_neither_send_nor_receive_until_unfrozen():
    h = chain()
    assert h.send("reg", "freeze", account=h.id("sme"), reason="aml").ok
    assert h.send("sme", "transfer", to=h.id("sme2"), asset="CNY.BANK", amount=1).code == "frozen"
    assert h.send("inv", "transfer", to=h.id("sme"), asset="CNY.BANK", amount=1).code == "recipient_frozen"
    assert h.send("reg", "freeze", account=h.id("sme")).code == "already_frozen"
    assert h.send("reg", "unfreeze", account=h.id("sme")).ok
    assert h.send("reg", "unfreeze", account=h.id("sme")).code == "not_frozen"
    assert h.send("sme", "transfer", to=h.id("sme2"), asset="CNY.BANK", amount=1).ok


def test_a_regulator_registers_participants_with_valid_roles_only():
    h = chain()
    new = h.add_key("newbie")
    assert h.send("reg", "register", id=new, name="newbie", roles=["KING"], kyc=1).code == "bad_role"
    r = h.send("reg", "register", id=new, name="newbie", roles=["SME", "INVESTOR"], kyc=1)
    assert r.ok and r.events[0].kind == "participant_registered"
    assert h.send("reg", "register", id=new, name="again", roles=["SME"], kyc=1).code == "already_registered"
    assert h.send("newbie", "transfer", to=h.id("sme"), asset="CNY.BANK", amount=1).code == "insufficient_funds"


def test_after_rotate_key_the_new_key_signs_for_the_same_participant_and_the_old_key_is_revoked():
    h = chain()
    old = h.keys["sme"]
    new = h.add_key("sme-new")
    assert h.send("sme", "rotate-key", new_key=new).ok
    r = h.send("sme-new", "transfer", to=h.id("sme2"), asset="CNY.BANK", amount=7)
    assert r.ok and r.events[0].data["from"] == old.public_key
    h.keys["sme-old"] = old
    assert h.send("sme-old", "transfer", to=h.id("sme2"), asset="CNY.BANK", amount=1).code == "key_revoked"
    assert h.send("sme-new", "rotate-key", new_key=h.id("bank")).code == "already_registered"


def test_every_error_code_a_kind_declares_is_registered():
    for spec in KINDS.values():
        assert set(spec.errors) <= set(CODES), spec.name
        assert spec.fields and all(f.type in ("int", "str", "bytes32", "bytes", "list") for f in spec.fields)
        assert ROLE_MATRIX[spec.name] == spec.roles


def test_the_transfer_body_is_exactly_the_design_section_5_fields():
    fields = {f.name: (f.type, f.required) for f in KINDS["transfer"].fields}
    assert fields == {"to": ("bytes32", True), "asset": ("str", True), "amount": ("int", True),
                      "memo": ("bytes", False)}


def test_genesis_rejects_bad_entries_with_messages_naming_them():
    good = chain().spec
    cases = [
        ({**good, "participants": [{**good["participants"][0], "roles": ["KING"]}]}, "participants[0].roles"),
        ({**good, "participants": [{**good["participants"][0], "id": "zz"}]}, "participants[0].id"),
        ({**good, "assets": [{**good["assets"][0], "issuer": good["participants"][2]["id"]}]}, "assets[0].issuer"),
        ({**good, "balances": [{**good["balances"][0], "asset": "NOPE"}]}, "balances[0].asset"),
        ({**good, "balances": [{**good["balances"][0], "amount": 0}]}, "balances[0].amount"),
        ({**good, "params": {"grace_ms": -1}}, "params.grace_ms"),
        ({**good, "params": {"nonsense": 1}}, "params"),
        ({**good, "extra": 1}, "genesis spec"),
    ]
    for spec, where in cases:
        state = Overlay(MemoryState())
        with pytest.raises(GenesisError) as exc:
            apply_genesis(state, spec)
        assert where in str(exc.value)
        assert state.changes() == {}


def test_genesis_balances_count_as_issued_supply():
    h = chain()
    asset = unpack(h.state.get(keys.asset("CNY.BANK")))
    assert asset["issued"] == 10**9 + 2 * 10**6 and asset["redeemed"] == 0


def test_block_time_never_runs_backwards_inside_the_ledger():
    h = chain()
    h.advance(DAY_MS)
    later = h.time
    header = BlockHeader(chain="c", height=h.height + 1, parent=GENESIS_PARENT, proposer=b"\0" * 32, view=0,
                         time=later - 5_000, tx_root=b"\0" * 32, state_root=b"\0" * 32, results_root=b"\0" * 32)
    ov = Overlay(h.state)
    apply_block(ov, header, [])
    assert unpack(ov.get(keys.TIME)) == later


def test_replaying_the_same_blocks_on_a_fresh_state_gives_the_same_digest():
    h = chain()
    h.send("sme", "transfer", to=h.id("sme2"), asset="CNY.BANK", amount=3)
    h.send("bank", "issue", asset="CNY.BANK", amount=5, to=h.id("inv"))
    h.advance(DAY_MS)
    assert state_digest(replay(h.spec, h.blocks)) == state_digest(h.state)


def test_prefix_ranges_include_ids_that_start_with_0xff():
    assert keys.prefix_end(b"cc/\x01") == b"cc/\x02"
    assert keys.prefix_end(b"cc/\x01\xff\xff") == b"cc/\x02"
    start, stop = keys.contributions_of(b"\x07" * 32)
    assert start < keys.contribution(b"\x07" * 32, b"\xff" * 32) < stop


def test_a_campaign_refunds_an_investor_whose_id_starts_with_0xff():
    seed = next(s for s in range(10_000) if Harness([("x", ["SME"])]).add_key(f"inv{s}")[0] == 0xFF)
    name = f"inv{seed}"
    h = Harness([("sme", ["SME"]), (name, ["INVESTOR"]), ("bank", ["BANK"])], assets=[("CNY.BANK", "bank")],
                balances=[(name, "CNY.BANK", 1_000)])
    assert h.id(name)[0] == 0xFF
    cid = h.send("sme", "campaign-create", asset="CNY.BANK", target=900, minimum=800,
                 deadline=h.time + DAY_MS).tx_hash
    assert h.send(name, "campaign-contribute", campaign=cid, amount=500).ok
    h.advance(DAY_MS)
    assert unpack(h.state.get(keys.balance(h.id(name), "CNY.BANK"))) == 1_000


def test_docs_ledger_md_names_every_kind_error_code_and_event():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "ledger.md").read_text()
    for spec in KINDS.values():
        assert f"`{spec.name}`" in text
        for ev in spec.events:
            assert f"`{ev}`" in text, ev
    for code in CODES:
        assert f"`{code}`" in text, code
    for ev in EVENTS:
        assert f"`{ev}`" in text, ev


def test_every_event_a_kind_declares_is_registered_and_emit_refuses_unregistered_kinds():
    for spec in KINDS.values():
        assert set(spec.events) <= set(EVENTS), spec.name
    h = Harness.standard()
    block = BlockCtx(height=1, time=0, params=Params())
    with pytest.raises(ValueError, match="unregistered event kind"):
        emit(Overlay(h.state), block, "transfer", [])


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40)
    | st.text(alphabet="abcxyz_ABC.-09", max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text("abcdefgh_", max_size=8), inner, max_size=5),
    max_leaves=20)


@given(_values)
@settings(max_examples=300, deadline=None)
def test_the_ledgers_fast_encoder_is_byte_identical_to_the_canonical_codec(value):
    assert enc(value) == codec.encode(value)


def test_every_state_value_a_block_writes_is_canonical_msgpack():
    h = Harness.standard()
    h.send("smea", "receivable-issue", debtor=h.id("smeb"), face=10, asset="CNY.BANKA", due=h.time + DAY_MS,
           doc=b"\x01" * 32)
    h.send("smea", "transfer", to=h.id("smeb"), asset="CNY.BANKA", amount=3, memo=b"m")
    for k, v in h.state.items():
        if v:
            assert codec.encode(codec.decode(v)) == v, k


def test_a_stored_receipt_is_the_canonical_encoding_of_its_value_with_the_events_bytes_spliced_in():
    h = Harness.standard()
    h.send("smea", "transfer", to=h.id("smeb"), asset="CNY.BANKA", amount=3, memo=b"m")
    many = h.block([h.tx("smea", "transfer", to=h.id("smeb"), asset="CNY.BANKA", amount=1)])
    failed = h.send("smea", "transfer", to=h.id("smeb"), asset="CNY.BANKA", amount=10**15)
    for r in [*many.receipts, failed]:
        assert all(e.raw == codec.encode(e.to_value()) for e in r.events)
        assert r.encode() == codec.encode(r.to_value())
    bare = Receipt(b"t" * 32, "ok", "ok", "", tuple(replace(e, raw=b"") for e in many.receipts[0].events) * 17)
    assert bare.encode() == codec.encode(bare.to_value())
