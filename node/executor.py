"""Block validation and execution: the only code that turns a decided block into stored state.

`BlockExecutor.precheck` checks what the consensus replica does not (chain, height, parent, proposer time
bounds, state root, size, tx decoding, chain ids, duplicates) against one immutable `ChainHead`, never
against storage that a commit may be changing; the caller checks signatures. `execute` runs the ledger's
`apply_block` over an overlay of the live state, stages the Merkle update and commits block (its wire
bytes, never re-encoded), certificate, receipts, tx index, state changes and the new head in ONE synced
LevelDB batch, and returns the new head.

Rule: a single writer. Only the consensus driver calls `execute`, on the store's writer thread, one at a
time; the API and sync only read. Decoded and verified txs of a validated block are kept (bounded) so a
block is decoded and verified once, not again at commit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from node.chain import ChainHead
from protocol.block import Block
from protocol.errors import ProtocolError
from protocol.ledger import BlockResult, apply_block, next_nonce
from protocol.state import Overlay
from protocol.tx import SignedTx
from storage.blocks import BlockStore
from storage.state import StateStore

DECODED_CACHE = 8  # validated blocks whose decoded txs are kept until commit


@dataclass(frozen=True, slots=True)
class Executed:
    height: int
    block_hash: bytes
    state_root: bytes
    txs: tuple[SignedTx, ...]
    result: BlockResult
    nonces: dict[bytes, int]  # sender -> next nonce after this block
    head: ChainHead


class BlockRejected(Exception):
    """A proposed block fails validation; `reason` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BlockExecutor:
    def __init__(self, chain_id: str, blocks: BlockStore, *, max_future_ms: int, max_block_txs: int,
                 max_block_bytes: int) -> None:
        self.chain_id = chain_id
        self.blocks = blocks
        self.max_future_ms = max_future_ms
        self.max_block_txs = max_block_txs
        self.max_block_bytes = max_block_bytes
        self._decoded: OrderedDict[bytes, tuple[SignedTx, ...]] = OrderedDict()

    # ---- validation (decode + cheap checks; signatures are checked by the caller in a thread) ----

    def precheck(self, block: Block, head: ChainHead, now_ms: int,
                 known: Callable[[bytes], SignedTx | None] = lambda raw: None) -> tuple[SignedTx, ...]:
        """Everything but signatures, against `head`. Returns the decoded txs. Raises BlockRejected.

        `known(raw)` returns a tx already decoded and verified by this node's mempool; pending txs are
        never committed ones (the mempool drops those), so they skip decoding and the tx index lookup.
        The caller makes sure no commit runs while this reads the tx index (`ChainStore.commit_in_flight`)."""
        h = block.header
        height = head.height
        if h.chain != self.chain_id:
            raise BlockRejected("wrong_chain", "block is for another chain")
        if h.height != height + 1:
            raise BlockRejected("wrong_height", f"block height {h.height} does not follow {height}")
        if h.parent != head.block_hash:
            raise BlockRejected("wrong_parent", "block parent is not the last committed block")
        if h.state_root != head.state_root:
            raise BlockRejected("wrong_state_root", "block state_root is not the state after its parent")
        if h.time <= head.time_ms and height > 0:
            raise BlockRejected("time_not_monotonic", "block time is not after its parent's")
        if h.time > now_ms + self.max_future_ms:
            raise BlockRejected("time_in_future", "block time is too far in the future")
        if len(block.txs) > self.max_block_txs or sum(len(t) for t in block.txs) > self.max_block_bytes:
            raise BlockRejected("block_too_large", "block exceeds the tx count or byte limit")
        txs: list[SignedTx] = []
        seen: set[bytes] = set()
        for raw in block.txs:
            tx = known(raw)
            if tx is None:
                try:
                    tx = SignedTx.from_wire(raw)
                except ProtocolError as exc:
                    raise BlockRejected("bad_tx", f"undecodable tx: {exc.code}") from exc
                if tx.chain != self.chain_id:
                    raise BlockRejected("bad_tx", "tx for another chain")
                if self.blocks.get_tx_location(tx.hash) is not None:
                    raise BlockRejected("duplicate_tx", "tx already committed")
            if tx.hash in seen:
                raise BlockRejected("duplicate_tx", "tx repeated in the block")
            seen.add(tx.hash)
            txs.append(tx)
        return tuple(txs)

    def remember(self, block: Block, txs: tuple[SignedTx, ...]) -> None:
        self._decoded[block.hash] = txs
        while len(self._decoded) > DECODED_CACHE:
            self._decoded.popitem(last=False)

    # ---- execution -----------------------------------------------------------------------------

    def decoded(self, block: Block) -> tuple[SignedTx, ...]:
        txs = self._decoded.pop(block.hash, None)
        if txs is None:
            txs = tuple(SignedTx.from_wire(raw) for raw in block.txs)
        return txs

    def execute(self, block: Block, certificate: bytes, txs: Sequence[SignedTx], state: StateStore) -> Executed:
        """Run the ledger on `block` and commit everything in one synced batch (writer thread only)."""
        reader = state.reader(snapshot=False)
        try:
            overlay = Overlay(reader)
            result = apply_block(overlay, block.header, txs)
            staged = state.stage(overlay.changes())
            receipts = [r.encode() for r in result.receipts]
            self.blocks.commit(block, certificate, receipts, staged, block_bytes=block.raw,
                               tx_hashes=[t.hash for t in txs])
            senders = sorted({t.sender for t in txs})
            nonces = {s: next_nonce(reader, s) for s in senders}
        finally:
            reader.close()
        head = ChainHead(block.height, block.hash, staged.new_root, block.header.time)
        return Executed(height=block.height, block_hash=block.hash, state_root=staged.new_root,
                        txs=tuple(txs), result=result, nonces=nonces, head=head)
