"""A block's results as the ledger defines them, and the audit indexes rebuilt from them.

`encode(receipts, events)` gives the canonical bytes `protocol.results.results_root` commits to: each
receipt's canonical bytes (`Receipt.encode`) and the list of the block's time-driven events. `apply_block`
keeps the roots of the last two blocks in state under `m/results`, so the state root after height h
commits to the results of h-1 and h, and a node that installed a snapshot at h knows the `results_root`
blocks h+1 and h+2 must carry (`last_results_roots`).

`index_entries(height, receipts, events)` returns exactly the derived index entries `apply_block` wrote
for that block (the event log, its account and kind indexes, and the positions of ok txs; see
`keys.INDEX_PREFIXES`), computed from the result bytes alone. A node that fetched a block's certified
results from a peer (history backfill, docs/sync.md) therefore serves the same /events, /trace and tx
positions as a node that executed the block. `genesis_index_entries(spec)` does the same for height 0.

Rule: pure; the same bytes give byte-identical entries on every node (tested against `apply_block`).
A malformed result raises `FieldError` (certified results never are: the caller checked their root).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from protocol.errors import FieldError
from protocol.ledger import keys
from protocol.ledger.genesis import apply_genesis
from protocol.ledger.model import Event, Receipt
from protocol.ledger.store import enc, unpack
from protocol.results import GENESIS_RESULTS
from protocol.state import MemoryState, Overlay, StateReader

Entry = tuple[bytes, bytes]


def encode(receipts: Sequence[Receipt], events: Sequence[Event]) -> tuple[tuple[bytes, ...], bytes]:
    """(receipt bytes in tx order, bytes of the time-driven events list): what the results root covers."""
    return tuple(r.encode() for r in receipts), enc([e.to_value() for e in events])


def last_results_roots(state: StateReader) -> tuple[bytes, bytes]:
    """The results roots of the last two executed blocks, older first (`GENESIS_RESULTS` before block 1)."""
    return parse_results_roots(state.get(keys.RESULTS))


def parse_results_roots(raw: bytes | None) -> tuple[bytes, bytes]:
    """The value of `m/results` (None: none yet) as (results root of the block before, of the last)."""
    if raw is None:
        return GENESIS_RESULTS, GENESIS_RESULTS
    pair = unpack(raw)
    if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(r, bytes) and len(r) == 32 for r in pair)):
        raise FieldError("state holds malformed results roots")
    return pair[0], pair[1]


def _decode(raw: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise FieldError(f"{what} is not msgpack") from exc


def _event_entries(height: int, index: int, ev: Any, out: list[Entry]) -> None:
    if not isinstance(ev, dict) or ev.get("height") != height or ev.get("index") != index:
        raise FieldError(f"event {index} of block {height} is out of place")
    kind, accounts = ev.get("kind"), ev.get("accounts")
    if not isinstance(kind, str) or not isinstance(accounts, list) or \
            not all(isinstance(a, bytes) for a in accounts):
        raise FieldError(f"event {index} of block {height} is malformed")
    out.append((keys.event(height, index), enc(ev)))
    out.extend((keys.ev_account(a, height, index), b"") for a in accounts)
    out.append((keys.ev_kind(kind, height, index), b""))


def index_entries(height: int, receipts: Sequence[bytes], events: bytes) -> list[Entry]:
    """The index entries `apply_block` wrote for block `height`, from its result bytes."""
    out: list[Entry] = []
    timed = _decode(events, "block events")
    if not isinstance(timed, list):
        raise FieldError("block events must be a list")
    nxt = 0  # events of a block are numbered from 0: time-driven ones first, then each ok tx's
    for ev in timed:
        _event_entries(height, nxt, ev, out)
        nxt += 1
    for i, raw in enumerate(receipts):
        r = _decode(raw, f"receipt {i}")
        if not isinstance(r, dict) or not isinstance(r.get("events"), list) or \
                not isinstance(r.get("tx_hash"), bytes) or r.get("status") not in ("ok", "failed"):
            raise FieldError(f"receipt {i} of block {height} is malformed")
        mark = nxt
        for ev in r["events"]:
            _event_entries(height, nxt, ev, out)
            nxt += 1
        if r["status"] == "ok":
            out.append((keys.tx_record(r["tx_hash"]), enc([height, mark, nxt - mark])))
    return out


def genesis_index_entries(spec: dict[str, Any]) -> list[Entry]:
    """The index entries `apply_genesis(spec)` writes (the genesis events at height 0)."""
    overlay = Overlay(MemoryState())
    apply_genesis(overlay, spec)
    return sorted((k, v) for k, v in overlay.changes().items()
                  if v is not None and k.startswith(keys.INDEX_PREFIXES))
