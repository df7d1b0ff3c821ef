"""The `smeledger` command line: init, testnet, run, status, wallet, tx <kind>, query, load.

Rule: every command takes `--json`; an error prints ONE line `error: <message>` to stderr and exits
non-zero (1; 2 for usage; 70 for an internal bug, traceback only with SMELEDGER_DEBUG=1; 130 on Ctrl-C). Tracebacks never reach a user: `main` catches the error roots
of every layer (NodeError, ProtocolError, StorageError) and OSError. The CLI talks to nodes only
through the client SDK (`client.Client`).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from client.client import Client, verify_account_proof
from client.errors import ClientError, UsageError, WalletError
from client.wallet import KDF_LIMITS, Wallet, keystore_info, read_password
from devtools import load as load_mod
from devtools import testnet as testnet_mod
from node import config as config_mod
from node.errors import NodeError
from node.files import make_private_dir, write_private, write_public
from node.keyfile import generate_token, save_node_key
from protocol.errors import ProtocolError
from storage.errors import StorageError

QUERY_THINGS = ("accounts", "assets", "receivables", "loans", "campaigns", "collateral", "fx-quotes", "credit",
                "events", "trace", "blocks", "txs")
_ALIASES = {"account": "accounts", "asset": "assets", "receivable": "receivables", "loan": "loans",
            "campaign": "campaigns", "block": "blocks", "tx": "txs"}


def out(args: argparse.Namespace, doc: Any, text: str | None = None) -> None:
    if args.json or text is None:
        print(json.dumps(doc, indent=None if args.json else 2, sort_keys=False))
    else:
        print(text)


# --- init / testnet / run ------------------------------------------------------------------------------

def cmd_init(args: argparse.Namespace) -> int:
    home = Path(args.home)
    cfg_path = home / config_mod.CONFIG_FILE
    if cfg_path.exists():
        raise NodeError(f"{cfg_path} already exists; refusing to overwrite a node home", code="exists")
    make_private_dir(home, parents=True)
    wallet = Wallet.generate()
    save_node_key(home / "node_key.json", wallet.key)
    write_private(home / "admin.token", (generate_token() + "\n").encode())
    doc = {"node": {"name": args.name, "chain_id": args.chain_id},
           "p2p": {"host": args.p2p_host, "port": args.p2p_port, "observers": [], "peers": []},
           "api": {"host": "127.0.0.1", "port": args.api_port}, "logging": {"level": "info"}}
    write_public(cfg_path, config_mod.render(doc).encode("utf-8"))
    info = {"home": str(home.resolve()), "public_key": wallet.account, "config": str(cfg_path),
            "next": "put genesis.json in the home, list peers in config.toml, then: smeledger run --home HOME"}
    out(args, info, f"initialised {info['home']}\nnode public key: {wallet.account}\n"
                    f"next: copy the chain's genesis.json into {home}, add [[p2p.peers]] to {cfg_path}, "
                    f"then `smeledger run --home {home}`")
    return 0


def cmd_testnet(args: argparse.Namespace) -> int:
    rows = testnet_mod.create(args.dir, validators=args.validators, observers=args.observers,
                              accounts=args.accounts, base_port=args.base_port, kdf=args.kdf)
    lines = [f"testnet written to {args.dir} ({len(rows)} nodes, wallets in {Path(args.dir) / 'wallets'})"]
    lines += [f"  {r['name']:<10} {r['role']:<9} {r['admin_url']:<24} p2p {r['p2p']}" for r in rows]
    out(args, {"dir": str(args.dir), "nodes": rows}, "\n".join(lines))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from node.logging import configure
    from node.service import Node

    cfg = config_mod.load(args.home)
    configure(cfg.logging.level)
    node = Node(cfg)
    try:
        asyncio.run(node.run(install_signals=True))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        if node.failure is None or node.log is None:
            raise  # failed before the node's log existed: main() prints it as one line
        # already logged as one JSON line `node_failed`; a non-zero exit lets systemd restart the node
        return 1 if isinstance(exc, NodeError | ProtocolError | StorageError) else 70
    return 0


# --- status ---------------------------------------------------------------------------------------------

def _status_row(name: str, url: str) -> dict[str, Any]:
    try:
        s = Client(url, timeout=3.0).status()
    except ClientError as exc:
        return {"name": name, "url": url, "error": exc.message}
    return {"name": name, "url": url, **s}


def cmd_status(args: argparse.Namespace) -> int:
    if args.testnet:
        nodes = testnet_mod.load_nodes(args.testnet)
        rows = [_status_row(n["name"], n["admin_url"]) for n in nodes]
        top = max((r.get("height", 0) for r in rows if "error" not in r), default=0)
        for r in rows:
            if "error" not in r:
                r["lag"] = top - r["height"]
        lines = [f"{'node':<10} {'height':>7} {'view':>5} {'primary':<10} {'peers':>5} {'root':<14} {'lag':>4}"]
        for r in rows:
            if "error" in r:
                lines.append(f"{r['name']:<10} DOWN  {r['error']}")
            else:
                lines.append(f"{r['name']:<10} {r['height']:>7} {r['view']:>5} {r.get('primary_name') or '-':<10} "
                             f"{r['peers']:>5} {(r['state_root'] or '')[:12]:<14} {r['lag']:>4}")
        out(args, rows, "\n".join(lines))
        return 0 if all("error" not in r for r in rows) else 1
    s = Client(args.node).status()
    out(args, s, "\n".join(f"{k:<16} {v}" for k, v in s.items()))
    return 0


# --- wallets --------------------------------------------------------------------------------------------

def _password(args: argparse.Namespace, confirm: bool = False) -> str:
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


def cmd_wallet(args: argparse.Namespace) -> int:
    if args.wallet_cmd == "new":
        path = Path(args.out)
        if path.exists():
            raise WalletError(f"{path} exists; refusing to overwrite a keystore")
        roles = tuple(r.strip().upper() for r in (args.roles or "").split(",") if r.strip())
        w = Wallet.generate(args.name or path.stem, roles)
        w.save(path, _password(args, confirm=True), args.kdf)
        info = keystore_info(path)
        out(args, info, f"wrote {path}\naccount: {info['account']}")
        return 0
    info = keystore_info(args.file)
    if args.check:
        Wallet.load(args.file, _password(args))
        info["password_ok"] = True
    out(args, info, "\n".join(f"{k:<10} {v}" for k, v in info.items()))
    return 0


# --- tx and query ---------------------------------------------------------------------------------------

def cmd_tx(args: argparse.Namespace) -> int:
    from client.txbuild import build_body, kind_spec, sign

    spec = kind_spec(args.kind)
    values = {f.name: getattr(args, "f_" + f.name) for f in spec.fields}
    build_body(args.kind, values, chain="-", sender=b"\0" * 32, nonce=0)  # field errors before any I/O
    wallet = Wallet.load(args.wallet, _password(args))
    client = Client(args.node)
    chain = client.status()["chain_id"]
    nonce = args.nonce
    if nonce is None:
        try:
            nonce = int(client.account(wallet.account)["nonce"])
        except ClientError as exc:
            if exc.code != "not_found":
                raise
            nonce = 0
    tx = sign(wallet, build_body(args.kind, values, chain=chain, sender=wallet.public_key, nonce=nonce))
    res = client.submit(tx)
    row = (res.get("results") or [{}])[0]
    doc: dict[str, Any] = {"hash": tx.hash_hex, "nonce": nonce, **row}
    if row.get("accepted") and args.wait:
        doc["final"] = client.wait_for_commit(tx.hash, timeout=args.wait)
    text = f"{row.get('status', '?')} {tx.hash_hex} ({row.get('code')}{': ' + row['message'] if row.get('message') else ''})"
    if "final" in doc:
        rec = doc["final"].get("receipt") or {}
        text += f"\n{doc['final']['status']} at height {doc['final'].get('height')}: {rec.get('code')}"
    out(args, doc, text)
    return 0 if row.get("accepted") and doc.get("final", {}).get("status", "committed") == "committed" else 1


def cmd_query(args: argparse.Namespace) -> int:
    thing = _ALIASES.get(args.thing, args.thing)
    if thing not in QUERY_THINGS:
        raise UsageError(f"unknown thing {args.thing!r}; one of {', '.join(QUERY_THINGS)}")
    client = Client(args.node)
    ident = args.id
    if ident and ident.startswith("@"):
        ident = keystore_info(ident[1:])["public_key"]
    if thing == "events":
        doc = client.events(account=ident, kind=args.kind, from_height=args.from_height, limit=args.limit)
    elif ident is None:
        raise UsageError(f"query {thing} needs an id")
    elif thing == "accounts":
        doc = client.account(ident, proof=args.proof)
        if args.proof:
            doc["proof_verified"] = verify_account_proof(doc)
    else:
        doc = client.query(thing, ident)
    out(args, doc, json.dumps(doc, indent=2))
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    return load_mod.run(args)


# --- parser ---------------------------------------------------------------------------------------------

def _kind_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    from protocol.ledger import KINDS

    tx = sub.add_parser("tx", parents=[common], help="build, sign and submit a tx of one kind")
    kinds = tx.add_subparsers(dest="kind", metavar="KIND", required=True)
    for name in sorted(KINDS):
        spec = KINDS[name]
        p = kinds.add_parser(name, parents=[common], help=spec.doc.split("\n")[0] if spec.doc else name)
        p.add_argument("--node", default="http://127.0.0.1:8701", help="node API URL")
        p.add_argument("--wallet", required=True, help="keystore file of the sender")
        p.add_argument("--password-file", help="file holding the keystore password")
        p.add_argument("--nonce", type=int, help="override the nonce (default: the account's next)")
        p.add_argument("--wait", type=float, nargs="?", const=30.0, default=None,
                       help="wait up to this many seconds for the commit")
        for f in spec.fields:
            hint = {"bytes32": "HEX32|@wallet.json", "list": "A,B,..."}.get(f.type, f.type.upper())
            p.add_argument("--" + f.name.replace("_", "-"), dest="f_" + f.name, metavar=hint,
                           help=(f.doc or f.name) + ("" if f.required else " (optional)"))
        p.set_defaults(func=cmd_tx)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    parser = argparse.ArgumentParser(prog="smeledger", parents=[common],
                                     description="smeledger: permissioned PBFT ledger for SME finance")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    p = sub.add_parser("init", parents=[common], help="create a node home (key 0600, config.toml, admin token)")
    p.add_argument("--home", required=True)
    p.add_argument("--name", default=os.uname().nodename.split(".")[0][:64] or "node")
    p.add_argument("--chain-id", default="smeledger")
    p.add_argument("--p2p-host", default="0.0.0.0")
    p.add_argument("--p2p-port", type=int, default=config_mod.DEFAULT_P2P_PORT)
    p.add_argument("--api-port", type=int, default=config_mod.DEFAULT_API_PORT)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("testnet", parents=[common], help="generate a local testnet directory")
    p.add_argument("--dir", required=True)
    p.add_argument("--validators", type=int, default=4)
    p.add_argument("--observers", type=int, default=1)
    p.add_argument("--accounts", type=int, default=8, help="extra funded demo accounts (user01..)")
    p.add_argument("--base-port", type=int, default=7700)
    p.add_argument("--kdf", choices=sorted(KDF_LIMITS), default="interactive", help="wallet KDF limits")
    p.set_defaults(func=cmd_testnet)

    p = sub.add_parser("run", parents=[common], help="run a node in the foreground")
    p.add_argument("--home", required=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", parents=[common], help="status of a node or of a whole testnet")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--node", default="http://127.0.0.1:8701")
    g.add_argument("--testnet", metavar="DIR")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("wallet", parents=[common], help="create or inspect an encrypted keystore")
    wsub = p.add_subparsers(dest="wallet_cmd", required=True)
    w = wsub.add_parser("new", parents=[common])
    w.add_argument("--out", required=True)
    w.add_argument("--name")
    w.add_argument("--roles", help="comma-separated: BANK,SME,INVESTOR,REGULATOR")
    w.add_argument("--password-file")
    w.add_argument("--kdf", choices=sorted(KDF_LIMITS), default="moderate")
    w = wsub.add_parser("show", parents=[common])
    w.add_argument("file")
    w.add_argument("--check", action="store_true", help="also check the password")
    w.add_argument("--password-file")
    p.set_defaults(func=cmd_wallet)

    _kind_parsers(sub, common)

    p = sub.add_parser("query", parents=[common], help="read ledger objects, blocks and txs")
    p.add_argument("thing", help=", ".join(QUERY_THINGS))
    p.add_argument("id", nargs="?", help="id, hash, height, or @wallet.json")
    p.add_argument("--node", default="http://127.0.0.1:8701")
    p.add_argument("--proof", action="store_true", help="accounts: fetch and verify Merkle proofs")
    p.add_argument("--kind", help="events: filter by kind")
    p.add_argument("--from-height", type=int)
    p.add_argument("--limit", type=int)
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("load", parents=[common], help="steady signed-transfer load against a node")
    p.add_argument("--node", default="http://127.0.0.1:8701")
    p.add_argument("--wallets", default=".testnet/wallets")
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--record", help="file for the hashes of committed txs")
    p.add_argument("--nodes", help="comma-separated node URLs to spread submission over (default: --node)")
    p.add_argument("--senders", type=int, help="use at most this many wallets as senders (default: all)")
    p.add_argument("--batch", type=int, help="txs per POST /txs (default 200)")
    p.add_argument("--max-inflight", type=int, help="admitted-not-committed txs per sender (default 400)")
    p.add_argument("--settle", type=float, help="seconds to wait for commits after the last submit (default 15)")
    p.add_argument("--no-confirm", dest="confirm", action="store_false", default=None,
                   help="skip the GET /txs receipt check (record every tx found in a block)")
    p.set_defaults(func=cmd_load)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "json"):
        args.json = False
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except (ClientError, NodeError, ProtocolError, StorageError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: still one line for the user; the traceback only on request
        if os.environ.get("SMELEDGER_DEBUG"):
            traceback.print_exc()
        print(f"error: internal error ({type(exc).__name__}: {exc}); this is a bug — rerun with "
              f"SMELEDGER_DEBUG=1 for the traceback", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
