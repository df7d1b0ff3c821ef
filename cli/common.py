"""What every `smeledger` command shares: output (text or `--json`), passwords, and the node to ask.

Rule: a command prints its result to stdout (one JSON document with `--json`) and never an error: errors
are raised and `cli.main` prints them. The node comes from `client.discovery` (`--node`, else
`SMELEDGER_NODE`, else the testnet directory, else the default), never from a hard-coded URL.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any

from client import discovery
from client.client import Client
from client.errors import UsageError, WalletError
from client.wallet import keystore_info, read_password
from protocol import api


def out(args: argparse.Namespace, doc: Any, text: str | None = None) -> None:
    doc = api.to_builtins(doc)
    if args.json or text is None:
        print(json.dumps(doc, indent=None if args.json else 2, sort_keys=False))
    else:
        print(text)


def target(args: argparse.Namespace) -> discovery.Target:
    return discovery.resolve(args.node, args.testnet)


def client(args: argparse.Namespace, timeout: float = 10.0) -> Client:
    """A client of the resolved node; on a testnet the other nodes take over when it is down."""
    return Client.discover(args.node, args.testnet, timeout=timeout)


def password(args: argparse.Namespace, confirm: bool = False) -> str:
    if getattr(args, "password_file", None):
        return read_password(args.password_file)
    env = os.environ.get("SMELEDGER_PASSWORD")
    if env:
        return env
    if not sys.stdin.isatty():
        raise UsageError("no password: pass --password-file FILE or set SMELEDGER_PASSWORD")
    pw = getpass.getpass("wallet password: ")
    if confirm and getpass.getpass("repeat password: ") != pw:
        raise WalletError("passwords do not match")
    return pw


def account_id(text: str) -> str:
    """An account id from 64 hex characters or `@wallet.json`."""
    return str(keystore_info(text[1:])["public_key"]) if text.startswith("@") else text
