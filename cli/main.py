"""The `smeledger` command line: init, testnet create|up|down|status, run, status, wallet, tx <kind>,
tx open-memo, query, load.

Global options work before or after the command: `--json` (machine-readable output and errors),
`--node URL`, `--testnet DIR`. The node is `--node`, else `SMELEDGER_NODE`, else the testnet directory
(`--testnet`, or `.testnet` when present), else http://127.0.0.1:8701.
Rule: an error prints ONE line to stderr — `error: <message>`, or with `--json`
`{"error": "<stable code>", "message": "..."}` — and exits non-zero (1; 2 for usage; 70 for an internal
bug, traceback only with SMELEDGER_DEBUG=1; 130 on Ctrl-C); `run` writes its errors as JSON always, like
every other line a node writes. Tracebacks never reach a user: `main`
catches the error roots of every layer (ClientError, NodeError, ProtocolError, StorageError) and OSError.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from cli import ledger_cmds, node_cmds
from client.errors import ClientError, UsageError
from devtools import load as load_mod
from node.errors import NodeError
from protocol.errors import ProtocolError
from storage.errors import StorageError

GLOBAL_DEFAULTS: dict[str, Any] = {"json": False, "node": None, "testnet": None}


class Parser(argparse.ArgumentParser):
    """argparse that raises a UsageError (so `--json` applies to usage errors too) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def cmd_load(args: argparse.Namespace) -> int:
    return load_mod.run(args)


def build_parser() -> Parser:
    common = Parser(add_help=False)
    g = common.add_argument_group("global options (before or after the command)")
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    g.add_argument("--node", metavar="URL", default=argparse.SUPPRESS,
                   help="node API URL (default: $SMELEDGER_NODE, else the testnet's first node)")
    g.add_argument("--testnet", metavar="DIR", default=argparse.SUPPRESS,
                   help="testnet directory to find nodes in (default: .testnet when present)")
    parser = Parser(prog="smeledger", parents=[common],
                    description="smeledger: permissioned PBFT ledger for SME finance")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    node_cmds.add_parsers(sub, common)
    ledger_cmds.add_parsers(sub, common)

    p = sub.add_parser("load", parents=[common], help="steady signed-transfer load, with live progress")
    p.add_argument("--wallets", help="wallet directory (default: <testnet>/wallets)")
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--record", help="file: every accepted tx hash with its final status")
    p.add_argument("--nodes", help="comma-separated node URLs to spread submission over (default: the node)")
    p.add_argument("--senders", type=int, help="use at most this many wallets as senders (default: all)")
    p.add_argument("--batch", type=int, help="txs per POST /txs (default 200)")
    p.add_argument("--max-inflight", type=int, help="admitted-not-committed txs per sender (default 400)")
    p.add_argument("--settle", type=float, help="seconds to wait for final statuses after the last submit "
                                                "(default 15)")
    p.add_argument("--no-confirm", dest="confirm", action="store_false", default=None,
                   help="skip the final-status check (committed = found in a block; bench mode)")
    p.add_argument("--progress", choices=("auto", "bar", "json", "none"), default="auto",
                   help="live progress: a bar on a terminal, JSON lines on stderr otherwise (auto)")
    p.add_argument("--memo-bytes", type=int, help="attach a memo of this many bytes to every transfer (default 0)")
    p.add_argument("--poll", type=float, help="seconds to pause when a node answers a block request without "
                   "waiting for the block (an error, or its waiters are full; default 0.05)")
    p.set_defaults(func=cmd_load)
    return parser


def _fail(as_json: bool, code: str, message: str, rc: int) -> int:
    if as_json:
        print(json.dumps({"error": code, "message": message}), file=sys.stderr)
    else:
        print(f"error: {message}", file=sys.stderr)
    return rc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    as_json = "--json" in argv or (bool(argv) and argv[0] == "run")  # a node writes JSON lines only
    try:
        args = build_parser().parse_args(argv)
        for k, v in GLOBAL_DEFAULTS.items():
            if not hasattr(args, k):
                setattr(args, k, v)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except KeyboardInterrupt:
        return _fail(as_json, "interrupted", "interrupted", 130)
    except UsageError as exc:
        return _fail(as_json, exc.code, exc.message, 2)
    except (ClientError, NodeError, ProtocolError, StorageError) as exc:
        return _fail(as_json, exc.code, exc.message, 1)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return _fail(as_json, "os_error", f"{exc.strerror or exc}{where}", 1)
    except Exception as exc:  # a bug: still one line for the user; the traceback only on request
        if os.environ.get("SMELEDGER_DEBUG"):
            traceback.print_exc()
        return _fail(as_json, "internal", f"internal error ({type(exc).__name__}: {exc}); this is a bug — "
                     f"rerun with SMELEDGER_DEBUG=1 for the traceback", 70)


if __name__ == "__main__":
    sys.exit(main())
