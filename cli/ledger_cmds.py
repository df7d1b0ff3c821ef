"""`smeledger wallet | tx <kind> | tx open-memo | query`: keys, transactions and ledger reads.

Rule: a tx's fields are checked (by the ledger's own specs) before the wallet is opened or a node is
asked, so a typo costs neither a password prompt nor a nonce; every node call goes through the SDK.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli.common import account_id, client, out, password
from client import discovery, txbuild
from client.errors import UsageError, WalletError
from client.light import Trust
from client.wallet import KDF_LIMITS, Wallet, keystore_info
from protocol import api
from protocol.ledger import KINDS

QUERY_THINGS = ("accounts", "assets", "receivables", "loans", "campaigns", "collateral", "fx-quotes", "credit",
                "events", "trace", "blocks", "txs")
_ALIASES = {"account": "accounts", "asset": "assets", "receivable": "receivables", "loan": "loans",
            "campaign": "campaigns", "block": "blocks", "tx": "txs", "fx-quote": "fx-quotes"}
OPEN_MEMO = "open-memo"


def cmd_wallet(args: argparse.Namespace) -> int:
    if args.wallet_cmd == "new":
        path = Path(args.out)
        if path.exists():
            raise WalletError(f"{path} exists; refusing to overwrite a keystore")
        roles = tuple(r.strip().upper() for r in (args.roles or "").split(",") if r.strip())
        w = Wallet.generate(args.name or path.stem, roles)
        w.save(path, password(args, confirm=True), args.kdf)
        info = keystore_info(path)
        out(args, info, f"wrote {path}\naccount: {info['account']}")
        return 0
    info = keystore_info(args.file)
    if args.check:
        Wallet.load(args.file, password(args))
        info["password_ok"] = True
    out(args, info, "\n".join(f"{k:<10} {v}" for k, v in info.items()))
    return 0


def cmd_tx(args: argparse.Namespace) -> int:
    spec = txbuild.kind_spec(args.kind)
    fields = txbuild.parse_text(args.kind, {f.name: getattr(args, "f_" + f.name) for f in spec.fields})
    wallet = Wallet.load(args.wallet, password(args))
    c = client(args)
    sub = c.send_kind(wallet, args.kind, fields, args.nonce)
    doc: dict[str, Any] = {"hash": sub.hash, "kind": args.kind, "nonce": sub.tx.nonce, "status": "accepted",
                           "node": c.url}
    text = f"accepted {sub.hash} ({args.kind}, nonce {sub.tx.nonce}) by {c.url}"
    if args.wait is not None:
        receipt = sub.wait(args.wait)
        doc.update(status="committed", height=receipt.height, receipt=receipt)
        text += f"\ncommitted at height {receipt.height}: {receipt.code}"
        text += "".join(f"\n  {e.kind} {e.data}" for e in receipt.events)
    out(args, doc, text)
    return 0


def cmd_open_memo(args: argparse.Namespace) -> int:
    wallet = Wallet.load(args.wallet, password(args))
    memo = client(args).open_memo(wallet, args.hash)
    out(args, {"hash": args.hash, "memo": memo}, memo)
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    thing = _ALIASES.get(args.thing, args.thing)
    if thing not in QUERY_THINGS:
        raise UsageError(f"unknown thing {args.thing!r}; one of {', '.join(QUERY_THINGS)}")
    c = client(args)
    ident = account_id(args.id) if args.id else None
    doc: Any
    if thing == "events":
        doc = c.events(account=ident, kind=args.kind, from_height=args.from_height, limit=args.limit)
    elif ident is None:
        raise UsageError(f"query {thing} needs an id")
    elif thing == "accounts" and args.proof:
        doc = c.verified_account(ident, _trust(args))
    elif thing == "accounts":
        doc = c.account(ident)
    elif thing == "blocks":
        if not ident.isdecimal():
            raise UsageError("query blocks takes a height")
        doc = c.block(int(ident))
    elif thing == "txs":
        doc = c.tx(ident)
    else:
        doc = c.query(thing, ident)
    out(args, api.to_builtins(doc))
    return 0


def _trust(args: argparse.Namespace) -> Trust:
    """The chain an account answer must be proven on: the genesis file given (else the testnet's), checked
    against --genesis-hash when given."""
    expect = None
    if args.genesis_hash is not None:
        try:
            expect = bytes.fromhex(args.genesis_hash)
        except ValueError:
            expect = b""
        if len(expect) != 32:
            raise UsageError("--genesis-hash must be 64 hex characters")
    path = args.genesis
    if path is None:
        testnet = discovery.find_testnet(args.testnet)
        if testnet is None:
            raise UsageError("query accounts --proof needs the chain's genesis file (the genesis.json its nodes "
                             "run with): pass --genesis FILE")
        path = testnet / "genesis.json"
    return Trust.load(path, expect)


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("wallet", parents=[common], help="create or inspect an encrypted keystore")
    wsub = p.add_subparsers(dest="wallet_cmd", metavar="ACTION", required=True)
    w = wsub.add_parser("new", parents=[common], help="generate a key into a new keystore")
    w.add_argument("--out", required=True)
    w.add_argument("--name")
    w.add_argument("--roles", help="comma-separated: BANK,SME,INVESTOR,REGULATOR")
    w.add_argument("--password-file")
    w.add_argument("--kdf", choices=sorted(KDF_LIMITS), default="moderate")
    w = wsub.add_parser("show", parents=[common], help="public fields of a keystore")
    w.add_argument("file")
    w.add_argument("--check", action="store_true", help="also check the password")
    w.add_argument("--password-file")
    p.set_defaults(func=cmd_wallet)

    tx = sub.add_parser("tx", parents=[common], help="build, sign and submit a tx of one kind; open a memo")
    kinds = tx.add_subparsers(dest="kind", metavar="KIND", required=True)
    for name in sorted(KINDS):
        spec = KINDS[name]
        k = kinds.add_parser(name, parents=[common], help=spec.doc.split("\n")[0] if spec.doc else name)
        _wallet_args(k)
        k.add_argument("--nonce", type=int, help="override the nonce (default: the account's next)")
        k.add_argument("--wait", type=float, nargs="?", const=30.0, default=None,
                       help="wait up to this many seconds (default 30) for the receipt")
        for f in spec.fields:
            hint = {"bytes32": "HEX32|@wallet.json", "list": "A,B,..."}.get(f.type, f.type.upper())
            k.add_argument(txbuild.flag(f.name), dest="f_" + f.name, metavar=hint,
                           help=(f.doc or f.name) + ("" if f.required else " (optional)"))
        k.set_defaults(func=cmd_tx)
    k = kinds.add_parser(OPEN_MEMO, parents=[common], help="open the sealed memo of a transfer sent to you")
    k.add_argument("hash", help="hash of the committed transfer")
    _wallet_args(k, "keystore of the recipient")
    k.set_defaults(func=cmd_open_memo)

    p = sub.add_parser("query", parents=[common], help="read ledger objects, blocks and txs")
    p.add_argument("thing", help=", ".join(QUERY_THINGS))
    p.add_argument("id", nargs="?", help="id, hash, height, or @wallet.json")
    p.add_argument("--proof", action="store_true",
                   help="accounts: answer only what Merkle proofs show, under the state root of a header whose "
                        "commit certificate verifies against the genesis validators")
    p.add_argument("--genesis", help="with --proof: the chain's genesis.json (default: the testnet's)")
    p.add_argument("--genesis-hash", help="with --proof: refuse a genesis file that does not hash to this")
    p.add_argument("--kind", help="events: filter by kind")
    p.add_argument("--from-height", type=int)
    p.add_argument("--limit", type=int)
    p.set_defaults(func=cmd_query)


def _wallet_args(p: argparse.ArgumentParser, text: str = "keystore of the sender") -> None:
    p.add_argument("--wallet", required=True, help=text)
    p.add_argument("--password-file", help="file holding the keystore password")
