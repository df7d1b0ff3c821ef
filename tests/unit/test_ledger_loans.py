"""Loans, credit limits and credit scores: apply, approve with auto-disbursement, reject, repay with
interest, penalty after due, default with collateral seized, limits and utilisation alerts."""

from __future__ import annotations

from protocol.ledger import query
from protocol.ledger.harness import Harness
from protocol.ledger.kinds.loans import accrue
from protocol.ledger.model import DAY_MS, YEAR_MS

A = "CNY.BANKA"
DOC = b"\x07" * 32
PRINCIPAL = 100_000_000  # 1,000,000.00


def collateral(h: Harness, owner: str = "smea") -> bytes:
    r = h.send("bankb", "collateral-register", owner=h.id(owner), category="inventory", valuation=2 * PRINCIPAL,
               asset=A, doc=DOC)
    assert r.ok
    return r.tx_hash


def apply(h: Harness, items: list[bytes], term_days: int = 30, amount: int = PRINCIPAL) -> bytes:
    r = h.send("smea", "loan-apply", lender=h.id("bankb"), asset=A, amount=amount, term_ms=term_days * DAY_MS,
               collateral=items)
    assert r.ok, r
    return r.tx_hash


def balance(h: Harness, who: str) -> int:
    return query.account(h.state, h.id(who))["balances"].get(A, 0)


def test_approval_disburses_the_principal_to_the_borrower_at_once():
    h = Harness.standard()
    lid = apply(h, [collateral(h)])
    before = balance(h, "smea")
    r = h.send("bankb", "loan-approve", loan=lid, rate_bps=650, penalty_bps=1_000)
    assert r.ok and [e.kind for e in r.events][:3] == ["loan_approved", "funds_moved", "loan_disbursed"]
    assert balance(h, "smea") == before + PRINCIPAL
    loan = query.loan(h.state, lid)
    assert loan["status"] == "active" and loan["due"] == h.time + 30 * DAY_MS


def test_only_the_named_lender_decides_and_only_once():
    h = Harness.standard()
    lid = apply(h, [])
    assert h.send("banka", "loan-approve", loan=lid, rate_bps=1, penalty_bps=1).code == "not_lender"
    assert h.send("smea", "loan-approve", loan=lid, rate_bps=1, penalty_bps=1).code == "forbidden_role"
    assert h.send("bankb", "loan-reject", loan=lid, reason="thin file").ok
    assert h.send("bankb", "loan-approve", loan=lid, rate_bps=1, penalty_bps=1).code == "bad_state"


def test_rejecting_a_loan_releases_its_collateral():
    h = Harness.standard()
    cid = collateral(h)
    lid = apply(h, [cid])
    assert query.collateral(h.state, cid)["status"] == "pledged"
    assert h.send("bankb", "release", item=cid).code == "collateral_in_use"
    assert h.send("bankb", "loan-reject", loan=lid).ok
    assert query.collateral(h.state, cid)["status"] == "free"


def test_loan_apply_errors():
    h = Harness.standard()
    cid = collateral(h, owner="smeb")
    base = dict(asset=A, amount=1, term_ms=DAY_MS)
    assert h.send("smea", "loan-apply", lender=h.id("smeb"), collateral=[], **base).code == "bad_role"
    assert h.send("smea", "loan-apply", lender=h.id("bankb"), collateral=[cid], **base).code == "not_owner"
    assert h.send("inv", "loan-apply", lender=h.id("bankb"), collateral=[], **base).code == "forbidden_role"
    own = collateral(h)
    assert h.send("smea", "loan-apply", lender=h.id("bankb"), collateral=[own, own], **base).code == "bad_field"


def test_repaying_in_full_before_due_pays_interest_releases_collateral_and_counts_on_time():
    h = Harness.standard()
    cid = collateral(h)
    lid = apply(h, [cid])
    assert h.send("bankb", "loan-approve", loan=lid, rate_bps=650, penalty_bps=1_000).ok
    h.advance(30 * DAY_MS)
    expected_interest = PRINCIPAL * 650 * 30 * DAY_MS // (10_000 * YEAR_MS)
    assert expected_interest == 534_246
    assert query.loan(h.state, lid)["owed_now"] == PRINCIPAL + expected_interest
    lender_before = balance(h, "bankb")
    r = h.send("smea", "loan-repay", loan=lid, amount=10**12)
    assert r.ok
    assert balance(h, "bankb") == lender_before + PRINCIPAL + expected_interest
    loan = query.loan(h.state, lid)
    assert loan["status"] == "repaid" and loan["repaid"] == PRINCIPAL + expected_interest
    assert query.collateral(h.state, cid)["status"] == "free"
    assert query.credit(h.state, h.id("smea"))["history"]["on_time"] == 1


