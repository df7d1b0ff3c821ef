"""The node layer's error tree.

Rule: every failure the node shell reports to an operator or an API client is a `NodeError` subclass
with a stable machine-readable `code`; the CLI prints `message` on one line and exits non-zero, the API
returns `{"error": code, "message": message}`. Protocol and storage errors keep their own roots
(`ProtocolError`, `StorageError`) and are reported the same way; nothing here swallows an exception.
"""

from __future__ import annotations


class NodeError(Exception):
    """Root of every error raised by the node shell."""

    code = "node_error"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class ConfigError(NodeError):
    """A config file that is missing, unreadable, not TOML, or has a wrong or unknown field."""

    code = "config_error"


class GenesisFileError(NodeError):
    code = "genesis_error"


class KeyFileError(NodeError):
    code = "key_error"


class ApiError(NodeError):
    """A request the API refuses; `http_status` is the 4xx/5xx it answers with."""

    code = "bad_request"


class NotFound(ApiError):
    code = "not_found"
    http_status = 404


class Unavailable(ApiError):
    code = "unavailable"
    http_status = 503
