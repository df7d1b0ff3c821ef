"""An in-memory ledger chain for tests, the simulator and examples: named keys, blocks, one clock.

Rule: everything is deterministic from the names and the times handed in (keys are derived as
sha256(seed_prefix + name)); nothing here reads a clock or draws randomness. Blocks are applied
through the public `apply_block` on an `Overlay` whose changes are then committed to a `MemoryState`,
exactly as the node does with storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from protocol.block import GENESIS_PARENT, BlockHeader
from protocol.crypto import PrivateKey, sha256
from protocol.ledger.engine import apply_block, next_nonce
from protocol.ledger.genesis import apply_genesis
from protocol.ledger.model import BlockResult, Receipt
from protocol.merkle import MemoryNodeStore, MerkleTree
from protocol.state import MemoryState, Overlay
from protocol.tx import SignedTx

CHAIN = "smeledger-test"
T0 = 1_700_000_000_000


class Harness:
    def __init__(self, participants: Sequence[tuple[str, Sequence[str]]], *,
                 assets: Sequence[tuple[str, str]] = (), balances: Sequence[tuple[str, str, int]] = (),
                 params: dict[str, int] | None = None, time: int = T0, seed_prefix: bytes = b"smeledger:") -> None:
        self.keys: dict[str, PrivateKey] = {}
        for name, _ in participants:
            self.keys[name] = PrivateKey(sha256(seed_prefix + name.encode()))
        self.state = MemoryState()
        self.height = 0
        self.time = time
        self.blocks: list[tuple[BlockHeader, list[SignedTx]]] = []
        self.last_changes: dict[bytes, bytes | None] = {}
        self.last_result: BlockResult | None = None
        self.spec: dict[str, Any] = {
            "participants": [{"id": self.id(n).hex(), "name": n, "roles": list(r), "kyc": 2}
                             for n, r in participants],
            "assets": [{"id": a, "issuer": self.id(i).hex(), "decimals": 2} for a, i in assets],
            "balances": [{"account": self.id(n).hex(), "asset": a, "amount": amt} for n, a, amt in balances],
            "params": dict(params or {}),
            "time": time,
        }
        ov = Overlay(self.state)
        apply_genesis(ov, self.spec)
        self.state.apply(ov.changes())

    @classmethod
    def standard(cls, params: dict[str, int] | None = None) -> Harness:
        """Regulator, two banks with deposit tokens, three SMEs and an investor, all funded."""
        people = [("reg", ["REGULATOR"]), ("banka", ["BANK"]), ("bankb", ["BANK"]), ("smea", ["SME"]),
                  ("smeb", ["SME"]), ("supplier", ["SME"]), ("inv", ["INVESTOR"])]
        assets = [("CNY.BANKA", "banka"), ("USD.BANKB", "bankb")]
        balances = [(n, a, 10**10) for n, _ in people if n != "reg" for a, _ in assets]
        return cls(people, assets=assets, balances=balances, params=params)

    def clone(self) -> Harness:
        """An independent copy (state, blocks, keys) to branch from a common prefix cheaply."""
        other = Harness.__new__(Harness)
        other.keys = dict(self.keys)
        other.state = MemoryState(dict(self.state.items()))
        other.height = self.height
        other.time = self.time
        other.blocks = list(self.blocks)
        other.spec = self.spec
        other.last_changes = {}
        other.last_result = None
        return other

    def id(self, name: str) -> bytes:
        return self.keys[name].public_key

    def add_key(self, name: str, seed_prefix: bytes = b"smeledger:") -> bytes:
        self.keys[name] = PrivateKey(sha256(seed_prefix + name.encode()))
        return self.keys[name].public_key

    def tx(self, name: str, kind: str, /, nonce: int | None = None, **fields: Any) -> SignedTx:
        key = self.keys[name]
        body: dict[str, Any] = {"chain": CHAIN, "kind": kind, "from": key.public_key,
                                "nonce": next_nonce(self.state, key.public_key) if nonce is None else nonce}
        body.update({k: v for k, v in fields.items() if v is not None})
        return SignedTx.create(key, body)

    def block(self, txs: Sequence[SignedTx] = (), advance_ms: int = 0) -> BlockResult:
        self.time += advance_ms
        self.height += 1
        header = BlockHeader(chain=CHAIN, height=self.height, parent=GENESIS_PARENT, proposer=b"\x00" * 32,
                             view=0, time=self.time, tx_root=b"\x00" * 32, state_root=b"\x00" * 32,
                             results_root=b"\x00" * 32)
        ov = Overlay(self.state)
        result = apply_block(ov, header, list(txs))
        self.last_result = result
        self.last_changes = ov.changes()
        self.state.apply(self.last_changes)
        self.blocks.append((header, list(txs)))
        return result

    def send(self, name: str, kind: str, /, **fields: Any) -> Receipt:
        """One tx in its own block at the current time; returns its receipt."""
        return self.block([self.tx(name, kind, **fields)]).receipts[0]

    def advance(self, ms: int) -> BlockResult:
        return self.block((), advance_ms=ms)


def replay(spec: dict[str, Any], blocks: Sequence[tuple[BlockHeader, Sequence[SignedTx]]]) -> MemoryState:
    """Apply genesis and the same blocks to a fresh MemoryState."""
    state = MemoryState()
    ov = Overlay(state)
    apply_genesis(ov, spec)
    state.apply(ov.changes())
    for header, txs in blocks:
        ov = Overlay(state)
        apply_block(ov, header, list(txs))
        state.apply(ov.changes())
    return state


def state_root(state: MemoryState) -> bytes:
    """The Merkle state root (protocol.merkle) of the whole state, built from scratch."""
    tree = MerkleTree(MemoryNodeStore())
    changes: dict[bytes, bytes | None] = dict(state.items())
    return tree.update(changes).root


def state_digest(state: MemoryState) -> bytes:
    """SHA-256 over the sorted (key, value) pairs: a stand-in for the Merkle state root."""
    h = b"".join(len(k).to_bytes(4, "big") + k + len(v).to_bytes(4, "big") + v for k, v in state.items())
    return sha256(h)
