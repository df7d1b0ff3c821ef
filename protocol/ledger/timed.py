"""Time-driven transitions: due-soon and overdue alerts, defaults with enforcement, campaign
deadlines, FX quote expiry, all run at the start of a block from the `q/` schedule.

Rule: entries due at or before the block time run in key order (time, type, id), at most
`params.max_sched_per_block` per block (the rest run in the next block), each under its own
savepoint. Handlers re-check the object's current status, so an entry whose object has moved on
is a no-op. Nothing here reads a clock: the block time is the only time.
"""

from __future__ import annotations

from collections.abc import Callable

from protocol.errors import ProtocolError
from protocol.ledger import keys
from protocol.ledger.kinds import campaigns, fx, loans, receivables
from protocol.ledger.model import BlockCtx
from protocol.ledger.store import emit
from protocol.state import StateView

Handler = Callable[[StateView, BlockCtx, bytes], None]

HANDLERS: dict[int, Handler] = {
    keys.S_LOAN_DUE_SOON: loans.on_due_soon,
    keys.S_LOAN_DUE: loans.on_due,
    keys.S_LOAN_DEFAULT: loans.on_default,
    keys.S_RECV_DUE_SOON: receivables.on_due_soon,
    keys.S_RECV_DUE: receivables.on_due,
    keys.S_CAMPAIGN_DEADLINE: campaigns.on_deadline,
    keys.S_FX_EXPIRY: fx.expire_quote,
}


def run_schedule(state: StateView, ctx: BlockCtx) -> None:
    start, stop = keys.sched_until(ctx.time)
    due: list[bytes] = []
    for k, _ in state.iter_range(start, stop):
        due.append(k)
        if len(due) >= ctx.params.max_sched_per_block:
            break
    for k in due:
        _, typ, obj = keys.parse_sched(k)
        state.delete(k)
        token = state.savepoint()
        mark = ctx.next_event
        n_events = len(ctx.events)
        try:
            HANDLERS[typ](state, ctx, obj)
        except ProtocolError as exc:
            state.revert(token)
            ctx.next_event = mark
            del ctx.events[n_events:]
            emit(state, ctx, "transition_failed", [], type=typ, id=obj, code=exc.code)
            continue
        state.release(token)
