"""Money kinds: issue, redeem, transfer with a memo, FX quote and accept, quote expiry."""

from __future__ import annotations

from protocol.ledger import query
from protocol.ledger.harness import Harness
from protocol.ledger.kinds.fx import cost_of
from protocol.ledger.model import DAY_MS

A = "CNY.BANKA"
B = "USD.BANKB"


def bal(h: Harness, who: str, asset: str) -> int:
    return query.account(h.state, h.id(who))["balances"].get(asset, 0)


def test_a_bank_issues_its_own_token_to_an_account_and_supply_grows():
    h = Harness.standard()
    before = query.asset(h.state, A)["supply"]
    r = h.send("banka", "issue", asset=A, amount=500, to=h.id("smea"))
    assert r.ok and [e.kind for e in r.events] == ["minted"]
    assert query.asset(h.state, A)["supply"] == before + 500


def test_a_bank_cannot_issue_another_banks_token():
    h = Harness.standard()
    assert h.send("banka", "issue", asset=B, amount=1).code == "not_issuer"


def test_a_bank_creates_a_new_deposit_token_on_first_issue_but_not_a_share_token():
    h = Harness.standard()
    r = h.send("banka", "issue", asset="HKD.BANKA", amount=9, decimals=2)
    assert r.ok and r.events[0].kind == "asset_created"
    assert query.asset(h.state, "HKD.BANKA")["issuer"] == h.id("banka").hex()
    assert h.send("banka", "issue", asset="SH.ABC", amount=1).code == "bad_asset"
    assert h.send("banka", "issue", asset="bad id", amount=1).code == "bad_asset"


def test_a_bank_redeems_only_its_own_token_from_its_own_balance():
    h = Harness.standard()
    r = h.send("banka", "redeem", asset=A, amount=100)
    assert r.ok and r.events[0].kind == "burned"
    assert query.asset(h.state, A)["redeemed"] == 100
    assert h.send("banka", "redeem", asset=B, amount=1).code == "not_issuer"
    assert h.send("banka", "redeem", asset=A, amount=10**15).code == "insufficient_funds"


def test_a_transfer_carries_an_opaque_memo_in_its_event():
    h = Harness.standard()
    r = h.send("smea", "transfer", to=h.id("smeb"), asset=A, amount=42, memo=b"sealed-bytes")
    assert r.ok
    ev = r.events[0]
    assert ev.data["memo"] == b"sealed-bytes" and ev.data["amount"] == 42 and ev.accounts == (h.id("smea"), h.id("smeb"))


def test_transfer_errors_have_stable_codes():
    h = Harness.standard()
    assert h.send("smea", "transfer", to=h.id("smea"), asset=A, amount=1).code == "self_transfer"
    assert h.send("smea", "transfer", to=h.id("smeb"), asset="NOPE", amount=1).code == "unknown_asset"
    assert h.send("smea", "transfer", to=h.id("smeb"), asset=A, amount=10**15).code == "insufficient_funds"
    assert h.send("smea", "transfer", to=b"\x01" * 32, asset=A, amount=1).code == "not_registered"
    assert h.send("smea", "transfer", to=h.id("smeb"), asset=A, amount=1, memo=b"x" * 1025).code == "bad_field"


def test_an_fx_quote_locks_the_base_and_an_accept_swaps_atomically_at_the_rounded_up_price():
    h = Harness.standard()
    q = h.send("banka", "fx-quote", base=A, quote=B, rate=13_870_000, amount=1_000_000, expiry=h.time + DAY_MS)
    assert q.ok
    locked_before = bal(h, "banka", A)
    r = h.send("smea", "fx-accept", quote_id=q.tx_hash, amount=333)
    assert r.ok
    cost = cost_of(333, 13_870_000)
    assert cost == 47  # 333 * 0.1387 = 46.19 -> 47, rounded in the bank's favour
    assert bal(h, "banka", B) == 10**10 + cost and bal(h, "banka", A) == locked_before
    assert query.fx_quote(h.state, q.tx_hash)["remaining"] == 1_000_000 - 333
    assert h.send("smea", "fx-accept", quote_id=q.tx_hash, amount=1_000_000).code == "bad_amount"
    assert h.send("banka", "fx-accept", quote_id=q.tx_hash, amount=1).code == "self_transfer"


def test_an_fx_quote_expires_and_returns_the_unsold_remainder_to_the_bank():
    h = Harness.standard()
    start = bal(h, "banka", A)
    q = h.send("banka", "fx-quote", base=A, quote=B, rate=10**8, amount=1_000, expiry=h.time + DAY_MS)
    assert bal(h, "banka", A) == start - 1_000
    assert h.send("smea", "fx-accept", quote_id=q.tx_hash, amount=400).ok
    res = h.advance(DAY_MS)
    assert "fx_expired" in [e.kind for e in res.events]
    assert bal(h, "banka", A) == start - 400
    assert h.send("smea", "fx-accept", quote_id=q.tx_hash, amount=1).code == "bad_state"


def test_an_fx_quote_needs_distinct_assets_a_future_expiry_and_funds():
    h = Harness.standard()
    assert h.send("banka", "fx-quote", base=A, quote=A, rate=1, amount=1, expiry=h.time + 1).code == "asset_mismatch"
    assert h.send("banka", "fx-quote", base=A, quote=B, rate=1, amount=1, expiry=h.time).code == "past_due"
    assert h.send("banka", "fx-quote", base=A, quote=B, rate=1, amount=10**15,
                  expiry=h.time + 1).code == "insufficient_funds"
    assert h.send("smea", "fx-quote", base=A, quote=B, rate=1, amount=1, expiry=h.time + 1).code == "forbidden_role"
