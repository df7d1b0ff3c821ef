"""The client side of smeledger: the SDK (`Client`, `AsyncClient`), wallets (encrypted keystores), typed
tx builders per kind, and node discovery. See docs/sdk.md.

Rule: nothing here imports the daemon (`node`) or the storage layer; it speaks to nodes only over their
HTTP API and builds transactions from `protocol` alone, as a wallet in another language would.
"""

from client.aio import AsyncClient, AsyncSubmitted
from client.client import Client, Submitted
from client.discovery import resolve as discover
from client.errors import (
    BadResponse,
    ClientError,
    NotFound,
    ProofError,
    TxDropped,
    TxFailed,
    TxRejected,
    TxTimeout,
    Unreachable,
    UsageError,
    WalletError,
    WrongPassword,
)
from client.light import Trust
from client.wallet import Wallet, read_password
from protocol.api import Account, Block, Event, Receipt, Status, TxStatus

__all__ = ["Account", "AsyncClient", "AsyncSubmitted", "BadResponse", "Block", "Client", "ClientError", "Event",
           "NotFound", "ProofError", "Receipt", "Status", "Submitted", "Trust", "TxDropped", "TxFailed", "TxRejected", "TxStatus",
           "TxTimeout", "Unreachable", "UsageError", "Wallet", "WalletError", "WrongPassword", "discover",
           "read_password"]
