"""Receivables and collateral: issue, accept/reject, split, transfer, two-sided discount, settle,
overdue, pledge and release."""

from __future__ import annotations

from protocol.ledger import query
from protocol.ledger.harness import Harness
from protocol.ledger.model import DAY_MS

A = "CNY.BANKA"
DOC = b"\x42" * 32


def issued(h: Harness, face: int = 1_000_000, due_days: int = 90, accept: bool = True) -> bytes:
    r = h.send("smea", "receivable-issue", debtor=h.id("smeb"), face=face, asset=A,
               due=h.time + due_days * DAY_MS, doc=DOC)
    assert r.ok, r
    if accept:
        assert h.send("smeb", "receivable-accept", receivable=r.tx_hash).ok
    return r.tx_hash


def test_a_creditor_issues_a_receivable_that_only_the_debtor_may_accept():
    h = Harness.standard()
    rid = issued(h, accept=False)
    assert query.receivable(h.state, rid)["status"] == "proposed"
    assert h.send("supplier", "receivable-accept", receivable=rid).code == "not_debtor"
    r = h.send("smeb", "receivable-accept", receivable=rid)
    assert r.ok and r.events[0].kind == "receivable_accepted"
    assert h.send("smeb", "receivable-accept", receivable=rid).code == "bad_state"


def test_a_debtor_may_reject_a_proposed_receivable():
    h = Harness.standard()
    rid = issued(h, accept=False)
    assert h.send("smeb", "receivable-reject", receivable=rid).ok
    assert query.receivable(h.state, rid)["status"] == "rejected"


def test_receivable_issue_errors():
    h = Harness.standard()
    base = dict(face=1, asset=A, due=h.time + DAY_MS, doc=DOC)
    assert h.send("smea", "receivable-issue", debtor=h.id("smea"), **base).code == "self_transfer"
    assert h.send("smea", "receivable-issue", debtor=h.id("inv"), **base).code == "bad_role"
    assert h.send("smea", "receivable-issue", debtor=h.id("smeb"), **{**base, "due": h.time}).code == "past_due"
    assert h.send("smea", "receivable-issue", debtor=h.id("smeb"), **{**base, "asset": "X"}).code == "unknown_asset"


def test_a_split_creates_two_children_whose_faces_sum_to_the_parent():
    h = Harness.standard()
    rid = issued(h)
    r = h.send("smea", "receivable-split", receivable=rid, amount=300_000, to=h.id("supplier"))
    assert r.ok
    kids = [query.receivable(h.state, c) for c in r.events[0].data["children"]]
    assert [k["face"] for k in kids] == [300_000, 700_000]
    assert [k["holder"] for k in kids] == [h.id("supplier").hex(), h.id("smea").hex()]
    parent = query.receivable(h.state, rid)
    assert parent["status"] == "split" and parent["outstanding"] == 0 and parent["split_total"] == 1_000_000
    assert h.send("smea", "receivable-split", receivable=rid, amount=1, to=h.id("supplier")).code == "bad_state"
    assert h.send("smea", "receivable-split", receivable=bytes.fromhex(kids[1]["id"]), amount=700_000,
                  to=h.id("supplier")).code == "bad_amount"


def test_a_holder_transfers_a_receivable_down_the_chain():
    h = Harness.standard()
    rid = issued(h)
    assert h.send("smea", "receivable-transfer", receivable=rid, to=h.id("supplier")).ok
    assert query.receivable(h.state, rid)["holder"] == h.id("supplier").hex()
    assert h.send("smea", "receivable-transfer", receivable=rid, to=h.id("smeb")).code == "not_holder"


