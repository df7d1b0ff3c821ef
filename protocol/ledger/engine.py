"""apply_block: run time-driven transitions, then every tx in order, each under its own savepoint.

Rule: the only clock is `header.time` (ms), floored at the previous block's time so time never runs
backwards inside the ledger. A tx whose nonce is not its key's next nonce fails with `bad_nonce` and
changes nothing; any other failure reverts the tx and bumps only the nonce. Unexpected exceptions
(bugs) propagate: they are never turned into receipts. The results roots of the block and of the one
before it (receipts and time-driven events, protocol/results.py) are kept in state (`m/results`), so a
node that joined from a snapshot at h can check the `results_root` of blocks h+1 and h+2, which carry
them (a header carries the roots of the block two below it).
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.block import BlockHeader
from protocol.errors import ProtocolError
from protocol.ledger import keys, results
from protocol.ledger.errors import LedgerError
from protocol.ledger.model import BlockCtx, BlockResult, Receipt, TxCtx
from protocol.ledger.registry import KINDS
from protocol.ledger.spec import KindSpec, static_check
from protocol.ledger.store import load_int, load_params, participant, save, unpack
from protocol.ledger.timed import run_schedule
from protocol.results import results_root
from protocol.state import StateReader, StateView
from protocol.tx import SignedTx


def next_nonce(state: StateReader, key: bytes) -> int:
    """The nonce the next tx signed by `key` must carry (the mempool asks this too)."""
    return load_int(state, keys.nonce(key))


def resolve_sender(state: StateReader, key: bytes) -> bytes:
    """The participant id a signing key acts for; raises key_revoked / not_registered."""
    raw = state.get(keys.key_owner(key))
    if raw is None:
        return key
    pid: bytes = unpack(raw)
    if pid == b"":
        raise LedgerError("key_revoked")
    return pid


def _authorise(state: StateReader, tx: SignedTx) -> tuple[KindSpec, bytes, frozenset[str]]:
    """The kind spec, acting participant and its roles; raises LedgerError when the sender may not send
    this kind at all (unknown kind, unregistered, revoked or frozen sender, role not allowed)."""
    spec = KINDS.get(tx.kind)
    if spec is None:
        raise LedgerError("unknown_kind", f"no kind named {tx.kind!r}")
    actor = resolve_sender(state, tx.sender)
    rec = participant(state, actor)
    if rec is None:
        raise LedgerError("not_registered", "the sender is not a registered participant")
    if rec["frozen"]:
        raise LedgerError("frozen")
    roles = frozenset(rec["roles"])
    if spec.roles and not spec.roles & roles:
        raise LedgerError("forbidden_role", f"{tx.kind} needs one of {', '.join(sorted(spec.roles))}")
    return spec, actor, roles


def admission_error(state: StateReader, tx: SignedTx) -> LedgerError | None:
    """Why the ledger would certainly fail `tx` now, or None; the mempool asks this at admission so
    such txs never reach a block and cost no nonce. The checks and their order are the block's own
    (`_authorise`, then the kind's `static_check`), so the code is the one the block would give."""
    try:
        spec, _, _ = _authorise(state, tx)
        static_check(spec, tx.body)
    except LedgerError as exc:
        return exc
    return None


def _run_tx(state: StateView, block: BlockCtx, tx: SignedTx) -> Receipt:
    expected = next_nonce(state, tx.sender)
    if tx.nonce != expected:
        return Receipt(tx.hash, "failed", "bad_nonce", f"expected nonce {expected}, got {tx.nonce}", ())
    token = state.savepoint()
    mark = block.next_event
    ctx: TxCtx | None = None
    try:
        spec, actor, roles = _authorise(state, tx)
        ctx = TxCtx(block=block, tx_hash=tx.hash, key=tx.sender, actor=actor, roles=roles,
                    f=static_check(spec, tx.body))
        spec.validate(state, tx, ctx)
        spec.apply(state, tx, ctx)
    except ProtocolError as exc:
        state.revert(token)
        block.next_event = mark
        save(state, keys.nonce(tx.sender), expected + 1)
        return Receipt(tx.hash, "failed", exc.code, exc.message, ())
    state.release(token)
    save(state, keys.nonce(tx.sender), expected + 1)
    save(state, keys.tx_record(tx.hash), [block.height, mark, block.next_event - mark])
    return Receipt(tx.hash, "ok", "ok", "", tuple(ctx.events))


def apply_block(state: StateView, header: BlockHeader, txs: Sequence[SignedTx]) -> BlockResult:
    """Execute one committed block against `state`; the txs are signature- and chain-checked."""
    last_time = load_int(state, keys.TIME)
    now = max(header.time, last_time)
    raw_cursor = state.get(keys.EVENT_CURSOR)
    first = 0
    if raw_cursor is not None:
        h, nxt = unpack(raw_cursor)
        if h == header.height:  # genesis events already used indexes at this height
            first = nxt
    block = BlockCtx(height=header.height, time=now, params=load_params(state), next_event=first)
    run_schedule(state, block)
    receipts = [_run_tx(state, block, tx) for tx in txs]
    save(state, keys.HEIGHT, header.height)
    save(state, keys.TIME, now)
    save(state, keys.EVENT_CURSOR, [header.height, block.next_event])
    receipt_bytes, events_bytes = results.encode(receipts, block.events)
    root = results_root(receipt_bytes, events_bytes)
    # the state root after this block commits to its results root and to its parent's
    save(state, keys.RESULTS, [results.last_results_roots(state)[1], root])
    return BlockResult(receipts=receipts, events=list(block.events), receipt_bytes=receipt_bytes,
                       events_bytes=events_bytes, results_root=root)
