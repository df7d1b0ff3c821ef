"""The step oracle of the ledger state machine: what one block may do, judged from a snapshot of the
state before it, one after it, and the block's events in order.

It checks the cross-kind rules of docs/ledger.md ("Rules that span kinds") that only a step shows:
what is paid on a pledged receivable reaches the pledgee unless that tx ended the pledge first; a pledge
changes only with an event (the events replayed over the old pledges give exactly the new ones); a loan
decision releases only pledges that loan made; no credit reaches a frozen participant and no balance
of one grows; a discount is never paid above what is outstanding; a credit counter grows only with
the money movement (or risk event) that earns it. It also replays registrations and key rotations
through a block, so each receipt is judged by the roles its sender had when it ran.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from protocol.ledger import keys
from protocol.ledger.model import Event, Receipt
from protocol.ledger.store import STATS, unpack
from protocol.state import StateReader

CREDITS = ("funds_moved", "funds_released", "minted")  # events that credit `to`
PLEDGE_KINDS = (keys.P_RECEIVABLE, keys.P_COLLATERAL)


def _scan(state: StateReader, prefix: bytes) -> list[tuple[bytes, Any]]:
    return [(k[len(prefix):], unpack(v)) for k, v in state.iter_range(*keys.prefix_range(prefix))]


@dataclass(frozen=True, slots=True)
class Snapshot:
    frozen: frozenset[bytes]
    pledges: dict[bytes, tuple[bytes, bytes]]  # item -> (pledgee, loan or b"")
    credit: dict[bytes, dict[str, int]]
    balances: Counter[tuple[bytes, str]]
    loans: dict[bytes, dict[str, Any]]
    receivable_assets: dict[bytes, str]


def snapshot(state: StateReader) -> Snapshot:
    pledges = {item: (rec["pledged_to"], rec["loan"]) for prefix in PLEDGE_KINDS
               for item, rec in _scan(state, prefix) if rec["pledged_to"]}
    receivables = _scan(state, keys.P_RECEIVABLE)
    balances: Counter[tuple[bytes, str]] = Counter()
    for k, v in _scan(state, keys.P_BALANCE):
        balances[(k[:32], k[32:].decode())] = v
    return Snapshot(frozen=frozenset(pid for pid, p in _scan(state, keys.P_PARTICIPANT) if p["frozen"]),
                    pledges=pledges, credit={pid: c for pid, c in _scan(state, keys.P_CREDIT)},
                    balances=balances, loans=dict(_scan(state, keys.P_LOAN)),
                    receivable_assets={rid: r["asset"] for rid, r in receivables})


class Roles:
    """Who a key signs for and with which roles, as a block goes on: taken from the state before the
    block, then register and rotate-key receipts count for the txs after them in the same block."""

    def __init__(self, state: StateReader) -> None:
        self.owner: dict[bytes, bytes] = dict(_scan(state, keys.P_KEY))
        self.roles: dict[bytes, frozenset[str]] = {pid: frozenset(p["roles"])
                                                   for pid, p in _scan(state, keys.P_PARTICIPANT)}

    def of_key(self, key: bytes) -> frozenset[str] | None:
        pid = self.owner.get(key, key)
        return self.roles.get(pid) if pid else None  # b"": a revoked key

    def after(self, receipt: Receipt) -> None:
        for ev in receipt.events:
            if ev.kind == "participant_registered":
                self.roles[ev.data["account"]] = frozenset(ev.data["roles"])
            elif ev.kind == "key_rotated":
                self.owner[ev.data["new_key"]] = ev.data["account"]
                self.owner[ev.data["old_key"]] = b""


class _Step:
    def __init__(self, before: Snapshot, adopted: dict[bytes, bytes]) -> None:
        self.frozen = set(before.frozen)
        self.pledges = dict(before.pledges)
        self.adopted = dict(adopted)  # item -> the loan that took over its standing pledge
        self.earned: Counter[tuple[bytes, str]] = Counter()

    def credit(self, ev: Event, after: Snapshot) -> None:
        to = ev.data["to"]
        assert to not in self.frozen, f"{ev.kind} credited frozen {to.hex()[:8]}: {ev.data}"
        if ev.kind == "funds_moved" and ev.data["reason"] == "receivable_settle":
            assert ev.data["asset"] == after.receivable_assets[ev.data["ref"]], f"a receivable paid in another asset: {ev.data}"
            held = self.pledges.get(ev.data["ref"])
            assert held is None or held[0] == to, \
                f"a payment on pledged receivable {ev.data['ref'].hex()[:8]} went to {to.hex()[:8]}, not its pledgee"

    def pledge(self, ev: Event) -> None:
        d = ev.data
        item = d["item"]
        held = self.pledges.get(item)
        if ev.kind == "collateral_pledged":
            assert held is None or (held == (d["pledgee"], b"") and d["loan"]), f"re-pledged {held} -> {d}"
            if held is not None:
                self.adopted[item] = d["loan"]
            self.pledges[item] = (d["pledgee"], d["loan"])
            return
        assert held is not None, f"{ev.kind} of an item that was not pledged: {d}"
        if ev.kind == "collateral_detached":
            assert held == (d["pledgee"], d["loan"]) and self.adopted.get(item) == d["loan"], \
                f"detached a pledge the loan did not take over: {held} {d}"
            self.pledges[item] = (d["pledgee"], b"")
        else:
            if ev.kind == "collateral_released" and d["reason"] in ("loan_rejected", "loan_repaid"):
                assert held[1] == d["loan"] and self.adopted.get(item) != d["loan"], \
                    f"a loan decision released a pledge that loan did not make: {held} {d}"
            del self.pledges[item]
        self.adopted.pop(item, None)

    def receipt(self, events: tuple[Event, ...] | list[Event], after: Snapshot) -> None:
        payers = {ev.data["from"] for ev in events
                  if ev.kind == "funds_moved" and ev.data["from"] != ev.data["to"] and ev.data["amount"] > 0}
        paid = {ev.data["to"] for ev in events if ev.kind == "funds_moved" and ev.data["from"] != ev.data["to"]}
        for p in payers:
            self.earned[(p, "payments")] += 1
        for ev in events:
            d = ev.data
            if ev.kind == "participant_frozen":
                self.frozen.add(d["account"])
            elif ev.kind == "participant_unfrozen":
                self.frozen.discard(d["account"])
            elif ev.kind in CREDITS:
                self.credit(ev, after)
            elif ev.kind.startswith("collateral_") and ev.kind != "collateral_registered":
                self.pledge(ev)
            elif ev.kind == "receivable_discounted":
                assert d["price"] <= d["outstanding"], f"discount paid above the outstanding amount: {d}"
            elif ev.kind == "receivable_settled" and d["debtor"] in payers:
                self.earned[(d["debtor"], "honoured")] += 1
            elif ev.kind == "loan_repaid" and after.loans[d["loan"]]["lender"] in paid:
                for stat in ("on_time", "late"):
                    self.earned[(after.loans[d["loan"]]["borrower"], stat)] += 1
            elif ev.kind == "risk_overdue" and d["object"] == "receivable":
                self.earned[(ev.accounts[0], "recv_late")] += 1
            elif ev.kind == "risk_default":
                self.earned[(after.loans[d["id"]]["borrower"], "defaults")] += 1


class Oracle:
    """Judges the steps of one run; remembers across them which loan took over which standing pledge
    (the ledger's own record of it is what is being checked, so the oracle keeps its own)."""

    def __init__(self) -> None:
        self.adopted: dict[bytes, bytes] = {}

    def check_step(self, before: Snapshot, after: Snapshot, receipts: list[tuple[Event, ...] | list[Event]]) -> None:
        """Judge one block: `receipts` are the event lists in execution order (time-driven events first)."""
        step = _Step(before, self.adopted)
        for events in receipts:
            step.receipt(events, after)
        _judge(before, after, step)
        self.adopted = step.adopted


def _judge(before: Snapshot, after: Snapshot, step: _Step) -> None:
    silent = {k.hex()[:8]: (step.pledges.get(k), after.pledges.get(k)) for k in set(step.pledges) | set(after.pledges)
              if step.pledges.get(k) != after.pledges.get(k)}
    assert not silent, f"pledges changed without their events (by events, in state): {silent}"
    for (pid, asset), amount in after.balances.items():
        if pid in before.frozen and pid in after.frozen:
            assert amount <= before.balances[(pid, asset)], f"frozen {pid.hex()[:8]} gained {asset}"
    zero = dict.fromkeys(STATS, 0)
    for pid, stats in after.credit.items():
        old = before.credit.get(pid, zero)
        for stat in STATS:
            grew = stats[stat] - old[stat]
            assert 0 <= grew <= step.earned[(pid, stat)], \
                f"{pid.hex()[:8]}'s {stat} grew by {grew} with {step.earned[(pid, stat)]} money movements earning it"
