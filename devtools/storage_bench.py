"""Storage micro-benchmark: stage + commit of 2000-transfer blocks, then reading them back (blocks, receipts,
tx lookups) and reopening. python -m devtools.storage_bench [blocks] [accounts].

Rule: a measuring tool, not part of the node; it writes only to a temporary directory it removes.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from protocol import codec
from protocol.block import Block, state_root_height
from protocol.consensus import CommitCertificate
from protocol.crypto import PrivateKey
from protocol.tx import SignedTx
from storage.blocks import BlockStore
from storage.db import Database
from storage.state import StateStore

ACCOUNTS = 20_000
TXS_PER_BLOCK = 2000


def _bal(i: int) -> bytes:
    return b"bal/" + i.to_bytes(32, "big") + b"/CNY.BANKA"


def _nonce(i: int) -> bytes:
    return b"nonce/" + i.to_bytes(32, "big")


def main(blocks: int = 10, accounts: int = ACCOUNTS) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="smeledger-bench-"))
    try:
        db = Database.open(tmp / "db")
        state = StateStore(db)
        store = BlockStore(db, state)
        genesis = {_bal(i): (10**12).to_bytes(8, "big") for i in range(accounts)}
        genesis.update({_nonce(i): b"\x00" for i in range(accounts)})
        t = time.perf_counter()
        store.commit_genesis(state.stage(genesis), b"\x01" * 32)
        print(f"genesis: {len(genesis)} keys in {(time.perf_counter() - t) * 1000:.0f} ms")
        key = PrivateKey(b"\x07" * 32)
        stage_ms, commit_ms = [], []
        hashes: list[bytes] = []
        for h in range(1, blocks + 1):
            txs = [SignedTx.create(key, {"chain": "bench", "kind": "transfer", "nonce": h * TXS_PER_BLOCK + j,
                                         "to": b"\x02" * 32, "asset": "CNY.BANKA", "amount": 1})
                   for j in range(TXS_PER_BLOCK)]
            changes: dict[bytes, bytes | None] = {}
            for j in range(TXS_PER_BLOCK):
                a = (h * 7919 + j * 2) % (accounts - 1)  # sender, recipient = a + 1: 6000 distinct keys
                changes[_bal(a)] = (h * j).to_bytes(8, "big")
                changes[_bal(a + 1)] = (h * j + 1).to_bytes(8, "big")
                changes[_nonce(a)] = h.to_bytes(4, "big")
            block = Block.build(chain="bench", height=h, parent=store.last_block_hash() or b"\x00" * 32,
                                proposer=key.public_key, view=0, time=h * 1000,
                                state_root=store.state_root_at(state_root_height(h)) or b"\x00" * 32,
                                results_root=store.results_root_at(state_root_height(h)) or b"\x00" * 32,
                                txs=[tx.raw for tx in txs])
            raw = block.encode()
            receipts = [codec.encode({"tx_hash": tx.hash, "status": "ok", "code": "ok", "message": "",
                                      "events": []}) for tx in txs]
            t0 = time.perf_counter()
            staged = state.stage(changes)
            t1 = time.perf_counter()
            cert = CommitCertificate(h, 0, block.hash, tuple((i, bytes([i]) * 64) for i in range(3)))
            store.commit(block, codec.encode(cert.to_value()), receipts, staged, block_bytes=raw,
                         tx_hashes=[tx.hash for tx in txs])
            t2 = time.perf_counter()
            stage_ms.append((t1 - t0) * 1000)
            commit_ms.append((t2 - t1) * 1000)
            print(f"height {h}: {len(changes)} keys, {len(staged.ops)} state ops, "
                  f"stage {stage_ms[-1]:.1f} ms, commit {commit_ms[-1]:.1f} ms")
            hashes.extend(tx.hash for tx in txs)
        total = [s + c for s, c in zip(stage_ms, commit_ms, strict=True)]
        avg = sorted(total)[len(total) // 2]
        print(f"median stage+commit per {TXS_PER_BLOCK}-tx block: {avg:.1f} ms "
              f"(stage {sorted(stage_ms)[len(stage_ms) // 2]:.1f}, commit {sorted(commit_ms)[len(commit_ms) // 2]:.1f})"
              f" = {TXS_PER_BLOCK / avg * 1000:.0f} tx/s of storage time")
        t = time.perf_counter()
        db.close()
        db = Database.open(tmp / "db")
        store = BlockStore(db, StateStore(db))
        print(f"reopen + open checks: {(time.perf_counter() - t) * 1000:.0f} ms")
        for label in ("cold", "warm"):  # cold: from the table files (checksums), warm: LevelDB's block cache
            t = time.perf_counter()
            for h in range(1, blocks + 1):
                store.get_block(h)
                store.receipts_at(h)
            t1 = time.perf_counter()
            for th in hashes:
                store.get_receipt(th)
            t2 = time.perf_counter()
            print(f"read back ({label}): {(t1 - t) * 1000 / blocks:.1f} ms per block with its receipts, "
                  f"{(t2 - t1) * 1e6 / len(hashes):.0f} us per tx lookup (location + receipt)")
        db.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10, int(sys.argv[2]) if len(sys.argv) > 2 else ACCOUNTS)