def test_discounting_needs_the_holders_offer_and_the_buyers_matching_payment():
    h = Harness.standard()
    rid = issued(h)
    assert h.send("smea", "receivable-discount", receivable=rid, buyer=h.id("smeb"), price=1).code == "bad_role"
    assert h.send("smea", "receivable-discount", receivable=rid, buyer=h.id("banka"),
                  price=1_000_001).code == "bad_price"
    assert h.send("smea", "receivable-discount", receivable=rid, buyer=h.id("banka"), price=980_000).ok
    assert h.send("banka", "receivable-discount", receivable=rid, buyer=h.id("banka"),
                  price=900_000).code == "offer_mismatch"
    before = query.account(h.state, h.id("smea"))["balances"][A]
    r = h.send("banka", "receivable-discount", receivable=rid, buyer=h.id("banka"), price=980_000)
    assert r.ok and [e.kind for e in r.events] == ["funds_moved", "receivable_discounted"]
    assert query.account(h.state, h.id("smea"))["balances"][A] == before + 980_000
    assert query.receivable(h.state, rid)["holder"] == h.id("banka").hex()


def test_the_debtor_settles_to_the_current_holder_and_honouring_on_time_raises_its_score():
    h = Harness.standard()
    rid = issued(h)
    assert h.send("smea", "receivable-transfer", receivable=rid, to=h.id("banka")).ok
    score = query.credit(h.state, h.id("smeb"))["score"]
    assert h.send("smeb", "receivable-settle", receivable=rid, amount=400_000).ok
    assert query.receivable(h.state, rid)["outstanding"] == 600_000
    r = h.send("smeb", "receivable-settle", receivable=rid, amount=600_000)
    assert r.ok and "receivable_settled" in [e.kind for e in r.events]
    assert query.receivable(h.state, rid)["status"] == "settled"
    assert query.credit(h.state, h.id("smeb"))["score"] > score
    assert h.send("smeb", "receivable-settle", receivable=rid, amount=1).code == "bad_state"


def test_an_unpaid_receivable_warns_before_due_and_turns_overdue_after_it():
    h = Harness.standard()
    rid = issued(h, due_days=10)
    res = h.advance(8 * DAY_MS)
    assert [e.kind for e in res.events] == ["risk_due_soon"]
    h.advance(2 * DAY_MS)
    assert query.receivable(h.state, rid)["status"] == "accepted"  # paying on the due date is on time
    res = h.advance(1)
    assert "risk_overdue" in [e.kind for e in res.events]
    assert query.receivable(h.state, rid)["status"] == "overdue"
    assert query.credit(h.state, h.id("smeb"))["history"]["recv_late"] == 1
    assert h.send("smeb", "receivable-settle", receivable=rid, amount=1_000_000).ok


def test_collateral_is_registered_by_a_bank_pledged_by_its_owner_and_released_by_the_pledgee():
    h = Harness.standard()
    r = h.send("bankb", "collateral-register", owner=h.id("smea"), category="inventory", valuation=5_000,
               asset=A, doc=DOC)
    assert r.ok
    cid = r.tx_hash
    assert h.send("smea", "collateral-register", owner=h.id("smea"), category="inventory", valuation=1,
                  asset=A, doc=DOC).code == "forbidden_role"
    assert h.send("bankb", "collateral-register", owner=h.id("smea"), category="gold", valuation=1,
                  asset=A, doc=DOC).code == "bad_field"
    assert h.send("smeb", "pledge", item=cid, to=h.id("bankb")).code == "not_owner"
    assert h.send("smea", "pledge", item=cid, to=h.id("smeb")).code == "bad_role"
    assert h.send("smea", "pledge", item=cid, to=h.id("bankb")).ok
    assert h.send("smea", "pledge", item=cid, to=h.id("banka")).code == "pledged"
    assert h.send("banka", "release", item=cid).code == "not_pledgee"
    assert h.send("bankb", "release", item=cid).ok
    assert query.collateral(h.state, cid)["status"] == "free"


def test_a_pledged_receivable_cannot_be_transferred_split_or_discounted():
    h = Harness.standard()
    rid = issued(h)
    assert h.send("smea", "pledge", item=rid, to=h.id("bankb")).ok
    assert h.send("smea", "receivable-transfer", receivable=rid, to=h.id("supplier")).code == "pledged"
    assert h.send("smea", "receivable-split", receivable=rid, amount=1, to=h.id("supplier")).code == "pledged"
    assert h.send("smea", "receivable-discount", receivable=rid, buyer=h.id("banka"), price=1).code == "pledged"
