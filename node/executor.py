"""Block validation and execution: the only code that turns a decided block into stored state.

`BlockExecutor.precheck` checks what the consensus replica does not (chain, height, parent, proposer time
bounds, state and results roots, size, tx decoding, chain ids, duplicates) against one immutable `Parent`:
the last decided block, which may not be executed yet (pipelining: the header carries the state and
results roots after height-2, `protocol.block.state_root_height`); the caller checks signatures.
`execute` runs the ledger's `apply_block` over an overlay of the live state, stages the Merkle update and
commits block (its wire bytes, never re-encoded), certificate, receipts and block results, tx index,
state changes and the new head in ONE synced LevelDB batch (which checks the header's roots against the
stored ones: a mismatch stops the node, its execution diverged), and returns the new head.

Rule: a single writer of execution. Only the consensus driver calls `execute`, on the store's execution
thread, one block at a time in height order; the API and sync only read. Decoded and verified txs of a validated block are kept (bounded) so a
block is decoded and verified once, not again at commit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from node.chain import ChainHead
from protocol.block import Block, state_root_height
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


@dataclass(frozen=True, slots=True)
class Parent:
    """What a block proposed at `height + 1` must follow: the last decided block (height, hash, time) and
    the state and results roots its header must carry, None where this node never executed that height
    (below a state-synced start: the commit certificate of the block vouches for it then)."""

    height: int
    block_hash: bytes
    time_ms: int
    state_root: bytes | None
    results_root: bytes | None = None


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

    def precheck(self, block: Block, head: Parent, now_ms: int,
                 known: Callable[[bytes], SignedTx | None] = lambda raw: None,
                 decided: Callable[[bytes], bool] = lambda tx_hash: False) -> tuple[SignedTx, ...]:
        """Everything but signatures, against `head`. Returns the decoded txs. Raises BlockRejected.

        `known(raw)` returns a tx already decoded and verified by this node's mempool; pending txs are
        never committed ones (the mempool drops those when they are decided), so they skip decoding and
        the duplicate checks. `decided(tx_hash)` says a tx is in a decided block not executed yet (not in
        the tx index yet); the caller keeps a tx there until its block's batch is written."""
        h = block.header
        height = head.height
        if h.chain != self.chain_id:
            raise BlockRejected("wrong_chain", "block is for another chain")
        if h.height != height + 1:
            raise BlockRejected("wrong_height", f"block height {h.height} does not follow {height}")
        if h.parent != head.block_hash:
            raise BlockRejected("wrong_parent", "block parent is not the last committed block")
        if head.state_root is not None and h.state_root != head.state_root:
            raise BlockRejected("wrong_state_root", "block state_root is not the state after height "
                                f"{state_root_height(h.height)}")
        if head.results_root is not None and h.results_root != head.results_root:
            raise BlockRejected("wrong_results_root", "block results_root is not the results root of height "
                                f"{state_root_height(h.height)}")
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
                if decided(tx.hash) or self.blocks.get_tx_location(tx.hash) is not None:
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
            self.blocks.commit(block, certificate, result.receipt_bytes, staged, block_bytes=block.raw,
                               tx_hashes=[t.hash for t in txs], block_events=result.events_bytes,
                               results_root=result.results_root)
            senders = sorted({t.sender for t in txs})
            nonces = {s: next_nonce(reader, s) for s in senders}
        finally:
            reader.close()
        head = ChainHead(block.height, block.hash, staged.new_root, block.header.time)
        return Executed(height=block.height, block_hash=block.hash, state_root=staged.new_root,
                        txs=tuple(txs), result=result, nonces=nonces, head=head)
