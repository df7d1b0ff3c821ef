"""The client side of smeledger: the SDK (`Client`), wallets (encrypted keystores) and tx builders.

Rule: nothing here imports the daemon (`node`) or the storage layer; it speaks to nodes only over their
HTTP API and builds transactions from `protocol` alone, as a wallet in another language would.
"""

from client.client import Client
from client.errors import ClientError, UsageError, WalletError, WrongPassword
from client.wallet import Wallet

__all__ = ["Client", "ClientError", "UsageError", "Wallet", "WalletError", "WrongPassword"]
