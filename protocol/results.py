"""A block's results and the root that commits to them: its tx receipts and its time-driven events.

Execution follows ordering (and runs one block behind agreement, docs/consensus.md "Pipelining"), so
block h's results are only known after h executed; like its state root, they are committed by the header
of block h+2 (`results_root`, see `protocol.block.state_root_height`), which the commit certificate of h+2
(and, by the hash chain, every later certificate) certifies. That is what lets a node that joined by state
sync fetch old receipts from any peer and check them (docs/sync.md, "History backfill").

    results_root(receipts, events) = merkle_root([sha256(r) for r in receipts] + [sha256(events)])

`receipts` are the canonical bytes of each tx's receipt in block order, `events` the canonical bytes of
the list of the block's time-driven events (those run before its txs). Both are opaque here: the ledger
defines them (`protocol.ledger.results`). Height 0 (genesis) has no receipts: blocks 1 and 2 carry
`GENESIS_RESULTS`. Rule: pure functions of bytes; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol import codec
from protocol.crypto import merkle_root, sha256

NO_EVENTS = codec.encode([])


def results_root(receipts: Sequence[bytes], events: bytes) -> bytes:
    """The commitment to one block's results (see the module docstring)."""
    leaves = [sha256(r) for r in receipts]
    leaves.append(sha256(events))
    return merkle_root(leaves)


GENESIS_RESULTS = results_root((), NO_EVENTS)