def test_interest_rounding_is_written_down_once_however_often_the_loan_is_touched():
    loan = {"principal": 12_345_679, "rate_bps": 777, "penalty_bps": 0, "rem_i": 0, "rem_p": 0, "interest": 0,
            "penalty": 0, "acc_at": 0, "due": 10**15}
    once = dict(loan)
    for t in range(1, 1_001):
        accrue(loan, t * 1_234_567)
    accrue(once, 1_000 * 1_234_567)
    assert loan["interest"] == once["interest"] == 12_345_679 * 777 * 1_000 * 1_234_567 // (10_000 * YEAR_MS)


def test_a_late_loan_accrues_penalty_turns_overdue_then_defaults_and_the_collateral_moves_to_the_lender():
    h = Harness.standard({"grace_ms": 5 * DAY_MS, "due_soon_ms": 2 * DAY_MS})
    cid = collateral(h)
    lid = apply(h, [cid], term_days=10)
    assert h.send("bankb", "loan-approve", loan=lid, rate_bps=650, penalty_bps=3_650).ok
    assert [e.kind for e in h.advance(9 * DAY_MS).events] == ["risk_due_soon"]
    res = h.advance(DAY_MS + 1)
    assert [e.kind for e in res.events] == ["risk_overdue"]
    h.advance(DAY_MS)
    loan = query.loan(h.state, lid)
    assert loan["status"] == "overdue" and loan["penalty"] == 100_000  # 36.5% a year = 0.1% a day
    score = query.credit(h.state, h.id("smea"))["score"]
    res = h.advance(4 * DAY_MS)
    kinds = [e.kind for e in res.events]
    assert kinds[:2] == ["risk_default", "collateral_seized"]
    assert query.loan(h.state, lid)["status"] == "defaulted"
    seized = query.collateral(h.state, cid)
    assert seized["status"] == "seized" and seized["owner"] == h.id("bankb").hex()
    assert query.credit(h.state, h.id("smea"))["score"] < score
    assert h.send("smea", "loan-repay", loan=lid, amount=1).code == "bad_state"


def test_a_late_repayment_pays_penalty_first_and_counts_as_late():
    h = Harness.standard({"grace_ms": 30 * DAY_MS})
    lid = apply(h, [], term_days=10)
    assert h.send("bankb", "loan-approve", loan=lid, rate_bps=0, penalty_bps=3_650).ok
    h.advance(10 * DAY_MS + 1)
    h.advance(DAY_MS - 1)
    r = h.send("smea", "loan-repay", loan=lid, amount=1_000)
    paid = next(e for e in r.events if e.kind == "loan_payment").data
    assert paid["penalty_paid"] == 1_000 and paid["principal_paid"] == 0
    assert h.send("smea", "loan-repay", loan=lid, amount=10**12).ok
    assert query.credit(h.state, h.id("smea"))["history"]["late"] == 1


def test_a_credit_limit_caps_approvals_and_alerts_on_high_utilisation():
    h = Harness.standard({"util_alert_bps": 8_000})
    assert h.send("bankb", "credit-limit", borrower=h.id("smea"), asset=A, limit=PRINCIPAL).ok
    assert h.send("bankb", "credit-limit", borrower=h.id("inv"), asset=A, limit=1).code == "bad_role"
    big = apply(h, [], amount=PRINCIPAL + 1)
    assert h.send("bankb", "loan-approve", loan=big, rate_bps=1, penalty_bps=1).code == "limit_exceeded"
    lid = apply(h, [], amount=PRINCIPAL * 9 // 10)
    r = h.send("bankb", "loan-approve", loan=lid, rate_bps=1, penalty_bps=1)
    assert r.ok and "risk_limit_utilisation" in [e.kind for e in r.events]
    limit = query.credit(h.state, h.id("smea"))["limits"][0]
    assert limit["used"] == PRINCIPAL * 9 // 10 and limit["utilisation_bps"] == 9_000
    assert h.send("smea", "loan-repay", loan=lid, amount=10**12).ok
    assert query.credit(h.state, h.id("smea"))["limits"][0]["used"] == 0


def test_the_credit_score_is_clamped_and_recomputed_from_history():
    h = Harness.standard({"score_base": 600, "w_payment": 1, "payment_cap": 3})
    for _ in range(5):
        assert h.send("smea", "transfer", to=h.id("smeb"), asset=A, amount=1).ok
    c = query.credit(h.state, h.id("smea"))
    assert c["score"] == 603 and c["history"]["payments"] == 5
