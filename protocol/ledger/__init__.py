"""smeledger's finance ledger: a pure, deterministic state machine over a `StateView`.

Interface (what the node, the API server and the CLI call):

- `apply_genesis(state: StateView, spec: dict) -> None`
  spec (JSON-like, str/int/list/dict only)::

      {"participants": [{"id": "<64 hex pubkey>", "name": "banka", "roles": ["BANK"], "kyc": 2}, ...],
       "assets":       [{"id": "CNY.BANKA", "issuer": "<hex>", "decimals": 2}, ...],
       "balances":     [{"account": "<hex>", "asset": "CNY.BANKA", "amount": 100000000}, ...],
       "params":       {"grace_ms": 604800000, ...},   # optional, names in `Params`
       "time":         0}                               # optional genesis time (ms)

  Raises `GenesisError` (message names the entry) and writes nothing when the spec is invalid.

- `apply_block(state: StateView, header: BlockHeader, txs: Sequence[SignedTx]) -> BlockResult`
  Txs must already be signature-verified and chain-checked. Time comes only from `header.time`.
  `BlockResult.receipts`: one `Receipt` per tx in order; `BlockResult.events`: time-driven events
  (risk_due_soon, risk_overdue, risk_default, collateral_seized, campaign_finalized/refunded, ...);
  `receipt_bytes`, `events_bytes`: their canonical bytes; `results_root`: what the next header carries
  (also saved in state under `m/results`; see `protocol.ledger.results`).
  `Receipt(tx_hash: bytes, status: "ok"|"failed", code: "ok"|<error code>, message: str,
  events: tuple[Event, ...])`; `Event(height, index, kind, tx: bytes|None, accounts: tuple[bytes, ...],
  data: dict)`. Both have `to_value()` (bytes kept, for msgpack) and `to_json()` (bytes as hex).

- `next_nonce(state: StateReader, key: bytes) -> int`: the nonce the next tx of a signing key needs.
- `resolve_sender(state, key) -> bytes`: participant id a key signs for (after rotate-key).

- `KINDS: dict[str, KindSpec]`: kind name (CLI name, e.g. "receivable-issue") -> spec with
  `.fields: tuple[FieldSpec, ...]` where `FieldSpec(name, type, required, doc, lo, hi, max_len, item)`,
  type in {"int", "str", "bytes32", "bytes", "list"} (`item` = "str"|"bytes32" for lists), plus
  `.roles` (empty = any participant), `.validate`, `.apply`, `.errors`, `.events`, `.to_value()`.
  `ROLE_MATRIX: dict[str, frozenset[str]]` is derived from it. `CODES: dict[str, str]` lists every
  error code with its meaning.

- `protocol.ledger.query` (pure reads on a `StateReader`, JSON-ready dicts, hex for bytes, int money):
  `account(state, id)`, `asset(state, id)`, `receivable(state, id)`, `loan(state, id)`,
  `campaign(state, id)`, `fx_quote(state, id)`, `collateral(state, id)`, `credit(state, id)`,
  `events(state, account=None, kind=None, from_height=None, limit=100)`, `trace(state, tx_hash)`.
  Ids may be given as bytes or hex strings; unknown objects raise `LedgerError("not_found")`.

All ledger keys are listed in `protocol.ledger.keys`; values are canonical msgpack.
"""

from __future__ import annotations

from protocol.ledger.engine import admission_error, apply_block, next_nonce, resolve_sender
from protocol.ledger.errors import CODES, GenesisError, LedgerError
from protocol.ledger.genesis import apply_genesis
from protocol.ledger.model import BlockResult, Event, Params, Receipt
from protocol.ledger.registry import KINDS, ROLE_MATRIX
from protocol.ledger.spec import FieldSpec, KindSpec

__all__ = [
    "CODES",
    "KINDS",
    "ROLE_MATRIX",
    "BlockResult",
    "Event",
    "FieldSpec",
    "GenesisError",
    "KindSpec",
    "LedgerError",
    "Params",
    "Receipt",
    "admission_error",
    "apply_block",
    "apply_genesis",
    "next_nonce",
    "resolve_sender",
]
