"""History below a state-synced node's snapshot: verified old blocks added under the stored history.

A node that joined by state sync at height H holds full history (block, certificate, receipts, block
events, tx index, derived state indexes, state and results roots) only from H+1; `BlockStore.history_from()`
says from where (0: everything, genesis included). `add_history` writes verified older blocks directly
below it, one synced batch per call, together with the lowered `history_from`, so history only ever grows
downward without holes.

Rule: verifying the blocks is the caller's job (node/sync/history.py: hash chain, certificates, results
roots); this module checks only that they fit exactly below the stored history, and writes nothing
otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from protocol.block import Block
from storage import schema
from storage.blocks import BlockStore
from storage.errors import HeightMismatch, StorageError
from storage.records import tx_hash_of

u64 = schema.u64


@dataclass(frozen=True, slots=True)
class HistoryBlock:
    """One verified old block to add below the stored history, with everything that belongs to it."""

    block: Block
    raw: bytes  # the block's canonical bytes, as served
    certificate: bytes
    receipts: tuple[bytes, ...]
    events: bytes  # the block's own result bytes (stored under `E`)


def add_history(blocks: BlockStore, items: Sequence[HistoryBlock], index: Sequence[tuple[bytes, bytes]],
                roots: Mapping[int, tuple[bytes, bytes]], new_from: int) -> None:
    """Write verified blocks [new_from, history_from()-1] (above 0; none when new_from is 0) with their
    certificates, receipts, own results, tx index (first inclusion wins: lower heights overwrite), the
    derived state-index entries `index` (logical keys, outside the Merkle root), the (state root, results
    root) of heights `roots` (from the certified headers two above them), and the new history_from, in
    one synced batch. Raises HeightMismatch when the blocks do not sit directly below the stored
    history; nothing is written then."""
    with blocks.state.lock:
        current = blocks.history_from()
        wanted = list(range(max(new_from, 1), current))
        if not 0 <= new_from < current or sorted(it.block.height for it in items) != wanted:
            raise HeightMismatch(f"history blocks {[it.block.height for it in items][:4]}... do not fill "
                                 f"[{new_from}, {current - 1}]")
        with blocks.db.batch(sync=True) as b:
            put = b.put
            for it in sorted(items, key=lambda x: -x.block.height):  # the lowest position is put last
                h, block = it.block.height, it.block
                if len(it.receipts) != len(block.txs):
                    raise StorageError(f"{len(it.receipts)} receipts for {len(block.txs)} txs at {h}",
                                       code="bad_commit")
                put(schema.block_key(h), it.raw)
                put(schema.block_hash_key(block.hash), u64(h))
                put(schema.certificate_key(h), it.certificate)
                put(schema.block_events_key(h), it.events)
                for i in range(len(block.txs) - 1, -1, -1):
                    put(schema.receipt_key(h, i), it.receipts[i])
                    put(schema.tx_index_key(tx_hash_of(block.txs[i])), schema.tx_location_value(h, i))
            for key, value in index:
                put(schema.state_key(key), value)
            for h, (state_root, results_root) in roots.items():
                put(schema.state_root_at_key(h), state_root)
                put(schema.results_root_at_key(h), results_root)
            put(schema.META_HISTORY_FROM, u64(new_from))
