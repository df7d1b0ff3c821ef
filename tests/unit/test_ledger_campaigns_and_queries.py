"""Crowdfunding (escrow, fill, deadline finalize/refund, shares) and the read-only queries (accounts,
events by account/kind/height, regulator trace)."""

from __future__ import annotations

import json

import pytest

from protocol.ledger import LedgerError, query
from protocol.ledger.harness import Harness
from protocol.ledger.model import DAY_MS

A = "CNY.BANKA"


def bal(h: Harness, who: str, asset: str = A) -> int:
    return query.account(h.state, h.id(who))["balances"].get(asset, 0)


def campaign(h: Harness, target: int = 1_000, minimum: int = 600) -> bytes:
    r = h.send("smeb", "campaign-create", asset=A, target=target, minimum=minimum, deadline=h.time + 10 * DAY_MS)
    assert r.ok, r
    return r.tx_hash


def test_contributions_are_escrowed_and_a_filled_campaign_pays_the_sme_and_mints_shares():
    h = Harness.standard()
    cid = campaign(h)
    sme_before, inv_before = bal(h, "smeb"), bal(h, "inv")
    assert h.send("inv", "campaign-contribute", campaign=cid, amount=400).ok
    assert bal(h, "inv") == inv_before - 400 and bal(h, "smeb") == sme_before
    assert h.send("inv", "campaign-contribute", campaign=cid, amount=700).code == "over_target"
    r = h.send("banka", "campaign-contribute", campaign=cid, amount=600)
    assert r.ok and "campaign_finalized" in [e.kind for e in r.events]
    c = query.campaign(h.state, cid)
    assert c["status"] == "funded" and c["raised"] == 1_000
    assert bal(h, "smeb") == sme_before + 1_000
    assert bal(h, "inv", c["shares"]) == 400 and bal(h, "banka", c["shares"]) == 600
    assert h.send("inv", "campaign-contribute", campaign=cid, amount=1).code == "bad_state"


def test_a_campaign_that_meets_its_minimum_finalizes_at_the_deadline():
    h = Harness.standard()
    cid = campaign(h)
    assert h.send("inv", "campaign-contribute", campaign=cid, amount=600).ok
    res = h.advance(10 * DAY_MS)
    assert "campaign_finalized" in [e.kind for e in res.events]
    assert query.campaign(h.state, cid)["status"] == "funded"


def test_a_campaign_below_its_minimum_refunds_every_investor_at_the_deadline():
    h = Harness.standard()
    cid = campaign(h)
    inv_before = bal(h, "inv")
    assert h.send("inv", "campaign-contribute", campaign=cid, amount=599).ok
    res = h.advance(10 * DAY_MS)
    assert "campaign_refunded" in [e.kind for e in res.events]
    assert bal(h, "inv") == inv_before and query.campaign(h.state, cid)["status"] == "refunded"
    assert h.send("inv", "campaign-contribute", campaign=cid, amount=1).code == "bad_state"


def test_campaign_errors():
    h = Harness.standard()
    assert h.send("smeb", "campaign-create", asset=A, target=5, minimum=6, deadline=h.time + 1).code == "bad_amount"
    assert h.send("smeb", "campaign-create", asset=A, target=5, minimum=5, deadline=h.time).code == "past_due"
    assert h.send("inv", "campaign-create", asset=A, target=5, minimum=5, deadline=h.time + 1).code == "forbidden_role"
    cid = campaign(h)
    assert h.send("smea", "campaign-contribute", campaign=cid, amount=1).code == "forbidden_role"
    assert h.send("inv", "campaign-contribute", campaign=b"\x00" * 32, amount=1).code == "not_found"


def test_a_campaign_refuses_investors_beyond_its_contributor_bound():
    h = Harness.standard({"max_contributors": 1})
    cid = campaign(h)
    assert h.send("inv", "campaign-contribute", campaign=cid, amount=1).ok
    assert h.send("inv", "campaign-contribute", campaign=cid, amount=1).ok
    assert h.send("banka", "campaign-contribute", campaign=cid, amount=1).code == "too_many"


