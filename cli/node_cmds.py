"""`smeledger init | run | status | testnet create|up|down|status`: setting up and watching nodes.

Rule: `init` validates everything before it writes anything (a bad name changes nothing), writes the
config with tomli-w and finds the example config and the systemd unit in the installed package data;
`status` shows the whole testnet when the node came from a testnet directory, one node otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import configs
from cli.common import client, out, target
from client import discovery
from client.client import Client
from client.errors import ClientError
from client.wallet import Wallet
from devtools import devnet
from devtools import testnet as testnet_mod
from node import config as config_mod
from node.byzantine import MODES as BYZANTINE_MODES
from node.errors import NodeError
from node.files import make_private_dir, write_private, write_public
from node.keyfile import generate_token, save_node_key
from protocol import api
from protocol.errors import ProtocolError
from storage.errors import StorageError

UNIT_FILE = "smeledger.service"
UNIT_HOME, UNIT_EXEC = "/var/lib/smeledger", "/opt/smeledger/bin/smeledger"


# ---- init / run ----------------------------------------------------------------------------------

def _unit(home: Path) -> str:
    """The packaged systemd unit, pointed at this home and at the smeledger being run."""
    exe = shutil.which("smeledger") or str(Path(sys.executable).parent / "smeledger")
    return configs.read(configs.SYSTEMD_UNIT).replace(UNIT_EXEC, exe).replace(UNIT_HOME, str(home))


def cmd_init(args: argparse.Namespace) -> int:
    home = Path(args.home).resolve()
    cfg_path = home / config_mod.CONFIG_FILE
    if cfg_path.exists():
        raise NodeError(f"{cfg_path} already exists; refusing to overwrite a node home", code="exists")
    doc = {"node": {"name": args.name, "chain_id": args.chain_id},
           "p2p": {"host": args.p2p_host, "port": args.p2p_port, "observers": [], "peers": []},
           "api": {"host": "127.0.0.1", "port": args.api_port}, "logging": {"level": "info"}}
    config_mod.from_dict(doc, home)  # every field checked before anything is written
    example = configs.path(configs.EXAMPLE_CONFIG)
    text = config_mod.render(doc, f"smeledger node configuration; every setting and its default: {example}")
    make_private_dir(home, parents=True)
    wallet = Wallet.generate()
    save_node_key(home / "node_key.json", wallet.key)
    write_private(home / "admin.token", (generate_token() + "\n").encode())
    write_public(cfg_path, text.encode("utf-8"))
    write_public(home / UNIT_FILE, _unit(home).encode("utf-8"))
    info = {"home": str(home), "public_key": wallet.account, "config": str(cfg_path),
            "systemd_unit": str(home / UNIT_FILE), "example_config": str(example),
            "next": "put genesis.json in the home, list peers in config.toml, then: smeledger run --home HOME"}
    out(args, info, f"initialised {home}\nnode public key: {wallet.account}\n"
                    f"next: copy the chain's genesis.json into {home}, add [[p2p.peers]] to {cfg_path} "
                    f"(every setting: {example}), then `smeledger run --home {home}`; systemd unit for this "
                    f"home: {home / UNIT_FILE} (install to /etc/systemd/system/)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from node.logging import configure
    from node.service import Node

    cfg = config_mod.load(args.home)
    configure(cfg.logging.level, node=cfg.node.name)
    node = Node(cfg, byzantine=args.byzantine)
    try:
        asyncio.run(node.run(install_signals=True, exit_deadline=True))  # this process is the node's
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        if node.failure is None or node.log is None:
            raise  # failed before the node's log existed: main() prints it as one line
        # already logged as one JSON line `node_failed`; a non-zero exit lets systemd restart the node
        return 1 if isinstance(exc, NodeError | ProtocolError | StorageError) else 70
    return 0


# ---- status --------------------------------------------------------------------------------------

def _status_row(name: str, url: str) -> dict[str, Any]:
    try:
        s = Client(url, timeout=3.0).status()
    except ClientError as exc:
        return {"name": name, "url": url, "error": exc.code, "message": exc.message}
    return {"name": name, "url": url, **api.to_builtins(s)}


def testnet_status(args: argparse.Namespace, directory: Path) -> int:
    rows = [_status_row(n["name"], n["admin_url"]) for n in discovery.load_nodes(directory)]
    top = max((r["height"] for r in rows if "error" not in r), default=0)
    for r in rows:
        if "error" not in r:
            r["lag"] = top - r["height"]
    lines = [f"{'node':<10} {'height':>7} {'view':>5} {'primary':<10} {'peers':>5} {'root':<14} {'lag':>4}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['name']:<10} DOWN  {r['message']}")
        else:
            lines.append(f"{r['name']:<10} {r['height']:>7} {r['view']:>5} {r.get('primary_name') or '-':<10} "
                         f"{r['peers']:>5} {(r['state_root'] or '')[:12]:<14} {r['lag']:>4}")
    out(args, rows, "\n".join(lines))
    return 0 if all("error" not in r for r in rows) else 1


def cmd_status(args: argparse.Namespace) -> int:
    t = target(args)
    if t.testnet is not None:
        return testnet_status(args, t.testnet)
    s = api.to_builtins(client(args).status())
    out(args, s, "\n".join(f"{k:<16} {v}" for k, v in s.items()))
    return 0


# ---- testnet ---------------------------------------------------------------------------------------

def _dir(args: argparse.Namespace) -> Path:
    return Path(args.dir or args.testnet or discovery.DEFAULT_TESTNET)


def cmd_testnet(args: argparse.Namespace) -> int:
    d = _dir(args)
    if args.testnet_cmd == "create":
        rows = testnet_mod.create(d, validators=args.validators, observers=args.observers, accounts=args.accounts,
                                  base_port=args.base_port, kdf=args.kdf)
        lines = [f"testnet written to {d} ({len(rows)} nodes, wallets in {d / 'wallets'})"]
        lines += [f"  {r['name']:<10} {r['role']:<9} {r['admin_url']:<24} p2p {r['p2p']}" for r in rows]
        out(args, {"dir": str(d), "nodes": rows}, "\n".join(lines))
        return 0
    if args.testnet_cmd == "up":
        doc = devnet.start(d, args.base_port, timeout=args.timeout, validators=args.validators,
                           observers=args.observers, accounts=args.accounts, kdf=args.kdf, quiet=args.json)
        out(args, doc, devnet.summary(doc))
        return 0
    if args.testnet_cmd == "down":
        rows = devnet.down(d, args.timeout)
        doc = [{"name": n, "outcome": o} for n, o in rows]
        out(args, doc, "\n".join(f"{n:<10} {o}" for n, o in rows) or f"no testnet at {d}: nothing is running")
        return 0
    return testnet_status(args, d)


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help="create a node home (key 0600, config.toml, admin token, "
                                                      "systemd unit)")
    p.add_argument("--home", required=True)
    p.add_argument("--name", default=os.uname().nodename.split(".")[0][:64] or "node")
    p.add_argument("--chain-id", default="smeledger")
    p.add_argument("--p2p-host", default="0.0.0.0")
    p.add_argument("--p2p-port", type=int, default=config_mod.DEFAULT_P2P_PORT)
    p.add_argument("--api-port", type=int, default=config_mod.DEFAULT_API_PORT)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("run", parents=[common], help="run a node in the foreground")
    p.add_argument("--home", required=True)
    p.add_argument("--byzantine", choices=BYZANTINE_MODES, default=None,
                   help="TEST ONLY: make this validator misbehave (refused unless the chain id marks a testnet)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", parents=[common], help="status of the node, or of every node of the testnet")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("testnet", parents=[common], help="a local testnet: create, up, down, status")
    tsub = p.add_subparsers(dest="testnet_cmd", metavar="ACTION", required=True)
    for name, text in (("create", "write a testnet directory (genesis, homes, funded demo wallets)"),
                       ("up", "create it when missing, start every node, wait until they commit"),
                       ("down", "stop every node (SIGTERM, SIGKILL after --timeout)"),
                       ("status", "one line per node: height, view, primary, peers, root, lag")):
        t = tsub.add_parser(name, parents=[common], help=text)
        t.add_argument("--dir", help=f"testnet directory (default: --testnet or {discovery.DEFAULT_TESTNET})")
        if name in ("create", "up"):
            t.add_argument("--base-port", type=int, default=7700, help="p2p base+1.., API base+1001..")
            t.add_argument("--validators", type=int, default=4)
            t.add_argument("--observers", type=int, default=1)
            t.add_argument("--accounts", type=int, default=8, help="extra funded demo accounts (user01..)")
            t.add_argument("--kdf", choices=("interactive", "min", "moderate"), default="interactive",
                           help="wallet KDF limits")
        if name in ("up", "down"):
            t.add_argument("--timeout", type=float, default=devnet.HEALTH_TIMEOUT_S if name == "up"
                           else devnet.STOP_TIMEOUT_S)
    p.set_defaults(func=cmd_testnet)
