"""Rules that span kinds, each one an independent audit broke (issue 11): a pledged receivable's
payments reach the pledgee, a discount offer lapses when the outstanding amount changes, a credit limit
counts loans opened before it, a frozen participant receives nothing on any path, a credit counter
moves only with money between distinct parties, and a loan decision releases only its own pledges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from protocol.ledger import query
from protocol.ledger.harness import Harness
from protocol.ledger.model import DAY_MS, Receipt

A = "CNY.BANKA"
U = "USD.BANKB"
DOC = b"\x5a" * 32


def ok(r: Receipt) -> bytes:
    assert r.ok, r
    return r.tx_hash


def kinds(r: Receipt) -> list[str]:
    return [e.kind for e in r.events]


def bal(h: Harness, who: str, asset: str = A) -> int:
    return query.account(h.state, h.id(who))["balances"].get(asset, 0)


def receivable(h: Harness, face: int, creditor: str = "smea", debtor: str = "smeb", due_days: int = 60) -> bytes:
    rid = ok(h.send(creditor, "receivable-issue", debtor=h.id(debtor), face=face, asset=A,
                    due=h.time + due_days * DAY_MS, doc=DOC))
    ok(h.send(debtor, "receivable-accept", receivable=rid))
    return rid


def loan(h: Harness, items: list[bytes], amount: int, approve: bool = True, term_days: int = 30,
         borrower: str = "smea", lender: str = "bankb", asset: str = A) -> bytes:
    lid = ok(h.send(borrower, "loan-apply", lender=h.id(lender), asset=asset, amount=amount,
                    term_ms=term_days * DAY_MS, collateral=items))
    if approve:
        ok(h.send(lender, "loan-approve", loan=lid, rate_bps=0, penalty_bps=0))
    return lid


def state_of(h: Harness) -> dict[bytes, bytes]:
    return dict(h.state.items())


def unchanged_but_nonce(h: Harness, before: dict[bytes, Any], r: Receipt) -> None:
    assert not r.ok
    from protocol.ledger import keys
    changed = {k for k in set(before) | set(state_of(h)) if before.get(k) != h.state.get(k)}
    assert changed <= {keys.HEIGHT, keys.TIME, keys.EVENT_CURSOR, keys.RESULTS} | {k for k in changed if k.startswith(b"n/")}


# ---- 1. value owed on a pledged receivable reaches the pledgee --------------------------------------


def test_a_debtors_payment_on_a_pledged_receivable_pays_the_lender_and_the_surplus_only_after_the_loan():
    h = Harness.standard()
    rid = receivable(h, 50_000)
    lid = loan(h, [rid], 30_000)
    lender, borrower = bal(h, "bankb"), bal(h, "smea")
    r = h.send("smeb", "receivable-settle", receivable=rid, amount=20_000)
    assert r.ok
    moved = [e.data for e in r.events if e.kind == "funds_moved"]
    assert [(m["to"], m["amount"]) for m in moved] == [(h.id("bankb"), 20_000)]
    assert "loan_payment" in kinds(r)
    assert bal(h, "bankb") == lender + 20_000 and bal(h, "smea") == borrower
    assert query.loan(h.state, lid)["principal"] == 10_000
    rec = query.receivable(h.state, rid)
    assert rec["outstanding"] == 30_000 and rec["pledged_to"] == h.id("bankb").hex()

    r = h.send("smeb", "receivable-settle", receivable=rid, amount=30_000)
    assert r.ok
    moved = [(e.data["to"], e.data["amount"]) for e in r.events if e.kind == "funds_moved"]
    assert moved == [(h.id("bankb"), 10_000), (h.id("smea"), 20_000)]
    assert {"loan_repaid", "collateral_released", "receivable_settled"} <= set(kinds(r))
    assert query.loan(h.state, lid)["status"] == "repaid"
    assert query.receivable(h.state, rid)["status"] == "settled"
    assert bal(h, "bankb") == lender + 30_000 and bal(h, "smea") == borrower + 20_000


def test_a_pledged_receivable_still_owed_at_default_is_seized_by_the_lender():
    h = Harness.standard({"grace_ms": DAY_MS})
    rid = receivable(h, 50_000, due_days=90)
    lid = loan(h, [rid], 30_000, term_days=10)
    assert h.send("smeb", "receivable-settle", receivable=rid, amount=5_000).ok
    h.advance(10 * DAY_MS + 1)
    res = h.advance(DAY_MS + 1)
    assert "collateral_seized" in [e.kind for e in res.events]
    assert query.loan(h.state, lid)["status"] == "defaulted"
    rec = query.receivable(h.state, rid)
    assert rec["holder"] == h.id("bankb").hex() and rec["outstanding"] == 45_000


def test_a_receivable_pledged_without_an_active_loan_cannot_be_settled_and_stays_pledged():
    h = Harness.standard()
    bare = receivable(h, 10_000)
    assert h.send("smea", "pledge", item=bare, to=h.id("bankb")).ok
    applied = receivable(h, 10_000)
    loan(h, [applied], 5_000, approve=False)
    for rid in (bare, applied):
        before = state_of(h)
        r = h.send("smeb", "receivable-settle", receivable=rid, amount=1_000)
        assert r.code == "pledged"
        unchanged_but_nonce(h, before, r)
        assert query.receivable(h.state, rid)["pledged_to"] == h.id("bankb").hex()


def test_a_receivable_secures_only_a_loan_in_its_own_asset():
    h = Harness.standard()
    rid = receivable(h, 50_000)
    r = h.send("smea", "loan-apply", lender=h.id("bankb"), asset=U, amount=1_000, term_ms=DAY_MS, collateral=[rid])
    assert r.code == "asset_mismatch"
    assert h.send("smea", "pledge", item=rid, to=h.id("bankb")).ok
    r = h.send("smea", "loan-apply", lender=h.id("bankb"), asset=U, amount=1_000, term_ms=DAY_MS, collateral=[rid])
    assert r.code == "asset_mismatch"


def test_a_pledged_receivable_is_not_paid_while_its_lender_is_frozen():
    h = Harness.standard()
    rid = receivable(h, 50_000)
    loan(h, [rid], 30_000)
    assert h.send("reg", "freeze", account=h.id("bankb")).ok
    assert h.send("smeb", "receivable-settle", receivable=rid, amount=1).code == "recipient_frozen"


# ---- 2. a stale discount offer --------------------------------------------------------------------


def test_a_discount_offer_lapses_when_the_debtor_pays_part_of_the_receivable():
    h = Harness.standard()
    rid = receivable(h, 50_000)
    assert h.send("smea", "receivable-discount", receivable=rid, buyer=h.id("banka"), price=40_000).ok
    r = h.send("smeb", "receivable-settle", receivable=rid, amount=45_000)
    assert r.ok and "receivable_offer_withdrawn" in kinds(r)
    assert query.receivable(h.state, rid)["offer"] is None
    buyer = bal(h, "banka")
    r = h.send("banka", "receivable-discount", receivable=rid, buyer=h.id("banka"), price=40_000)
    assert r.code == "offer_mismatch"
    assert bal(h, "banka") == buyer and query.receivable(h.state, rid)["holder"] == h.id("smea").hex()
    assert h.send("smea", "receivable-discount", receivable=rid, buyer=h.id("banka"),
                  price=5_001).code == "bad_price"
    assert h.send("smea", "receivable-discount", receivable=rid, buyer=h.id("banka"), price=4_000).ok
    r = h.send("banka", "receivable-discount", receivable=rid, buyer=h.id("banka"), price=4_000)
    assert r.ok and bal(h, "banka") == buyer - 4_000


# ---- 3. credit limits count every open loan they cover ---------------------------------------------


def test_a_credit_limit_set_while_a_loan_is_open_counts_it_and_repaying_it_cannot_free_more():
    h = Harness.standard()
    first = loan(h, [], 1_000_000)
    r = h.send("bankb", "credit-limit", borrower=h.id("smea"), asset=A, limit=1_000_000)
    assert r.ok and r.events[0].data["used"] == 1_000_000
    second = loan(h, [], 1_000_000, approve=False)
    assert h.send("bankb", "loan-approve", loan=second, rate_bps=0, penalty_bps=0).code == "limit_exceeded"
    assert h.send("smea", "loan-repay", loan=first, amount=400_000).ok
    assert query.credit(h.state, h.id("smea"))["limits"][0]["used"] == 600_000
    assert h.send("smea", "loan-repay", loan=first, amount=600_000).ok
    assert query.credit(h.state, h.id("smea"))["limits"][0]["used"] == 0
    assert h.send("bankb", "loan-approve", loan=second, rate_bps=0, penalty_bps=0).ok
    third = loan(h, [], 1, approve=False)
    assert h.send("bankb", "loan-approve", loan=third, rate_bps=0, penalty_bps=0).code == "limit_exceeded"
    assert query.credit(h.state, h.id("smea"))["limits"][0]["used"] == 1_000_000


def test_a_credit_limit_cannot_be_set_in_another_asset_than_the_open_loans_it_would_cover():
    h = Harness.standard()
    loan(h, [], 1_000, asset=U)
    assert h.send("bankb", "credit-limit", borrower=h.id("smea"), asset=A, limit=10**6).code == "asset_mismatch"
    assert h.send("bankb", "credit-limit", borrower=h.id("smea"), asset=U, limit=10**6).ok


def test_a_default_writes_the_principal_off_the_limit():
    h = Harness.standard({"grace_ms": DAY_MS})
    loan(h, [], 700, term_days=1)
    assert h.send("bankb", "credit-limit", borrower=h.id("smea"), asset=A, limit=1_000).ok
    h.advance(DAY_MS + 1)
    h.advance(DAY_MS + 1)
    assert query.credit(h.state, h.id("smea"))["limits"][0]["used"] == 0


# ---- 4. a frozen participant receives nothing --------------------------------------------------------


def test_an_fx_accept_that_would_pay_a_frozen_bank_is_refused():
    h = Harness.standard()
    qid = ok(h.send("banka", "fx-quote", base=A, quote=U, rate=10**8, amount=1_000, expiry=h.time + DAY_MS))
    assert h.send("reg", "freeze", account=h.id("banka")).ok
    before = bal(h, "banka", U)
    assert h.send("smea", "fx-accept", quote_id=qid, amount=100).code == "recipient_frozen"
    assert bal(h, "banka", U) == before


def paid_after_unfreeze(h: Harness, who: str, until_due: int, status: Callable[[], str], late: Callable[[], Receipt],
                        done: str) -> int:
    """Freeze `who` and let its payout fall due: the transition is deferred (the object stays open, a late
    tx finds it expired, `who`'s balance does not move); after the unfreeze the next retry runs it (event
    `done`). Returns what `who` received then."""
    assert h.send("reg", "freeze", account=h.id(who)).ok
    before = bal(h, who)
    assert [e.kind for e in h.advance(until_due).events] == ["transition_deferred"]
    assert bal(h, who) == before and status() == "open"
    assert late().code == "expired"
    assert h.send("reg", "unfreeze", account=h.id(who)).ok
    assert done in [e.kind for e in h.advance(DAY_MS).events]
    return bal(h, who) - before


def test_an_fx_quote_of_a_frozen_bank_keeps_its_escrow_until_the_bank_is_unfrozen():
    h = Harness.standard({"frozen_retry_ms": DAY_MS})
    qid = ok(h.send("banka", "fx-quote", base=A, quote=U, rate=10**8, amount=1_000, expiry=h.time + DAY_MS))
    paid = paid_after_unfreeze(h, "banka", DAY_MS, lambda: query.fx_quote(h.state, qid)["status"],
                               lambda: h.send("smea", "fx-accept", quote_id=qid, amount=1), "fx_expired")
    assert paid == 1_000


def campaign(h: Harness, target: int = 1_000, minimum: int = 500, days: int = 10) -> bytes:
    return ok(h.send("smea", "campaign-create", asset=A, target=target, minimum=minimum,
                     deadline=h.time + days * DAY_MS))


def test_nobody_contributes_to_the_campaign_of_a_frozen_owner():
    h = Harness.standard()
    cid = campaign(h)
    assert h.send("reg", "freeze", account=h.id("smea")).ok
    assert h.send("inv", "campaign-contribute", campaign=cid, amount=100).code == "recipient_frozen"


def test_a_campaign_whose_owner_is_frozen_at_its_deadline_pays_out_only_after_the_unfreeze():
    h = Harness.standard({"frozen_retry_ms": DAY_MS})
    cid = campaign(h)
    assert h.send("inv", "campaign-contribute", campaign=cid, amount=600).ok
    paid = paid_after_unfreeze(h, "smea", 10 * DAY_MS, lambda: query.campaign(h.state, cid)["status"],
                               lambda: h.send("banka", "campaign-contribute", campaign=cid, amount=1),
                               "campaign_finalized")
    assert paid == 600


def test_refunds_and_shares_wait_while_an_investor_is_frozen():
    h = Harness.standard({"frozen_retry_ms": DAY_MS})
    short = campaign(h, target=1_000, minimum=900)
    full = campaign(h, target=1_000, minimum=900)
    assert h.send("inv", "campaign-contribute", campaign=short, amount=100).ok
    assert h.send("inv", "campaign-contribute", campaign=full, amount=100).ok
    assert h.send("reg", "freeze", account=h.id("inv")).ok
    r = h.send("banka", "campaign-contribute", campaign=full, amount=900)
    assert r.ok and "campaign_finalized" not in kinds(r) and "transition_deferred" in kinds(r)
    investor = bal(h, "inv")
    res = h.advance(10 * DAY_MS)
    assert "campaign_refunded" not in [e.kind for e in res.events]
    assert bal(h, "inv") == investor
    assert all(query.campaign(h.state, c)["status"] == "open" for c in (short, full))
    assert h.send("reg", "unfreeze", account=h.id("inv")).ok
    res = h.advance(DAY_MS)
    assert {"campaign_refunded", "campaign_finalized"} <= {e.kind for e in res.events}
    shares = query.campaign(h.state, full)["shares"]
    assert bal(h, "inv") == investor + 100 and bal(h, "inv", shares) == 100


def test_a_filled_campaign_pays_out_at_once_when_nobody_is_frozen():
    h = Harness.standard()
    cid = campaign(h)
    r = h.send("inv", "campaign-contribute", campaign=cid, amount=1_000)
    assert r.ok and "campaign_finalized" in kinds(r)


# ---- 5. credit history moves only with money between distinct parties ------------------------------


def test_a_debtor_settling_a_receivable_it_holds_itself_gains_no_credit_history():
    h = Harness.standard()
    rid = receivable(h, 50_000)
    assert h.send("smea", "receivable-transfer", receivable=rid, to=h.id("smeb")).ok
    before = query.credit(h.state, h.id("smeb"))
    money = bal(h, "smeb")
    r = h.send("smeb", "receivable-settle", receivable=rid, amount=50_000)
    assert r.ok and "funds_moved" not in kinds(r) and "credit_score_changed" not in kinds(r)
    assert query.credit(h.state, h.id("smeb")) == before
    assert bal(h, "smeb") == money
    assert query.receivable(h.state, rid)["status"] == "settled"


# ---- 7. a loan decision releases only the pledges that loan made ------------------------------------


def collateral(h: Harness, owner: str = "smea") -> bytes:
    return ok(h.send("bankb", "collateral-register", owner=h.id(owner), category="inventory", valuation=10**6,
                     asset=A, doc=DOC))


def test_rejecting_a_loan_keeps_a_pledge_made_before_it_and_releases_the_loans_own():
    h = Harness.standard()
    standing, own = collateral(h), collateral(h)
    assert h.send("smea", "pledge", item=standing, to=h.id("bankb")).ok
    lid = loan(h, [standing, own], 1_000, approve=False)
    r = h.send("bankb", "loan-reject", loan=lid)
    assert r.ok
    released = [e.data["item"] for e in r.events if e.kind == "collateral_released"]
    assert released == [own]
    assert "collateral_detached" in kinds(r)
    kept = query.collateral(h.state, standing)
    assert kept["status"] == "pledged" and kept["pledged_to"] == h.id("bankb").hex() and kept["loan"] == ""
    assert query.collateral(h.state, own)["status"] == "free"
    assert h.send("bankb", "release", item=standing).ok


def test_repaying_a_loan_keeps_a_receivable_pledge_made_before_it():
    h = Harness.standard()
    rid = receivable(h, 10_000)
    assert h.send("smea", "pledge", item=rid, to=h.id("bankb")).ok
    lid = loan(h, [rid], 1_000)
    r = h.send("smea", "loan-repay", loan=lid, amount=1_000)
    assert r.ok and "collateral_released" not in kinds(r)
    assert query.receivable(h.state, rid)["pledged_to"] == h.id("bankb").hex()
    assert h.send("smea", "receivable-transfer", receivable=rid, to=h.id("supplier")).code == "pledged"
