"""The block store: blocks, commit certificates, the tx index, receipts and per-height state roots.

Rule: committing height h is ONE synced write batch holding the block, its certificate, the block-hash
and tx indexes, the receipts, the staged state ops and the new height / last hash / state root, so a
crash leaves the node at h-1 or h, never in between. Blocks are stored as the exact bytes that were
built or received and are served from those bytes, never re-encoded. Certificates and receipts are
opaque bytes to storage. Pruning is not implemented: everything is kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from protocol.block import Block
from protocol.crypto import HASH_SIZE, sha256
from protocol.errors import ProtocolError
from protocol.tx import SignedTx
from storage import schema
from storage.db import Database, Op
from storage.errors import DatabaseCorrupt, HeightMismatch, StorageError
from storage.state import StagedState, StateStore

u64 = schema.u64


def tx_hash_of(raw: bytes) -> bytes:
    """The tx hash (sha256 of the body bytes); an undecodable envelope is indexed by sha256(raw)."""
    try:
        return SignedTx.from_wire(raw).hash
    except ProtocolError:
        return sha256(raw)


class BlockStore:
    """Blocks and their indexes over one `Database`, committing state through a `StateStore`."""

    def __init__(self, db: Database, state: StateStore) -> None:
        self.db = db
        self.state = state

    # -- chain head ------------------------------------------------------------------------------------

    def height(self) -> int:
        """Height of the last committed block; 0 when none (genesis state only, or an empty database)."""
        raw = self.db.get(schema.META_HEIGHT)
        return schema.read_u64(raw) if raw is not None else 0

    def last_block_hash(self) -> bytes | None:
        """Hash of the block at `height()` (the genesis hash at height 0 once genesis is committed)."""
        return self.db.get(schema.META_LAST_HASH)

    def state_root(self) -> bytes:
        return self.state.root()

    def first_block_height(self) -> int | None:
        """Lowest height whose block is stored (above 1 after a state sync), None when there is none."""
        first = next(self.db.iterate(prefix=schema.BLOCK), None)
        return schema.read_u64(first[0][1:]) if first is not None else None

    def head_ops(self, height: int, last_hash: bytes, state_root: bytes) -> list[Op]:
        """Ops that set the chain head; pass to `SnapshotImporter.finish` after a state sync."""
        return [(schema.META_HEIGHT, u64(height)), (schema.META_LAST_HASH, last_hash),
                (schema.META_STATE_ROOT, state_root), (schema.state_root_at_key(height), state_root)]

    # -- commits ---------------------------------------------------------------------------------------

    def commit_genesis(self, staged: StagedState, genesis_hash: bytes) -> None:
        """Install the genesis state as height 0 (only into an empty chain)."""
        with self.state.lock:
            if self.db.get(schema.META_HEIGHT) is not None:
                raise HeightMismatch("genesis can only be committed into an empty database")
            self.state.check_base(staged)
            with self.db.batch(sync=True) as b:
                b.apply(staged.ops)
                b.apply(self.head_ops(0, genesis_hash, staged.new_root))
            self.state.mark_committed(staged)

    def commit(self, block: Block, certificate: bytes, receipts: Sequence[bytes], staged: StagedState, *,
               block_bytes: bytes | None = None, tx_hashes: Sequence[bytes] | None = None) -> None:
        """Durably commit `block` at height()+1 with everything that belongs to it, in one synced batch.

        `block_bytes` are the block's canonical bytes as received (encoded once here when omitted);
        `tx_hashes` are the hashes the executor already computed (derived from the txs when omitted).
        `staged` must come from `state.stage` on the current root. Raises HeightMismatch, StaleStage,
        StorageError(code="bad_commit") or DatabaseWriteFailed; on any error nothing is written.
        """
        h = block.height
        txs = block.txs
        if len(receipts) != len(txs):
            raise StorageError(f"{len(receipts)} receipts for {len(txs)} txs", code="bad_commit")
        hashes = list(tx_hashes) if tx_hashes is not None else [tx_hash_of(t) for t in txs]
        if len(hashes) != len(txs) or any(len(x) != HASH_SIZE for x in hashes):
            raise StorageError("tx_hashes must hold one 32-byte hash per tx", code="bad_commit")
        raw = block_bytes if block_bytes is not None else block.encode()
        db = self.db
        with self.state.lock:
            current = self.height()
            if h != current + 1:
                raise HeightMismatch(f"cannot commit height {h} on top of height {current}")
            self.state.check_base(staged)
            if block.header.state_root != staged.base_root:
                raise StorageError("block header state_root is not the state root after the previous "
                                   "height", code="bad_commit")
            # A tx hash seen before (a replay recorded as failed) keeps pointing at its first inclusion.
            get = db.get
            seen: set[bytes] = set()
            with db.batch(sync=True) as b:
                b.put(schema.block_key(h), raw)
                b.put(schema.block_hash_key(block.hash), u64(h))
                b.put(schema.certificate_key(h), certificate)
                put = b.put
                for i, (th, receipt) in enumerate(zip(hashes, receipts, strict=True)):
                    put(schema.receipt_key(h, i), receipt)
                    if th not in seen and get(schema.tx_index_key(th)) is None:
                        put(schema.tx_index_key(th), schema.tx_location_value(h, i))
                    seen.add(th)
                b.apply(staged.ops)
                b.apply(self.head_ops(h, block.hash, staged.new_root))
            self.state.mark_committed(staged)

    # -- reads -----------------------------------------------------------------------------------------

    def get_block_bytes(self, height: int) -> bytes | None:
        return self.db.get(schema.block_key(height))

    def get_block(self, height: int) -> Block | None:
        raw = self.get_block_bytes(height)
        if raw is None:
            return None
        try:
            return Block.decode(raw)
        except ProtocolError as exc:
            raise DatabaseCorrupt(f"stored block {height} does not decode: {exc.message}") from exc

    def get_certificate(self, height: int) -> bytes | None:
        return self.db.get(schema.certificate_key(height))

    def height_of(self, block_hash: bytes) -> int | None:
        raw = self.db.get(schema.block_hash_key(block_hash))
        return schema.read_u64(raw) if raw is not None else None

    def state_root_at(self, height: int) -> bytes | None:
        """State root after executing `height` (the genesis root at 0)."""
        return self.db.get(schema.state_root_at_key(height))

    def get_tx_location(self, tx_hash: bytes) -> tuple[int, int] | None:
        """(height, index in block) of a committed tx."""
        raw = self.db.get(schema.tx_index_key(tx_hash))
        return schema.read_tx_location(raw) if raw is not None else None

    def get_receipt_at(self, height: int, index: int) -> bytes | None:
        return self.db.get(schema.receipt_key(height, index))

    def get_receipt(self, tx_hash: bytes) -> bytes | None:
        loc = self.get_tx_location(tx_hash)
        return self.get_receipt_at(*loc) if loc is not None else None

    def get_tx(self, tx_hash: bytes) -> tuple[int, int, bytes] | None:
        """(height, index, raw signed tx) of a committed tx (decodes its block)."""
        loc = self.get_tx_location(tx_hash)
        if loc is None:
            return None
        block = self.get_block(loc[0])
        if block is None or loc[1] >= len(block.txs):
            raise DatabaseCorrupt(f"tx index points at a missing block or tx {loc}")
        return loc[0], loc[1], block.txs[loc[1]]

    def receipts_at(self, height: int) -> list[bytes]:
        start = schema.receipt_key(height, 0)
        return [v for _k, v in self.db.iterate(start, schema.receipt_key(height + 1, 0))]

    def iter_blocks(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes, bytes | None]]:
        """(height, block bytes, certificate bytes) for start <= height < stop (default: to the head)."""
        end = self.height() + 1 if stop is None else stop
        for k, v in self.db.iterate(schema.block_key(start), schema.block_key(max(start, end))):
            h = schema.read_u64(k[1:])
            yield h, v, self.db.get(schema.certificate_key(h))
