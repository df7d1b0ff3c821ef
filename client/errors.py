"""The client side's error tree (SDK, wallets, tx builders).

Rule: every failure the SDK reports is a `ClientError` subclass with a stable machine-readable `code`
(for an API answer: the node's own error code, e.g. `nonce_too_low`; for a failed tx: the receipt's code,
e.g. `insufficient_funds`) and a one-line `message`; the CLI prints it and exits non-zero. Nothing here
imports the daemon.
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """A call through the client SDK failed: the node answered an error, or could not be reached."""

    code = "client_error"

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None,
                 body: object = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.http_status = http_status
        self.body = body

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code

    def to_json(self) -> dict[str, Any]:
        """The `{"error": code, "message": text}` shape the node API and `smeledger --json` use."""
        return {"error": self.code, "message": self.message}


class Unreachable(ClientError):
    """No node answered (connection refused, timeout, DNS)."""

    code = "unreachable"


class BadResponse(ClientError):
    """A node answered something that is not the document the API describes."""

    code = "bad_response"


class NotFound(ClientError):
    """The node has no such object (HTTP 404, code `not_found`)."""

    code = "not_found"


class TxRejected(ClientError):
    """`POST /txs` refused the tx (code: the admission code, e.g. `bad_signature`, `nonce_too_low`)."""

    code = "rejected"


class TxFailed(ClientError):
    """The tx was committed but failed in execution; `receipt` holds its code, message and events."""

    code = "failed"

    def __init__(self, message: str, *, code: str, receipt: Any) -> None:
        super().__init__(message, code=code)
        self.receipt = receipt


class TxDropped(ClientError):
    """The node dropped the tx without committing it (it can never commit); `reason` says why."""

    code = "dropped"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, code="dropped")
        self.reason = reason


class TxTimeout(ClientError):
    """The tx was not final within the time asked; `last_status` is what a node said last."""

    code = "timeout"

    def __init__(self, message: str, *, last_status: str) -> None:
        super().__init__(message, code="timeout")
        self.last_status = last_status


class WalletError(ClientError):
    code = "wallet_error"


class WrongPassword(WalletError):
    code = "wrong_password"


class UsageError(ClientError):
    """Input to a builder or command that cannot be used (unknown kind, bad field value)."""

    code = "usage"


class ProofError(ClientError):
    """A light-client check failed: the code names the broken link (`bad_genesis`, `genesis_mismatch`,
    `bad_certificate`, `bad_proof`, `unproven`, `answer_mismatch`, `no_proof`); see client/light.py."""

    code = "bad_proof"
