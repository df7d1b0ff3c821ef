"""The client side's error tree (SDK, wallets, tx builders).

Rule: every failure the SDK reports is a `ClientError` subclass with a stable machine-readable `code`
(for an API answer: the node's own error code) and a one-line `message`; the CLI prints it and exits
non-zero. Nothing here imports the daemon.
"""

from __future__ import annotations


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


class WalletError(ClientError):
    code = "wallet_error"


class WrongPassword(WalletError):
    code = "wrong_password"


class UsageError(ClientError):
    """Input to a builder or command that cannot be used (unknown kind, bad field value)."""

    code = "usage"
