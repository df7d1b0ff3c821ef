"""Admission static checks: a body that fails its kind's static checks is refused by `admission_error`
with the very code the block gives it, and only state-dependent failures are left to the block."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.ledger import admission_error
from protocol.ledger.harness import Harness
from protocol.ledger.kinds.money import MAX_MEMO
from protocol.ledger.model import DAY_MS, MAX_AMOUNT

A = "CNY.BANKA"
DOC = b"\x10" * 32


def _cases(h: Harness) -> list[tuple[str, str, dict[str, Any], str]]:
    to = h.id("smeb")
    pay = {"to": to, "asset": A, "amount": 5}
    later = h.time + DAY_MS
    return [
        ("smea", "transfer", {**pay, "amount": 0}, "bad_field"),
        ("smea", "transfer", {**pay, "amount": MAX_AMOUNT + 1}, "bad_field"),
        ("smea", "transfer", {**pay, "amount": "5"}, "bad_field"),
        ("smea", "transfer", {**pay, "memo": b"m" * (MAX_MEMO + 1)}, "bad_field"),
        ("smea", "transfer", {**pay, "surprise": 1}, "bad_field"),
        ("smea", "transfer", {"to": to, "asset": A}, "bad_field"),
        ("smea", "transfer", {**pay, "to": b"\x01" * 31}, "bad_field"),
        ("smea", "transfer", {**pay, "asset": "cny.banka"}, "bad_asset"),
        ("smea", "transfer", {**pay, "asset": "A" * 25}, "bad_field"),
        ("reg", "register", {"id": b"\x02" * 32, "name": "x", "roles": ["SME", "SME"], "kyc": 1}, "bad_role"),
        ("reg", "register", {"id": b"\x02" * 32, "name": "x", "roles": ["KING"], "kyc": 1}, "bad_role"),
        ("reg", "register", {"id": b"\x02" * 32, "name": "x", "roles": ["SME"], "kyc": 4}, "bad_field"),
        ("banka", "fx-quote", {"base": A, "quote": A, "rate": 1, "amount": 1, "expiry": later}, "asset_mismatch"),
        ("banka", "collateral-register", {"owner": to, "category": "gold", "valuation": 1, "asset": A,
                                          "doc": DOC}, "bad_field"),
        ("smea", "loan-apply", {"lender": h.id("banka"), "asset": A, "amount": 1, "term_ms": DAY_MS,
                                "collateral": [DOC, DOC]}, "bad_field"),
        ("smea", "loan-apply", {"lender": h.id("banka"), "asset": A, "amount": 1, "term_ms": 0,
                                "collateral": []}, "bad_field"),
        ("smea", "campaign-create", {"asset": A, "target": 5, "minimum": 6, "deadline": later}, "bad_amount"),
        ("smea", "receivable-issue", {"debtor": to, "face": 1, "asset": "BAD ASSET", "due": later, "doc": DOC},
         "bad_asset"),
    ]


CASES = _cases(Harness.standard())  # the standard harness is the same every time: same keys, same clock


@pytest.mark.parametrize(("name", "kind", "fields", "code"), CASES,
                         ids=[f"{c[1]}-{c[3]}-{i}" for i, c in enumerate(CASES)])
def test_a_body_that_fails_a_static_check_is_refused_at_admission_with_the_blocks_own_code(name, kind, fields, code):
    h = Harness.standard()
    tx = h.tx(name, kind, **fields)
    err = admission_error(h.state, tx)
    assert err is not None and err.code == code, err
    receipt = h.block([tx]).receipts[0]
    assert (receipt.status, receipt.code) == ("failed", code)


def test_a_well_formed_tx_whose_failure_depends_on_state_passes_admission_and_fails_in_the_block():
    h = Harness.standard()
    tx = h.tx("smea", "transfer", to=h.id("smeb"), asset=A, amount=10**10 + 1)
    assert admission_error(h.state, tx) is None
    assert h.block([tx]).receipts[0].code == "insufficient_funds"


def test_sender_checks_come_before_static_checks_at_admission_as_in_the_block():
    h = Harness.standard()
    tx = h.tx("smea", "register", id=b"\x02" * 32, name="x", roles=["KING"], kyc=1)
    assert admission_error(h.state, tx).code == "forbidden_role"
    assert h.block([tx]).receipts[0].code == "forbidden_role"
