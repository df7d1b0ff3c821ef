"""The machine's own limits for `make bench`, measured in the same run as the load levels.

`verify_limit`: Ed25519 verifications/s of `protocol.crypto.verify` (what the mempool calls) on 1 and 2
threads; `execute_limit`: transfers/s through what a node does per committed block (apply, Merkle stage,
synced LevelDB commit) on one thread, with no consensus or networking.

Rule: each measurement is bounded in time or work and leaves nothing behind (temporary directories).
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from client.errors import ClientError
from protocol.crypto import DOMAIN_TX, PrivateKey, verify


def _sample_sigs(n: int = 2000) -> list[tuple[bytes, bytes, bytes]]:
    key = PrivateKey(bytes(range(32)))
    out = []
    for i in range(n):
        msg = b"\x87" + i.to_bytes(4, "big") * 30  # ~120-byte body, like a transfer
        out.append((key.public_key, msg, key.sign(DOMAIN_TX, msg)))
    return out


def _verify_for(items: list[tuple[bytes, bytes, bytes]], seconds: float) -> int:
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for pk, m, s in items[:200]:
            if not verify(pk, DOMAIN_TX, m, s):
                raise RuntimeError("benchmark signature did not verify")
        done += 200
    return done


def verify_limit(seconds: float = 2.0) -> dict[str, Any]:
    items = _sample_sigs(200)
    t0 = time.perf_counter()
    one = _verify_for(items, seconds) / (time.perf_counter() - t0)
    with ThreadPoolExecutor(2) as ex:
        t0, c0 = time.perf_counter(), time.process_time()
        futs = [ex.submit(_verify_for, items, seconds) for _ in range(2)]
        done = sum(f.result() for f in futs)
        wall = time.perf_counter() - t0
        cores = (time.process_time() - c0) / wall
    # cores < 2 means other processes held the CPUs during the measurement: the machine was shared
    return {"verify_1_thread": round(one), "verify_2_threads": round(done / wall),
            "verify_2_threads_cpu_cores": round(cores, 2), "loadavg_at_start": _loadavg()}


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def execute_limit(block_txs: int = 2000, blocks: int = 3) -> dict[str, float]:
    """Transfers/s through what a node does per committed block, on one thread, with no consensus or
    networking: `apply_block` on an overlay, the Merkle `stage`, and the synced LevelDB commit."""
    from protocol.block import GENESIS_PARENT, BlockHeader
    from protocol.ledger.engine import apply_block
    from protocol.ledger.harness import CHAIN, T0, Harness
    from protocol.ledger.keys import INDEX_PREFIXES
    from protocol.state import Overlay
    from storage.db import Database
    from storage.state import StateStore

    h = Harness.standard()
    names = ["banka", "bankb", "smea", "smeb", "supplier", "inv"]
    nonce = dict.fromkeys(names, 0)
    t_apply = t_stage = t_commit = 0.0
    keys = 0
    with tempfile.TemporaryDirectory(prefix="smeledger-exec-") as tmp:
        db = Database.open(Path(tmp) / "db")
        try:
            st = StateStore(db, index_prefixes=INDEX_PREFIXES)  # as the node stores them
            st.commit(st.stage(dict(h.state.items())))
            for height in range(1, blocks + 1):
                txs = []
                for i in range(block_txs):
                    a, b = names[i % 6], names[(i + height) % 6]
                    b = b if b != a else names[(i + 1) % 6]
                    txs.append(h.tx(a, "transfer", nonce=nonce[a], to=h.id(b), asset="CNY.BANKA", amount=1))
                    nonce[a] += 1
                hdr = BlockHeader(chain=CHAIN, height=height, parent=GENESIS_PARENT, proposer=b"\0" * 32, view=0,
                                  time=T0 + height * 1000, tx_root=b"\0" * 32, state_root=b"\0" * 32)
                t0 = time.perf_counter()
                reader = st.reader(snapshot=False)
                overlay = Overlay(reader)
                result = apply_block(overlay, hdr, txs)
                changes = overlay.changes()
                t1 = time.perf_counter()
                staged = st.stage(changes)
                t2 = time.perf_counter()
                st.commit(staged)
                t3 = time.perf_counter()
                reader.close()
                if any(r.status != "ok" for r in result.receipts):
                    raise ClientError("execution benchmark: a transfer failed", code="bench_bug")
                t_apply, t_stage, t_commit = t_apply + t1 - t0, t_stage + t2 - t1, t_commit + t3 - t2
                keys += len(changes)
        finally:
            db.close()
    n = block_txs * blocks
    total = t_apply + t_stage + t_commit
    return {"execute_1_thread": round(n / total), "apply_us_per_tx": round(1e6 * t_apply / n, 1),
            "stage_us_per_tx": round(1e6 * t_stage / n, 1), "commit_us_per_tx": round(1e6 * t_commit / n, 1),
            "state_keys_per_tx": round(keys / n, 2)}
