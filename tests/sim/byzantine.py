"""Byzantine behaviours: each rewrites the actions of an otherwise honest replica before the network
sees them. Rule: every choice comes from the simulator's seeded generator.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from protocol.block import Block
from protocol.consensus import Broadcast, Commit, Prepare, PrePrepare, Send, ViewChange
from protocol.crypto import sha256
from tests.sim.net import CHAIN

if TYPE_CHECKING:
    from tests.sim.net import Node, Sim


class Silent:
    """Receives everything, sends nothing."""

    def transform(self, sim: Sim, node: Node, actions: list[Any]) -> list[Any]:
        return [a for a in actions if not isinstance(a, Broadcast | Send)]


class Equivocator:
    """As primary, proposes one block to half of the validators and another block to the other half,
    and votes for both."""

    def __init__(self) -> None:
        self.alt: dict[bytes, Block] = {}

    def transform(self, sim: Sim, node: Node, actions: list[Any]) -> list[Any]:
        out = []
        others = [m.id for m in sim.nodes if m.id != node.id]
        half_a, half_b = others[: len(others) // 2], others[len(others) // 2:]
        assert node.key is not None
        for a in actions:
            msg = a.msg if isinstance(a, Broadcast) else None
            if isinstance(msg, PrePrepare):
                b = msg.block
                alt = Block.build(chain=b.header.chain, height=b.height, parent=b.header.parent,
                                  proposer=b.header.proposer, view=b.header.view, time=b.header.time + 1,
                                  state_root=b.header.state_root, results_root=b.header.results_root,
                                  txs=(*reversed(b.txs), b"evil-%d" % sim.rng.randrange(1 << 30)))
                self.alt[b.hash] = alt
                sim.transmit(node, msg, half_a)
                sim.transmit(node, PrePrepare.create(node.key, msg.chain, msg.view, alt, msg.index), half_b)
            elif isinstance(msg, Prepare | Commit) and msg.block_hash in self.alt:
                alt = self.alt[msg.block_hash]
                sim.transmit(node, msg, half_a)
                sim.transmit(node, type(msg).create(node.key, msg.chain, msg.view, msg.height, alt.hash, msg.index),
                             half_b)
            else:
                out.append(a)
        if len(self.alt) > 64:
            self.alt.clear()
        return out


class BadSignatures:
    """Sends its messages with corrupted signatures, and forges messages in other validators' names."""

    def transform(self, sim: Sim, node: Node, actions: list[Any]) -> list[Any]:
        out = []
        for a in actions:
            msg = a.msg if isinstance(a, Broadcast) else None
            if msg is not None and hasattr(msg, "sig"):
                bad = dataclasses.replace(msg, sig=sha256(msg.sig) + sha256(b"x" + msg.sig))
                sim.transmit(node, bad, [m.id for m in sim.nodes if m.id != node.id])
                victim = sim.rng.randrange(sim.n)
                forged = dataclasses.replace(msg, index=victim, sig=bytes(64))
                sim.transmit(node, forged, [m.id for m in sim.nodes if m.id != node.id])
                if sim.rng.random() < 0.3:
                    continue  # sometimes only the bad copies go out
            out.append(a)
        return out


class Flooder:
    """Validly signs messages for far-future views and heights, many per event."""

    def transform(self, sim: Sim, node: Node, actions: list[Any]) -> list[Any]:
        r = node.replica
        assert r is not None and node.key is not None and node.index is not None
        everyone = [m.id for m in sim.nodes if m.id != node.id]
        for _ in range(2):
            kind = sim.rng.randrange(3)
            if kind == 0:
                view = r.view + sim.rng.randint(1, 3 * sim.params.future_view_window)
                vc = ViewChange.create(node.key, CHAIN, view, r.committed, r.committed_hash, r.cert,
                                       None, None, node.index)
                sim.transmit(node, vc, everyone)
            else:
                height = r.committed + sim.rng.randint(2, 2 * sim.params.future_height_window)
                fake = sha256(b"flood-%d" % sim.rng.randrange(1 << 30))
                cls = Prepare if kind == 1 else Commit
                sim.transmit(node, cls.create(node.key, CHAIN, r.view + sim.rng.randint(0, 4), height,
                                              fake, node.index), everyone)
        return actions


BEHAVIOURS = {"silent": Silent, "equivocate": Equivocator, "badsig": BadSignatures, "flood": Flooder}
