"""The block store: blocks, commit certificates, the tx index, receipts and per-height state roots.

Rule: committing height h is ONE synced write batch holding the block, its certificate, the block-hash
and tx indexes, the receipts and the block's own results (events, results root), the staged state ops
and the new height / last hash / state root, so a crash leaves the node at h-1 or h, never in between.
Blocks are stored as the exact bytes that were built or received and are served from those bytes, never
re-encoded. Pruning is not implemented.

History: a node that joined by state sync at height H holds full history only from H+1
(`history_from()`; storage/history.py adds verified older blocks below it).

Integrity on read: nothing is returned unchecked. A block must decode, carry its height, match its tx
root, and its recomputed header hash must be indexed at that height; a certificate must name the block
it is stored with; a receipt must be a receipt of the tx at its place in its block; a tx index entry must
point at that tx (the record checks live in storage/records.py). Anything else is `DatabaseCorrupt`
naming the key and the way out. Blocks that passed are kept in a bounded cache. Reads take the
anchor first (head, then block, then what hangs off it), so a commit racing a read is never mistaken
for damage. `check_head` runs the same checks over the head region when the store opens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from protocol.block import Block, state_root_height
from protocol.crypto import HASH_SIZE
from protocol.results import GENESIS_RESULTS
from storage import schema
from storage.db import Database, Op
from storage.errors import DatabaseCorrupt, HeightMismatch, StorageError
from storage.records import VerifiedBlocks, check_certificate, check_receipt, decode_block, tx_hash_of
from storage.state import StagedState, StateStore

HEAD_CHECK_BLOCKS = 16  # blocks at the head that `check_head` verifies at open (bounded work) ...
HEAD_CHECK_TXS = 20_000  # ... stopping early once this many txs were checked (after the head block)
BLOCK_CACHE_BYTES = 32 * 1024 * 1024  # verified blocks kept for tx and receipt lookups (raw + decoded)
u64 = schema.u64


class BlockStore:
    """Blocks and their indexes over one `Database`, committing state through a `StateStore`.

    Opening one checks the head region (`check_head`, `check_tail` blocks; 0 skips it)."""

    def __init__(self, db: Database, state: StateStore, *, check_tail: int = HEAD_CHECK_BLOCKS,
                 cache_bytes: int = BLOCK_CACHE_BYTES) -> None:
        self.db = db
        self.state = state
        self._verified = VerifiedBlocks(cache_bytes)
        if check_tail > 0:
            self.check_head(check_tail)

    def _corrupt(self, message: str, key: bytes) -> DatabaseCorrupt:
        return DatabaseCorrupt(message, key=key, path=self.db.path)

    # -- chain head ------------------------------------------------------------------------------------

    def height(self) -> int:
        """Height of the last committed block; 0 when none (genesis state only, or an empty database)."""
        raw = self.db.get(schema.META_HEIGHT)
        if raw is None:
            return 0
        if len(raw) != schema.U64:
            raise self._corrupt("the stored chain height is not a u64", schema.META_HEIGHT)
        return schema.read_u64(raw)

    def last_block_hash(self) -> bytes | None:
        """Hash of the block at `height()` (the genesis hash at height 0 once genesis is committed)."""
        raw = self.db.get(schema.META_LAST_HASH)
        if raw is not None and len(raw) != HASH_SIZE:
            raise self._corrupt("the stored last block hash is not 32 bytes", schema.META_LAST_HASH)
        return raw

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

    @staticmethod
    def results_root_op(height: int, results_root: bytes) -> Op:
        """Op that records the results root of `height` (a snapshot install knows those of H-1 and H)."""
        return schema.results_root_at_key(height), results_root

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
                b.put(schema.results_root_at_key(0), GENESIS_RESULTS)
            self.state.mark_committed(staged)

    def commit(self, block: Block, certificate: bytes, receipts: Sequence[bytes], staged: StagedState, *,
               block_bytes: bytes | None = None, tx_hashes: Sequence[bytes] | None = None,
               block_events: bytes | None = None, results_root: bytes | None = None) -> None:
        """Durably commit `block` at height()+1 with everything that belongs to it, in one synced batch.

        `block_bytes` are the block's canonical bytes as received (encoded once here when omitted);
        `tx_hashes` are the hashes the executor already computed (derived from the txs when omitted);
        `block_events` and `results_root` are the block's own results (none stored when omitted). The
        header's state and results roots of `state_root_height(h)` are checked against the stored ones;
        where none is stored (below a state-synced start) the certified header's are recorded.
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
            base = state_root_height(h)
            want = staged.base_root if base == current else self.state_root_at(base)
            if want is not None and block.header.state_root != want:  # None: below a state-synced start
                raise StorageError(f"block header state_root is not the state root after height {base}",
                                   code="bad_commit")
            want_results = self.results_root_at(base)
            if want_results is not None and block.header.results_root != want_results:
                raise StorageError(f"block header results_root is not the results root of height {base}",
                                   code="bad_commit")
            # A tx hash seen before (a replay recorded as failed) keeps pointing at its first inclusion.
            get = db.get
            seen: set[bytes] = set()
            with db.batch(sync=True) as b:
                b.put(schema.block_key(h), raw)
                b.put(schema.block_hash_key(block.hash), u64(h))
                b.put(schema.certificate_key(h), certificate)
                if block_events is not None:
                    b.put(schema.block_events_key(h), block_events)
                if results_root is not None:
                    b.put(schema.results_root_at_key(h), results_root)
                if want is None:  # below a state-synced start: the certified header says what it was
                    b.put(schema.state_root_at_key(base), block.header.state_root)
                if want_results is None:
                    b.put(schema.results_root_at_key(base), block.header.results_root)
                put = b.put
                for i, (th, receipt) in enumerate(zip(hashes, receipts, strict=True)):
                    put(schema.receipt_key(h, i), receipt)
                    if th not in seen and get(schema.tx_index_key(th)) is None:
                        put(schema.tx_index_key(th), schema.tx_location_value(h, i))
                    seen.add(th)
                b.apply(staged.ops)
                b.apply(self.head_ops(h, block.hash, staged.new_root))
            self.state.mark_committed(staged)

    # -- history (storage/history.py writes it) -------------------------------------------------------

    def history_from(self) -> int:
        """Lowest height from which every block, receipt and index entry is stored (0: all, genesis too)."""
        raw = self.db.get(schema.META_HISTORY_FROM)
        if raw is None:
            return 0
        if len(raw) != schema.U64:
            raise self._corrupt("the stored history start is not a u64", schema.META_HISTORY_FROM)
        return schema.read_u64(raw)

    @staticmethod
    def history_from_op(height: int) -> Op:
        """Op that records where full history starts (in the batch that installs a snapshot)."""
        return schema.META_HISTORY_FROM, u64(height)

    # -- reads (each checked; see the module rule) ---------------------------------------------------

    def _check_block(self, height: int, raw: bytes) -> Block:
        key = schema.block_key(height)
        block = decode_block(height, raw, self.db.path)
        hash_key = schema.block_hash_key(block.hash)
        indexed = self.db.get(hash_key)
        if indexed is None:
            raise self._corrupt(f"the header hash of block {height} is not in the block hash index", key)
        if indexed != schema.u64(height):
            raise self._corrupt(f"the block hash index does not point at block {height}", hash_key)
        self._verified.put(height, raw, block)
        return block

    def _read_block(self, height: int) -> tuple[bytes, Block] | None:
        hit = self._verified.get(height)
        if hit is not None:
            return hit
        raw = self.db.get(schema.block_key(height))
        return (raw, self._check_block(height, raw)) if raw is not None else None

    def get_block_bytes(self, height: int) -> bytes | None:
        got = self._read_block(height)
        return got[0] if got is not None else None

    def get_block(self, height: int) -> Block | None:
        got = self._read_block(height)
        return got[1] if got is not None else None

    def _check_certificate(self, height: int, raw: bytes, block_hash: bytes) -> None:
        check_certificate(height, raw, block_hash, self.db.path)

    def get_certificate(self, height: int, block_hash: bytes | None = None) -> bytes | None:
        """The commit certificate of block `height`, checked against `block_hash` (default: the stored
        block's hash, the parent named by the next block, or the head hash after a state sync)."""
        head = self.height()
        last = self.last_block_hash()
        if block_hash is None:
            got = self._read_block(height)
            nxt = self._read_block(height + 1) if got is None else None
            block_hash = got[1].hash if got is not None else nxt[1].header.parent if nxt is not None else \
                last if height == head else None
        raw = self.db.get(schema.certificate_key(height))
        if raw is None:
            return None
        if block_hash is None:
            raise self._corrupt(f"a certificate for height {height} without a block it could certify",
                                schema.certificate_key(height))
        self._check_certificate(height, raw, block_hash)
        return raw

    def height_of(self, block_hash: bytes) -> int | None:
        key = schema.block_hash_key(block_hash)
        raw = self.db.get(key)
        if raw is None:
            return None
        got = self._read_block(schema.read_u64(raw)) if len(raw) == schema.U64 else None
        if got is None or got[1].hash != block_hash:
            raise self._corrupt("the block hash index points at a block with another hash", key)
        return got[1].height

    def state_root_at(self, height: int) -> bytes | None:
        """State root after executing `height` (the genesis root at 0)."""
        return self._root_at(schema.state_root_at_key(height), "state", height)

    def results_root_at(self, height: int) -> bytes | None:
        """Results root of `height` (what the header of height+2 carries; GENESIS_RESULTS at 0)."""
        return self._root_at(schema.results_root_at_key(height), "results", height)

    def _root_at(self, key: bytes, what: str, height: int) -> bytes | None:
        raw = self.db.get(key)
        if raw is not None and len(raw) != HASH_SIZE:
            raise self._corrupt(f"the {what} root stored for height {height} is not 32 bytes", key)
        return raw

    def block_events_at(self, height: int) -> bytes | None:
        """The block's own result bytes (its time-driven events) as committed, or None."""
        return self.db.get(schema.block_events_key(height))

    def get_tx_location(self, tx_hash: bytes) -> tuple[int, int] | None:
        """(height, index in block) of a committed tx, checked against the tx at that place."""
        key = schema.tx_index_key(tx_hash)
        raw = self.db.get(key)
        if raw is None:
            return None
        loc = schema.read_tx_location(raw) if len(raw) == schema.U64 + schema.U32 else None
        got = self._read_block(loc[0]) if loc is not None else None
        if loc is None or got is None or loc[1] >= len(got[1].txs) or tx_hash_of(got[1].txs[loc[1]]) != tx_hash:
            raise self._corrupt("the tx index entry does not point at this tx in a stored block", key)
        return loc

    def _check_receipt(self, key: bytes, raw: bytes, tx_hash: bytes) -> None:
        check_receipt(key, raw, tx_hash, self.db.path)

    def get_receipt_at(self, height: int, index: int) -> bytes | None:
        """The receipt of tx `index` of block `height`, checked against that tx."""
        key = schema.receipt_key(height, index)
        got = self._read_block(height)  # the anchor first: a receipt is committed with its block
        raw = self.db.get(key)
        if got is None or index >= len(got[1].txs):
            if raw is not None:
                raise self._corrupt(f"a receipt without a tx at its place in block {height}", key)
            return None
        if raw is None:
            raise self._corrupt(f"block {height} holds tx {index} but its receipt is missing", key)
        self._check_receipt(key, raw, tx_hash_of(got[1].txs[index]))
        return raw

    def get_receipt(self, tx_hash: bytes) -> bytes | None:
        loc = self.get_tx_location(tx_hash)
        return self.get_receipt_at(*loc) if loc is not None else None

    def get_tx(self, tx_hash: bytes) -> tuple[int, int, bytes] | None:
        """(height, index, raw signed tx) of a committed tx."""
        loc = self.get_tx_location(tx_hash)
        if loc is None:
            return None
        block = self.get_block(loc[0])
        assert block is not None  # get_tx_location checked it
        return loc[0], loc[1], block.txs[loc[1]]

    def receipts_at(self, height: int) -> list[bytes]:
        """Every receipt of block `height` in tx order (none when the block is not stored)."""
        got = self._read_block(height)
        txs = got[1].txs if got is not None else ()
        return self._receipts_of(height, [tx_hash_of(t) for t in txs])

    def _receipts_of(self, height: int, hashes: Sequence[bytes]) -> list[bytes]:
        rows = list(self.db.iterate(schema.receipt_key(height, 0), schema.receipt_key(height + 1, 0)))
        for i, (k, v) in enumerate(rows):
            if i >= len(hashes) or k != schema.receipt_key(height, i):
                raise self._corrupt(f"a receipt without a tx at its place in block {height}", k)
            self._check_receipt(k, v, hashes[i])
        if len(rows) < len(hashes):
            raise self._corrupt(f"block {height} holds {len(hashes)} txs but {len(rows)} receipts",
                                schema.receipt_key(height, len(rows)))
        return [v for _k, v in rows]

    def iter_blocks(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes, bytes | None]]:
        """(height, block bytes, certificate bytes) for start <= height < stop (default: to the head)."""
        end = self.height() + 1 if stop is None else stop
        for k, v in self.db.iterate(schema.block_key(start), schema.block_key(max(start, end))):
            if len(k) != 1 + schema.U64:
                raise self._corrupt("a malformed block key", k)
            h = schema.read_u64(k[1:])
            block = self._check_block(h, v)
            cert = self.db.get(schema.certificate_key(h))
            if cert is not None:
                self._check_certificate(h, cert, block.hash)
            yield h, v, cert

    # -- the open-time check -------------------------------------------------------------------------

    def check_head(self, tail: int = HEAD_CHECK_BLOCKS) -> None:
        """Check the head region: the head meta values, nothing stored above the head, and the top `tail`
        blocks (fewer once HEAD_CHECK_TXS txs were checked) with their certificates, receipts, tx index
        entries and the state and results roots their headers carry, following parent hashes down from
        the head hash (to height 1 or the height a state sync installed). Bounded work: the rest of the
        chain is checked when it is read. Raises DatabaseCorrupt."""
        if self.db.get(schema.META_HEIGHT) is None:
            return  # an empty database: genesis not applied yet
        head = self.height()
        last = self.last_block_hash()
        if last is None:
            raise self._corrupt(f"the chain is at height {head} but its head hash is missing", schema.META_LAST_HASH)
        if self.state_root_at(head) != self.db.get(schema.META_STATE_ROOT):
            raise self._corrupt(f"the state root recorded for the head height {head} is not the current state "
                                "root", schema.state_root_at_key(head))
        for prefix, first_above in ((schema.BLOCK, schema.block_key(head + 1)),
                                    (schema.CERTIFICATE, schema.certificate_key(head + 1)),
                                    (schema.STATE_ROOT_AT, schema.state_root_at_key(head + 1)),
                                    (schema.RESULTS_ROOT_AT, schema.results_root_at_key(head + 1)),
                                    (schema.BLOCK_EVENTS, schema.block_events_key(head + 1)),
                                    (schema.RECEIPT, schema.receipt_key(head + 1, 0))):
            above = next(self.db.iterate(first_above, schema.prefix_end(prefix)), None)
            if above is not None:
                raise self._corrupt(f"a record above the head height {head}", above[0])
        expect = last
        txs = 0
        for h in range(head, max(0, head - tail), -1):
            if txs >= HEAD_CHECK_TXS:
                return
            cert_key = schema.certificate_key(h)
            got = self._read_block(h)
            cert = self.db.get(cert_key)
            if cert is None:
                raise self._corrupt(f"block {h} below the head hash has no certificate", cert_key)
            self._check_certificate(h, cert, expect)
            if got is None:
                return  # the height a state sync installed: its certificate names the hash above it
            block = got[1]
            if block.hash != expect:
                raise self._corrupt(f"block {h} is not the parent named by the block above it (or the head "
                                    "hash)", schema.block_key(h))
            self._check_tx_records(h, block)
            txs += len(block.txs)
            base = state_root_height(h)
            below = self.state_root_at(base)
            if below is not None and block.header.state_root != below:
                raise self._corrupt(f"block {h} does not carry the state root stored for height {base}",
                                    schema.block_key(h))
            results = self.results_root_at(base)
            if results is not None and block.header.results_root != results:
                raise self._corrupt(f"block {h} does not carry the results root stored for height {base}",
                                    schema.results_root_at_key(base))
            expect = block.header.parent

    def _check_tx_records(self, height: int, block: Block) -> None:
        """The receipts and tx index entries of every tx of a stored block."""
        hashes = [tx_hash_of(t) for t in block.txs]
        self._receipts_of(height, hashes)
        for i, th in enumerate(hashes):
            key = schema.tx_index_key(th)
            raw = self.db.get(key)
            if raw is None:
                raise self._corrupt(f"tx {i} of block {height} is missing from the tx index", key)
            if raw != schema.tx_location_value(height, i):
                loc = self.get_tx_location(th)  # a replay keeps its first inclusion: check that one
                if loc is None or loc >= (height, i):
                    raise self._corrupt(f"the tx index entry of tx {i} of block {height} points elsewhere", key)
