"""Generate a local testnet directory: genesis, one home per node, funded demo wallets, nodes.json.

Layout of `D/`: `genesis.json`, `nodes.json` ([{name, role, admin_url, p2p, home, public_key}]),
`<name>/{config.toml, node_key.json, admin.token, genesis.json}` per node, and `wallets/<name>.json`
(keystores) plus `wallets/PASSWORD`. Ports: p2p `base+1..`, admin API `base+1001..` on 127.0.0.1.

Rule: generation is all-or-nothing into a directory that does not exist yet (or is empty), so a
half-written testnet is never mistaken for a usable one; every file and directory gets its mode from
node/files.py (directories 0700, secrets 0600, config and genesis 0644), whatever the umask.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.utils

from client import discovery
from client.errors import ClientError
from client.wallet import Wallet, write_secret
from node import config as config_mod
from node import genesis as genesis_mod
from node.files import make_private_dir, write_private, write_public
from node.keyfile import generate_token, save_node_key
from protocol.crypto import PrivateKey

VALIDATOR_NAMES = ("banka", "bankb", "smea", "smeb")
OBSERVER_NAMES = ("regulator",)
CHAIN_ID = "smeledger-testnet"
UNIT = 100  # minor units per major unit (2 decimals)
SME_FUNDS = 10_000_000 * UNIT
BANK_FUNDS = 1_000_000_000 * UNIT
API_OFFSET = 1000
NODES_FILE = discovery.NODES_FILE


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    role: str  # "validator" | "observer"
    p2p_port: int
    api_port: int
    key: PrivateKey


def node_names(validators: int, observers: int) -> list[tuple[str, str]]:
    vals = [VALIDATOR_NAMES[i] if i < len(VALIDATOR_NAMES) else f"validator{i + 1}" for i in range(validators)]
    obs = [OBSERVER_NAMES[i] if i < len(OBSERVER_NAMES) else f"observer{i + 1}" for i in range(observers)]
    return [(n, "validator") for n in vals] + [(n, "observer") for n in obs]


def _wallet_cast(accounts: int) -> list[tuple[str, tuple[str, ...], int]]:
    """(name, roles, kyc) of every demo wallet."""
    cast: list[tuple[str, tuple[str, ...], int]] = [
        ("banka", ("BANK",), 3), ("bankb", ("BANK",), 3), ("smea", ("SME",), 2), ("smeb", ("SME",), 2),
        ("supplier", ("SME",), 2), ("investor1", ("INVESTOR",), 2), ("investor2", ("INVESTOR",), 2),
        ("regulator", ("REGULATOR",), 3)]
    cast += [(f"user{i + 1:02d}", ("SME",), 1) for i in range(accounts)]
    return cast


def _ledger_spec(wallets: dict[str, Wallet], kyc: dict[str, int], genesis_time: int) -> dict[str, Any]:
    banka, bankb = wallets["banka"].account, wallets["bankb"].account
    assets = [{"id": "CNY.BANKA", "issuer": banka, "decimals": 2},
              {"id": "CNY.BANKB", "issuer": bankb, "decimals": 2},
              {"id": "USD.BANKB", "issuer": bankb, "decimals": 2}]
    balances: list[dict[str, Any]] = []
    for name, w in wallets.items():
        if "BANK" in w.roles:
            for a in assets:
                if a["issuer"] == w.account:
                    balances.append({"account": w.account, "asset": a["id"], "amount": BANK_FUNDS})
        elif "REGULATOR" not in w.roles:
            for asset_id in ("CNY.BANKA", "CNY.BANKB"):
                balances.append({"account": w.account, "asset": asset_id, "amount": SME_FUNDS})
            if name.startswith("investor"):
                balances.append({"account": w.account, "asset": "USD.BANKB", "amount": SME_FUNDS})
    participants = [{"id": w.account, "name": n, "roles": list(w.roles), "kyc": kyc[n]}
                    for n, w in wallets.items()]
    return {"participants": participants, "assets": assets, "balances": balances, "time": genesis_time}


def create(directory: str | Path, *, validators: int = 4, observers: int = 1, accounts: int = 8,
           base_port: int = 7700, kdf: str = "interactive", host: str = "127.0.0.1",
           chain_id: str = CHAIN_ID) -> list[dict[str, Any]]:
    """Write a complete testnet into `directory`; returns the rows of nodes.json."""
    d = Path(directory)
    if validators < 1 or observers < 0 or accounts < 0 or accounts > 1000:
        raise ClientError("testnet: need validators >= 1, observers >= 0, accounts 0..1000", code="usage")
    if not 1 <= base_port <= 65535 - API_OFFSET - validators - observers:
        raise ClientError(f"testnet: base port {base_port} leaves no room for the node ports", code="usage")
    if d.exists() and any(d.iterdir()):
        raise ClientError(f"testnet: {d} already exists and is not empty", code="exists")
    tmp = d.with_name(f".{d.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    make_private_dir(tmp, parents=True)
    try:
        rows = _write(tmp, d.resolve(), validators, observers, accounts, base_port, kdf, host, chain_id)
        if d.exists():
            d.rmdir()
        tmp.rename(d)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows


def _write(tmp: Path, final: Path, validators: int, observers: int, accounts: int, base_port: int, kdf: str,
           host: str, chain_id: str) -> list[dict[str, Any]]:
    genesis_time = int(time.time() * 1000)
    specs = [NodeSpec(name, role, base_port + 1 + i, base_port + API_OFFSET + 1 + i,
                      PrivateKey(nacl.utils.random(32)))
             for i, (name, role) in enumerate(node_names(validators, observers))]
    # demo wallets
    wallets = {name: Wallet.generate(name, roles) for name, roles, _k in _wallet_cast(accounts)}
    wdir = tmp / "wallets"
    make_private_dir(wdir)
    password = nacl.utils.random(12).hex()
    write_secret(wdir / "PASSWORD", (password + "\n").encode())
    for name, w in wallets.items():
        w.save(wdir / f"{name}.json", password, kdf)
    kyc = {n: k for n, _r, k in _wallet_cast(accounts)}
    ledger = _ledger_spec(wallets, kyc, genesis_time)
    gdoc = {"chain_id": chain_id, "genesis_time": genesis_time,
            "validators": [{"name": s.name, "public_key": s.key.public_key.hex()}
                           for s in specs if s.role == "validator"],
            "consensus": {}, "ledger": ledger}
    gen = genesis_mod.from_value(gdoc)
    genesis_mod.save(gen, tmp / "genesis.json")
    observer_keys = [s.key.public_key.hex() for s in specs if s.role == "observer"]
    rows = []
    for s in specs:
        home = tmp / s.name
        make_private_dir(home)
        save_node_key(home / "node_key.json", s.key)
        write_private(home / "admin.token", (generate_token() + "\n").encode())
        write_public(home / "genesis.json", (tmp / "genesis.json").read_bytes())
        doc: dict[str, dict[str, Any]] = {
            "node": {"name": s.name, "chain_id": chain_id},
            "p2p": {"host": host, "port": s.p2p_port, "observers": observer_keys,
                    "peers": [{"name": o.name, "public_key": o.key.public_key.hex(), "host": host,
                               "port": o.p2p_port} for o in specs if o is not s]},
            "api": {"host": host, "port": s.api_port},
            "logging": {"level": "info"},
            "testnet": {"allow_time_offset": True},
        }
        write_public(home / config_mod.CONFIG_FILE, config_mod.render(doc).encode("utf-8"))
        config_mod.load(home)  # what we wrote must read back
        rows.append({"name": s.name, "role": s.role, "admin_url": f"http://{host}:{s.api_port}",
                     "p2p": f"{host}:{s.p2p_port}", "home": str(final / s.name),
                     "public_key": s.key.public_key.hex()})
    write_public(tmp / NODES_FILE, (json.dumps(rows, indent=2) + "\n").encode("utf-8"))
    return rows


def free_port_block(count: int, lo: int = 20000, hi: int = 32000) -> int:
    """A base port B such that B+1..B+count and B+1001..B+1000+count are free on 127.0.0.1 right now.

    Below the kernel's ephemeral range (32768+ here): a node restarted by a test must get its port
    back, and an outgoing connection may take any free ephemeral port while the node is down."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(lo, hi - 1100)
        ports = [base + 1 + i for i in range(count)] + [base + 1001 + i for i in range(count)]
        socks = []
        try:
            for p in ports:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block found")


def load_nodes(directory: str | Path) -> list[dict[str, Any]]:
    return discovery.load_nodes(directory)
