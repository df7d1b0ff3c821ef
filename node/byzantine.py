"""Test-only byzantine behaviour for chaos runs: `smeledger run --byzantine MODE` on a testnet.

A thin layer between the consensus driver and the P2P layer. The replica and the driver inside stay honest
(they persist their votes, execute and commit as always); only the consensus messages that leave the node
are changed, as a validator whose operator turned hostile would change them:

- `silent`: sends no consensus message at all (it still receives, executes, serves sync and gossip);
- `equivocate`: as primary, proposes one block to half of the validators and a conflicting one (same txs,
  another time) to the others, and votes for both; as a backup, sends half of the validators a vote for a
  block that does not exist alongside its real vote to the other half;
- `flood`: every consensus message it sends is followed by `FLOOD_PER_MESSAGE` validly signed votes for
  future views and heights and random blocks (the bounded future-view buffers must hold);
- `garbage`: sends its messages with broken signatures, in other validators' names, or as bodies that do
  not decode (peers must drop the message or the link, never the node).

Rule: refused unless the chain id marks a testnet (`is_testnet_chain`), so no production chain can run
it; `protocol/` knows nothing of it; its randomness comes from one generator seeded from the
environment (`SMELEDGER_BYZANTINE_SEED`), so a chaos seed replays the same choices.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from node.errors import ConfigError
from node.p2p import P2P
from node.p2p.node import Handler
from protocol import consensus as cs
from protocol.block import Block
from protocol.crypto import PrivateKey, sha256
from protocol.messages import T_CONS

MODES = ("equivocate", "silent", "flood", "garbage")
TESTNET_MARKS = frozenset({"testnet", "devnet", "test", "chaos"})
FLOOD_PER_MESSAGE = 32
FLOOD_VIEW_SPAN = 200  # flooded votes name views up to this far ahead (beyond the future-view window)
FLOOD_HEIGHT_SPAN = 400
ALT_BLOCKS = 64  # conflicting blocks remembered (to vote for them too); the oldest are forgotten
SEED_ENV = "SMELEDGER_BYZANTINE_SEED"


def is_testnet_chain(chain_id: str) -> bool:
    """A chain id marks a testnet when one of its dash-separated words is testnet, devnet, test or chaos."""
    return bool(TESTNET_MARKS & set(chain_id.lower().split("-")))


def check_allowed(mode: str, chain_id: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"config error: --byzantine must be one of {', '.join(MODES)}")
    if not is_testnet_chain(chain_id):
        raise ConfigError(f"config error: --byzantine is for testnets only, and chain id {chain_id!r} does not "
                          f"mark one (a dash-separated word {', '.join(sorted(TESTNET_MARKS))})")


class ByzantineOutbox:
    """What the consensus driver sends through instead of the P2P layer (the same calls)."""

    def __init__(self, mode: str, p2p: P2P, key: PrivateKey, chain_id: str, validators: Sequence[bytes],
                 log: Any, seed: int | None = None) -> None:
        check_allowed(mode, chain_id)
        self.mode = mode
        self.p2p = p2p
        self.key = key
        self.chain_id = chain_id
        self.validators = tuple(validators)
        self.index = self.validators.index(key.public_key)
        self.log = log.bind(component="byzantine", mode=mode)
        self.rng = random.Random(int(os.environ.get(SEED_ENV, "0") or 0) if seed is None else seed)
        self._alt: OrderedDict[bytes, Block] = OrderedDict()  # honest block hash -> conflicting block
        self.sent = 0
        self.forged = 0

    # ---- the P2P calls the driver makes --------------------------------------------------------------

    def register(self, msg_type: str, handler: Handler) -> None:
        self.p2p.register(msg_type, handler)

    def send(self, peer: bytes, msg_type: str, body: Any) -> bool:
        if msg_type != T_CONS:
            return self.p2p.send(peer, msg_type, body)
        return sum(self._out(body, [peer])) > 0

    def broadcast(self, msg_type: str, body: Any, *, validators_only: bool = False) -> int:
        if msg_type != T_CONS:
            return self.p2p.broadcast(msg_type, body, validators_only=validators_only)
        peers = [p for p in self.p2p.connected() if not validators_only or self.p2p.is_validator(p)]
        return sum(self._out(body, peers))

    # ---- behaviours ------------------------------------------------------------------------------------

    def _out(self, body: Any, peers: list[bytes]) -> list[bool]:
        if self.mode == "silent" or not peers:
            return []
        msg = cs.decode_message(body)
        if self.mode == "equivocate":
            return self._equivocate(msg, body, peers)
        if self.mode == "flood":
            sent = self._to(peers, body)
            for _ in range(FLOOD_PER_MESSAGE):
                sent += self._to(peers, self._future_vote(msg).to_value())
            return sent
        return self._garbage(msg, body, peers)

    def _to(self, peers: list[bytes], body: Any) -> list[bool]:
        self.sent += len(peers)
        return [self.p2p.send(p, T_CONS, body) for p in peers]

    def _halves(self, peers: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        vals = sorted(p for p in peers if p in self.validators)
        others = [p for p in peers if p not in self.validators]
        return vals[: len(vals) // 2] + others, vals[len(vals) // 2:]

    def _equivocate(self, msg: cs.Message, body: Any, peers: list[bytes]) -> list[bool]:
        first, second = self._halves(peers)
        if not second:
            return self._to(peers, body)
        if isinstance(msg, cs.PrePrepare):
            b = msg.block
            alt = Block.build(chain=b.header.chain, height=b.height, parent=b.header.parent,
                              proposer=b.header.proposer, view=b.header.view, time=b.header.time + 1,
                              state_root=b.header.state_root, results_root=b.header.results_root, txs=b.txs)
            self._remember(b.hash, alt)
            conflicting: Any = cs.PrePrepare.create(self.key, msg.chain, msg.view, alt, self.index).to_value()
        elif isinstance(msg, cs.Prepare | cs.Commit):
            alt_block = self._alt.get(msg.block_hash)
            other = alt_block.hash if alt_block is not None else sha256(b"equivocate" + self.rng.randbytes(16))
            conflicting = type(msg).create(self.key, msg.chain, msg.view, msg.height, other, self.index).to_value()
        else:
            return self._to(peers, body)
        self.forged += len(second)
        return self._to(first, body) + self._to(second, conflicting)

    def _remember(self, honest: bytes, alt: Block) -> None:
        self._alt[honest] = alt
        while len(self._alt) > ALT_BLOCKS:
            self._alt.popitem(last=False)

    def _future_vote(self, msg: cs.Message) -> cs.Prepare | cs.Commit:
        view = getattr(msg, "view", 0) + self.rng.randint(1, FLOOD_VIEW_SPAN)
        height = max(1, getattr(msg, "height", 1)) + self.rng.randint(0, FLOOD_HEIGHT_SPAN)
        cls: type[cs.Prepare] | type[cs.Commit] = cs.Prepare if self.rng.random() < 0.5 else cs.Commit
        fake = sha256(b"flood" + self.rng.randbytes(16))
        return cls.create(self.key, self.chain_id, view, height, fake, self.index)

    def _garbage(self, msg: cs.Message, body: Any, peers: list[bytes]) -> list[bool]:
        choice = self.rng.randrange(4)
        if choice == 0 or not hasattr(msg, "sig"):
            return self._to(peers, body)
        self.forged += len(peers)
        if choice == 1:  # a broken signature
            return self._to(peers, dataclasses.replace(msg, sig=sha256(msg.sig) * 2).to_value())  # type: ignore[type-var]
        if choice == 2:  # in another validator's name
            victim = self.rng.choice([i for i in range(len(self.validators)) if i != self.index] or [self.index])
            return self._to(peers, dataclasses.replace(msg, index=victim, sig=bytes(64)).to_value())  # type: ignore[type-var]
        junk = dict(body) if isinstance(body, dict) else {}
        junk["junk"] = self.rng.randbytes(self.rng.randint(1, 64))  # an unknown field: does not decode
        return self._to(peers, junk)


def outbox_for(mode: str | None, p2p: P2P, key: PrivateKey, chain_id: str, validators: Sequence[bytes],
               log: Any) -> P2P | ByzantineOutbox:
    """The P2P layer itself, or the byzantine layer around it when `mode` is set (testnets only)."""
    if mode is None:
        return p2p
    if key.public_key not in validators:
        raise ConfigError("config error: --byzantine needs a validator key (this node is an observer)")
    out = ByzantineOutbox(mode, p2p, key, chain_id, validators, log)
    out.log.warning("byzantine_mode_on", note="test-only: this validator misbehaves on purpose")
    return out