def test_account_query_is_json_ready_and_unknown_ids_are_not_found():
    h = Harness.standard()
    acct = query.account(h.state, h.id("smea").hex())
    json.dumps(acct)
    assert acct["roles"] == ["SME"] and acct["balances"][A] == 10**10 and acct["nonce"] == 0
    with pytest.raises(LedgerError) as exc:
        query.account(h.state, "00" * 32)
    assert exc.value.code == "not_found"
    with pytest.raises(LedgerError) as exc:
        query.account(h.state, "zz")
    assert exc.value.code == "bad_field"


def test_events_are_filtered_by_account_kind_and_height_in_order():
    h = Harness.standard()
    h.send("smea", "transfer", to=h.id("smeb"), asset=A, amount=1)
    h.send("inv", "transfer", to=h.id("supplier"), asset=A, amount=2)
    mine = query.events(h.state, account=h.id("smeb"))["events"]
    assert [e["kind"] for e in mine][-1] == "funds_moved" and mine[-1]["data"]["amount"] == 1
    moved = query.events(h.state, kind="funds_moved", from_height=1)["events"]
    assert [e["data"]["amount"] for e in moved] == [1, 2]
    page = query.events(h.state, limit=2)
    assert len(page["events"]) == 2 and page["more"]
    everything = query.events(h.state, limit=1000)["events"]
    positions = [(e["height"], e["index"]) for e in everything]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


def test_trace_follows_a_payment_upstream_and_downstream():
    h = Harness.standard()
    first = h.send("inv", "transfer", to=h.id("smea"), asset=A, amount=500)
    middle = h.send("smea", "transfer", to=h.id("smeb"), asset=A, amount=300)
    h.send("smeb", "transfer", to=h.id("supplier"), asset=A, amount=200)
    t = query.trace(h.state, middle.tx_hash)
    json.dumps(t)
    flow = t["flows"][0]
    assert flow["from"] == h.id("smea").hex() and flow["amount"] == 300
    assert first.tx_hash.hex() in [u["tx"] for u in flow["upstream"]]
    assert [d["to"] for d in flow["downstream"]] == [h.id("supplier").hex()]
    with pytest.raises(LedgerError):
        query.trace(h.state, b"\x01" * 32)


def test_loan_and_receivable_queries_return_hex_ids_and_int_money():
    h = Harness.standard()
    r = h.send("smea", "receivable-issue", debtor=h.id("smeb"), face=10, asset=A, due=h.time + DAY_MS,
               doc=b"\x01" * 32)
    rec = query.receivable(h.state, r.tx_hash)
    assert rec["id"] == r.tx_hash.hex() and rec["face"] == 10 and rec["debtor"] == h.id("smeb").hex()
    lr = h.send("smea", "loan-apply", lender=h.id("banka"), asset=A, amount=5, term_ms=DAY_MS, collateral=[])
    loan = query.loan(h.state, lr.tx_hash)
    assert loan["status"] == "applied" and loan["owed_now"] == 0 and "rem_i" not in loan


def test_an_unknown_asset_or_object_is_not_found_with_a_message_naming_what_was_asked_for():
    h = Harness.standard()
    with pytest.raises(LedgerError) as exc:
        query.asset(h.state, "NOPE.X")
    assert exc.value.code == "not_found" and exc.value.message == "no asset NOPE.X"
    for fn, what in ((query.receivable, "receivable"), (query.loan, "loan"), (query.campaign, "campaign"),
                     (query.collateral, "collateral"), (query.fx_quote, "FX quote")):
        with pytest.raises(LedgerError) as exc:
            fn(h.state, "ab" * 32)
        assert exc.value.code == "not_found" and exc.value.message == f"no {what} {'ab' * 32}"


@pytest.mark.parametrize("account", [None, "smeb"])
def test_events_accept_only_real_event_kinds_and_say_what_a_tx_kind_emits(account):
    h = Harness.standard()
    h.send("smea", "transfer", to=h.id("smeb"), asset=A, amount=1)
    who = None if account is None else h.id(account)
    with pytest.raises(LedgerError) as exc:
        query.events(h.state, account=who, kind="transfer")
    assert exc.value.code == "bad_field"
    assert "funds_moved" in exc.value.message and "'transfer' is a tx kind" in exc.value.message
    for bad in ("no_such_event", "\u00e9v\u00e9nement", "x" * 65):
        with pytest.raises(LedgerError) as exc:
            query.events(h.state, account=who, kind=bad)
        assert exc.value.code == "bad_field"
    assert query.events(h.state, account=who, kind="funds_moved")["events"]
