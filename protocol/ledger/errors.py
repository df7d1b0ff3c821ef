"""Ledger rejections: one `LedgerError` class, one stable code per reason.

Rule: a code in `CODES` never changes meaning once released; receipts carry it verbatim and clients
match on it. Raising a `LedgerError` inside a transaction reverts everything the transaction did except
its nonce bump. `GenesisError` rejects a malformed genesis spec before anything is written.
"""

from __future__ import annotations

from protocol.errors import ProtocolError

CODES: dict[str, str] = {
    "bad_nonce": "the nonce is not the sender key's next nonce (the nonce is not bumped)",
    "unknown_kind": "no transaction kind has this name",
    "bad_field": "a body field is missing, unknown, mistyped or out of range",
    "not_registered": "the sender, or an account the tx names, is not a registered participant",
    "key_revoked": "the sender key was rotated away and may no longer sign",
    "frozen": "the sender participant is frozen by a regulator",
    "recipient_frozen": "the receiving participant is frozen",
    "forbidden_role": "the sender's roles do not allow this kind (see the role matrix)",
    "already_registered": "the id or key is already a participant or in use as a key",
    "bad_role": "a role name is not BANK, SME, INVESTOR or REGULATOR, or the counterparty has the wrong role",
    "bad_asset": "the asset id is malformed",
    "unknown_asset": "the asset does not exist",
    "not_issuer": "only the issuing bank may issue or redeem this asset",
    "supply_overflow": "issuing would exceed the maximum supply",
    "insufficient_funds": "the balance is lower than the amount",
    "self_transfer": "sender and counterparty are the same participant",
    "already_frozen": "the participant is already frozen",
    "not_frozen": "the participant is not frozen",
    "not_found": "the receivable, collateral, loan, campaign or quote does not exist",
    "not_debtor": "only the receivable's debtor may do this",
    "not_holder": "only the receivable's holder may do this",
    "not_owner": "only the owner may do this",
    "not_lender": "only the loan's lender may do this",
    "not_borrower": "only the loan's borrower may do this",
    "not_pledgee": "only the bank the item is pledged to may release it",
    "bad_state": "the object is not in a state that allows this transition",
    "bad_amount": "the amount is out of range for this object",
    "bad_price": "the price is zero or above the receivable's outstanding amount",
    "offer_mismatch": "no discount offer to the sender at this price",
    "past_due": "the due date, deadline or expiry is not in the future",
    "pledged": "the item is pledged and cannot move",
    "collateral_in_use": "the item secures an open loan",
    "limit_exceeded": "approving would exceed the credit limit the lender set",
    "over_target": "the contribution would take the campaign above its target",
    "too_many": "a bounded collection (contributors, collateral items) is full",
    "expired": "the quote or campaign has passed its expiry or deadline",
    "asset_mismatch": "the asset does not match the object's asset",
}


class LedgerError(ProtocolError):
    """A transaction was rejected; `code` is one of `CODES`."""

    code = "ledger_error"

    def __init__(self, code: str, message: str = "") -> None:
        if code not in CODES:
            raise ValueError(f"unregistered ledger error code {code!r}")
        super().__init__(message or CODES[code], code=code)


class GenesisError(ProtocolError):
    """The genesis spec is malformed; the message names the offending entry."""

    code = "bad_genesis"
