"""Every event kind the ledger emits, with its meaning: the one list `/events?kind=` accepts.

Rule: like error codes, an event kind never changes its name or meaning once released (indexers and
the explorer match on it); `store.emit` refuses a kind that is not listed here, so the list is complete
by construction. Money moves are always one of `MONEY_EVENTS`; a transfer's money move is
`funds_moved` with `reason: "transfer"` (there is no event called `transfer`).
"""

from __future__ import annotations

EVENTS: dict[str, str] = {
    "participant_registered": "a participant was registered (genesis or register)",
    "key_rotated": "a participant's signing key was replaced; the old key is revoked",
    "participant_frozen": "a regulator froze a participant: it can neither send nor receive",
    "participant_unfrozen": "a regulator lifted a freeze",
    "asset_created": "a deposit token (or campaign share token) came into existence",
    "minted": "new units of an asset were credited to an account",
    "burned": "units of an asset were redeemed from an account",
    "funds_moved": "money moved between two accounts (reason: transfer, loan_disbursement, loan_repayment, "
                   "receivable_settle, receivable_discount, fx_accept)",
    "funds_escrowed": "money left an account into the escrow of a campaign or FX quote",
    "funds_released": "money left an escrow to an account",
    "fx_quoted": "a bank quoted a rate and locked what it sells",
    "fx_accepted": "a taker bought from an FX quote",
    "fx_expired": "an FX quote expired and its unsold remainder went back to the bank",
    "receivable_issued": "a creditor recorded a receivable on a debtor",
    "receivable_accepted": "the debtor confirmed a receivable",
    "receivable_rejected": "the debtor disputed a receivable",
    "receivable_transferred": "a receivable passed to a new holder",
    "receivable_split": "a receivable was split into two children",
    "receivable_offered": "the holder offered a receivable to a buyer at a price",
    "receivable_offer_withdrawn": "an open discount offer lapsed (the outstanding amount changed)",
    "receivable_discounted": "the buyer paid the offered price and took the receivable",
    "receivable_paid": "the debtor paid part of a receivable",
    "receivable_settled": "the receivable's outstanding amount reached zero",
    "collateral_registered": "a bank registered valued collateral for an owner",
    "collateral_pledged": "an item was pledged to a bank (for a loan, or standing)",
    "collateral_released": "a pledge ended and the item is free",
    "collateral_detached": "a loan ended; the item keeps the standing pledge it had before that loan",
    "collateral_seized": "a defaulted loan's pledged item became the lender's",
    "loan_applied": "an SME applied for a loan",
    "loan_approved": "the lender approved a loan",
    "loan_disbursed": "the principal of an approved loan was paid to the borrower",
    "loan_rejected": "the lender declined a loan",
    "loan_payment": "part of what a loan owes was paid",
    "loan_repaid": "a loan was paid in full",
    "credit_limit_set": "a bank set a credit limit for a borrower",
    "credit_limit_used": "the open principal a credit limit covers changed",
    "credit_score_changed": "a participant's credit score changed",
    "campaign_created": "an SME opened a crowdfunding campaign",
    "campaign_contributed": "an investor put money into a campaign's escrow",
    "campaign_finalized": "a campaign paid its escrow to the SME and minted shares to investors",
    "campaign_refunded": "a campaign returned every contribution",
    "risk_due_soon": "a loan or receivable falls due soon",
    "risk_overdue": "a loan or receivable is past due",
    "risk_default": "an overdue loan defaulted after its grace period",
    "risk_limit_utilisation": "a credit limit's utilisation reached the alert level",
    "transition_deferred": "a time-driven payout waits because a recipient is frozen; retried later",
    "transition_failed": "a time-driven transition raised a ledger error and was reverted",
}

MONEY_EVENTS = ("funds_moved", "funds_escrowed", "funds_released", "minted", "burned")
