"""Blocks: a header and an ordered list of raw signed transactions.

Wire: `{"header": {...}, "txs": [<raw signed tx bytes>, ...]}`. The header carries the chain id, height,
parent hash, proposer public key, view, timestamp in milliseconds (the only clock the ledger ever sees),
the Merkle root of the tx hashes, and the state root after block height-2 (`state_root_height`; the
genesis state for heights 1 and 2) and the results root of that same block (its receipts and
time-driven events, protocol/results.py): execution of block h-1 runs while h is agreed on, so a header
certifies the state and the results two blocks down (as CometBFT's and HotStuff's pipelines do). Block
hash = SHA-256 of the canonical header encoding. Rule: a Block is immutable; its hash and tx root are
computed once, and its
canonical bytes (`raw`) once: kept from the wire when decoded, encoded at most once when built, and
carried as they are inside consensus messages, WAL records and storage, never re-encoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocol import codec
from protocol.crypto import HASH_SIZE, PUBLIC_KEY_SIZE, merkle_root, sha256
from protocol.errors import FieldError
from protocol.fields import expect_map, only_keys, req_bytes, req_int, req_list, req_str
from protocol.limits import BLOCK_CEILING_BYTES, BLOCK_MAX_TXS
from protocol.tx import MAX_CHAIN_LEN, MAX_TX_BYTES

BLOCK_LIMITS = codec.Limits(max_bytes=BLOCK_CEILING_BYTES, max_depth=8, max_bin=MAX_TX_BYTES,
                            max_array=BLOCK_MAX_TXS, max_map=32)
GENESIS_PARENT = b"\x00" * HASH_SIZE
STATE_ROOT_LAG = 2  # block h's header carries the state and results roots after block h - STATE_ROOT_LAG


def state_root_height(height: int) -> int:
    """The height whose resulting state root (and results root) block `height` carries in its header
    (0 = genesis)."""
    return max(0, height - STATE_ROOT_LAG)


_HEADER_KEYS = frozenset({"chain", "height", "parent", "proposer", "view", "time", "tx_root", "state_root",
                          "results_root"})


@dataclass(frozen=True, slots=True)
class BlockHeader:
    chain: str
    height: int
    parent: bytes
    proposer: bytes
    view: int
    time: int  # milliseconds since the Unix epoch, chosen by the proposer within validated bounds
    tx_root: bytes
    state_root: bytes  # state root after block state_root_height(height), i.e. height-2
    results_root: bytes  # results root of block state_root_height(height) (protocol/results.py)

    def to_value(self) -> dict[str, Any]:
        return {"chain": self.chain, "height": self.height, "parent": self.parent,
                "proposer": self.proposer, "view": self.view, "time": self.time,
                "tx_root": self.tx_root, "state_root": self.state_root, "results_root": self.results_root}

    def encode(self) -> bytes:
        return codec.encode(self.to_value())

    @property
    def hash(self) -> bytes:
        return sha256(self.encode())

    @classmethod
    def from_value(cls, v: Any) -> BlockHeader:
        m = expect_map(v, "block header")
        only_keys(m, _HEADER_KEYS, "block header")
        return cls(chain=req_str(m, "chain", max_len=MAX_CHAIN_LEN, min_len=1),
                   height=req_int(m, "height", lo=0, hi=2**63 - 1),
                   parent=req_bytes(m, "parent", size=HASH_SIZE),
                   proposer=req_bytes(m, "proposer", size=PUBLIC_KEY_SIZE),
                   view=req_int(m, "view", lo=0, hi=2**63 - 1),
                   time=req_int(m, "time", lo=0, hi=2**63 - 1),
                   tx_root=req_bytes(m, "tx_root", size=HASH_SIZE),
                   state_root=req_bytes(m, "state_root", size=HASH_SIZE),
                   results_root=req_bytes(m, "results_root", size=HASH_SIZE))


def tx_root_of(txs: tuple[bytes, ...] | list[bytes]) -> bytes:
    """Merkle root over the SHA-256 of each raw signed tx envelope."""
    return merkle_root([sha256(t) for t in txs])


@dataclass(frozen=True, slots=True)
class Block:
    header: BlockHeader
    txs: tuple[bytes, ...]
    hash: bytes = field(init=False, compare=False)
    _raw: bytes | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", self.header.hash)

    @property
    def raw(self) -> bytes:
        """The canonical bytes of the block (what `encode()` returns), computed at most once."""
        raw = self._raw
        if raw is None:
            raw = codec.encode(self.to_value())
            object.__setattr__(self, "_raw", raw)
        return raw

    @property
    def height(self) -> int:
        return self.header.height

    def to_value(self) -> dict[str, Any]:
        return {"header": self.header.to_value(), "txs": list(self.txs)}

    def encode(self) -> bytes:
        return self.raw

    @classmethod
    def build(cls, *, chain: str, height: int, parent: bytes, proposer: bytes, view: int, time: int,
              state_root: bytes, results_root: bytes, txs: tuple[bytes, ...] | list[bytes]) -> Block:
        txs = tuple(txs)
        header = BlockHeader(chain=chain, height=height, parent=parent, proposer=proposer, view=view,
                             time=time, tx_root=tx_root_of(txs), state_root=state_root,
                             results_root=results_root)
        return cls(header=header, txs=txs)

    @classmethod
    def from_value(cls, v: Any, *, check_tx_root: bool = True) -> Block:
        m = expect_map(v, "block")
        only_keys(m, {"header", "txs"}, "block")
        header = BlockHeader.from_value(m.get("header"))
        txs = req_list(m, "txs", max_len=BLOCK_MAX_TXS)
        for t in txs:
            if not isinstance(t, bytes) or len(t) > MAX_TX_BYTES:
                raise FieldError("block txs must be raw signed tx bytes")
        block = cls(header=header, txs=tuple(txs))
        if check_tx_root and tx_root_of(block.txs) != header.tx_root:
            raise FieldError("block tx_root does not match its transactions", code="bad_tx_root")
        return block

    @classmethod
    def decode(cls, data: bytes) -> Block:
        block = cls.from_value(codec.decode(data, BLOCK_LIMITS))
        object.__setattr__(block, "_raw", bytes(data))  # canonical: decode refuses anything else
        return block

    @classmethod
    def from_field(cls, v: Any) -> Block:
        """A block carried inside a message or record: its canonical bytes (or, from older records, the
        decoded map)."""
        if isinstance(v, bytes):
            return cls.decode(v)
        return cls.from_value(v)
