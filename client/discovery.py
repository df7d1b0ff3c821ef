"""Which node a client talks to: `--node`, else `SMELEDGER_NODE`, else a testnet directory (`--testnet
DIR`, or `.testnet` in the working directory when it exists) read from its nodes file, else the default
`http://127.0.0.1:8701` (DESIGN section 6).

Rule: the answer says where it came from, so a command can tell the user which node it asked; a testnet
gives every node's URL (the first is asked, the others take over when it cannot be reached).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.errors import ClientError

DEFAULT_NODE = "http://127.0.0.1:8701"
ENV_NODE = "SMELEDGER_NODE"
DEFAULT_TESTNET = ".testnet"
NODES_FILE = "nodes.json"


@dataclass(frozen=True, slots=True)
class Target:
    urls: tuple[str, ...]
    source: str  # "--node", "SMELEDGER_NODE", "testnet <dir>" or "default"
    testnet: Path | None = None

    @property
    def url(self) -> str:
        return self.urls[0]


def load_nodes(directory: str | Path) -> list[dict[str, Any]]:
    """The rows of a testnet's nodes file: [{name, role, admin_url, p2p, home, public_key}, ...]."""
    p = Path(directory) / NODES_FILE
    try:
        rows = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClientError(f"no testnet at {directory} (missing {NODES_FILE}); start one with "
                          f"`smeledger testnet up --dir {directory}`", code="not_found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClientError(f"cannot read {p}: {exc}", code="bad_testnet") from None
    if not isinstance(rows, list) or not rows or not all(
            isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("admin_url"), str)
            and "home" in r for r in rows):
        raise ClientError(f"{p} is not a list of nodes with name, admin_url and home", code="bad_testnet")
    return rows


def find_testnet(testnet: str | Path | None, cwd: Path | None = None) -> Path | None:
    """The testnet directory asked for, or `.testnet` under `cwd` when it holds a nodes file."""
    if testnet is not None:
        return Path(testnet)
    d = (cwd or Path.cwd()) / DEFAULT_TESTNET
    return d if (d / NODES_FILE).is_file() else None


def resolve(node: str | None = None, testnet: str | Path | None = None, *,
            env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Target:
    env = os.environ if env is None else env
    if node:
        return Target((node,), "--node")
    if env.get(ENV_NODE):
        return Target((env[ENV_NODE],), ENV_NODE)
    d = find_testnet(testnet, cwd)
    if d is not None:
        rows = load_nodes(d)
        return Target(tuple(str(r["admin_url"]) for r in rows), f"testnet {d}", d)
    return Target((DEFAULT_NODE,), "default")
