"""Errors of the P2P layer. Each carries a stable `reason` code that also labels metrics and log events.

Rule: a `ChannelError` ends exactly one connection; nothing here ever stops the node.
"""

from __future__ import annotations


class P2PError(Exception):
    """Root of the P2P layer's errors."""

    reason = "p2p_error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class HandshakeError(P2PError):
    """The authenticated handshake failed; `reason` says why (unknown_key, bad_signature, ...)."""

    reason = "handshake_failed"


class ChannelError(P2PError):
    """An established channel received something it must not accept (replay, garbage, oversize)."""

    reason = "bad_frame"
