"""The ledger as a hypothesis state machine: random valid and invalid txs of every kind, time jumps,
and the DESIGN section 4 invariants plus the cross-kind rules of docs/ledger.md checked after every
step (state invariants here, step rules in `ledger_oracle`).

Examples: SMELEDGER_LEDGER_EXAMPLES (default 500), steps per example: SMELEDGER_LEDGER_STEPS (default 40).
`make test` runs them derandomized (the same examples every run); SMELEDGER_LEDGER_RANDOM=1 (set by
`make soak`) draws fresh ones. A failure prints a `@reproduce_failure` blob, and hypothesis' example
database replays it on the next run.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from protocol.crypto import PrivateKey, sha256
from protocol.ledger import KINDS, ROLE_MATRIX, keys
from protocol.ledger.harness import Harness, replay, state_digest, state_root
from protocol.ledger.model import DAY_MS, BlockResult, Receipt
from protocol.ledger.results import index_entries, last_results_roots
from protocol.ledger.store import unpack
from protocol.results import results_root
from protocol.tx import SignedTx
from tests.property.ledger_oracle import Oracle, Roles, snapshot

EXAMPLES = int(os.environ.get("SMELEDGER_LEDGER_EXAMPLES", "500"))
STEPS = int(os.environ.get("SMELEDGER_LEDGER_STEPS", "40"))
RANDOM = os.environ.get("SMELEDGER_LEDGER_RANDOM") == "1"

PEOPLE = [("reg", ["REGULATOR"]), ("bank1", ["BANK"]), ("bank2", ["BANK"]), ("sme1", ["SME"]),
          ("sme2", ["SME"]), ("sme3", ["SME"]), ("inv1", ["INVESTOR"]), ("inv2", ["INVESTOR", "SME"])]
ASSETS = [("CNY.B1", "bank1"), ("USD.B2", "bank2")]
BALANCES = [(n, a, 5_000_000) for n, _ in PEOPLE for a, _ in ASSETS]
PARAMS = {"grace_ms": 2 * DAY_MS, "due_soon_ms": DAY_MS, "max_contributors": 3, "max_collateral": 3}
META = {keys.HEIGHT, keys.TIME, keys.EVENT_CURSOR, keys.RESULTS}

# Legal status graphs; a step may take several edges (one block can run several transitions).
GRAPHS: dict[bytes, dict[str, set[str]]] = {
    keys.P_RECEIVABLE: {"proposed": {"accepted", "rejected"}, "accepted": {"overdue", "settled", "split"},
                        "overdue": {"settled"}},
    keys.P_LOAN: {"applied": {"active", "rejected"}, "active": {"overdue", "repaid"},
                  "overdue": {"repaid", "defaulted"}},
    keys.P_COLLATERAL: {"free": {"pledged"}, "pledged": {"free", "seized"}},
    keys.P_CAMPAIGN: {"open": {"funded", "refunded"}},
    keys.P_FX: {"open": {"filled", "expired"}},
}
INITIAL = {keys.P_RECEIVABLE: {"proposed", "accepted"}, keys.P_LOAN: {"applied"},
           keys.P_COLLATERAL: {"free"}, keys.P_CAMPAIGN: {"open", "funded"}, keys.P_FX: {"open", "filled"}}


def reachable(graph: dict[str, set[str]], a: str, b: str) -> bool:
    seen, todo = {a}, [a]
    while todo:
        for n in graph.get(todo.pop(), set()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return b in seen


RARE = {"register", "rotate-key", "freeze", "redeem"}
WEIGHTED_KINDS = sorted(KINDS) + sorted(k for k in KINDS if k not in RARE) * 2

AMOUNTS = st.sampled_from([25_000, 1, 7, 100, 1_000, 100_000, 1_000_000, 4_000_000, 9_000_000])


def _warm_start() -> tuple[Harness, Oracle]:
    """A chain with one object in each interesting state, so short random runs reach deep paths, and
    the oracle that judged its steps."""
    h = Harness(PEOPLE, assets=ASSETS, balances=BALANCES, params=PARAMS)
    h.add_key("ghost")
    i = h.id
    due = h.time + 20 * DAY_MS
    doc = b"\x33" * 32
    oracle = Oracle()
    send = h.send

    def judged(name: str, kind: str, /, **fields: Any) -> Receipt:
        before = snapshot(h.state)
        r = send(name, kind, **fields)
        oracle.check_step(before, snapshot(h.state), [r.events])
        return r

    h.send = judged  # type: ignore[method-assign]

    def ok(r: Receipt) -> bytes:
        assert r.ok, r
        return r.tx_hash

    r1 = ok(h.send("sme1", "receivable-issue", debtor=i("sme2"), face=2_000_000, asset="CNY.B1", due=due, doc=doc))
    ok(h.send("sme2", "receivable-accept", receivable=r1))
    r2 = ok(h.send("sme2", "receivable-issue", debtor=i("sme3"), face=900_000, asset="USD.B2", due=due, doc=doc))
    ok(h.send("sme3", "receivable-accept", receivable=r2))
    ok(h.send("sme3", "receivable-issue", debtor=i("sme1"), face=300_000, asset="CNY.B1", due=due, doc=doc))
    ok(h.send("sme1", "receivable-split", receivable=r1, amount=500_000, to=i("sme3")))
    ok(h.send("sme2", "receivable-discount", receivable=r2, buyer=i("bank1"), price=800_000))
    co1 = ok(h.send("bank2", "collateral-register", owner=i("sme1"), category="inventory", valuation=3_000_000,
                    asset="USD.B2", doc=doc))
    co2 = ok(h.send("bank1", "collateral-register", owner=i("sme3"), category="warehouse_receipt",
                    valuation=1_000_000, asset="CNY.B1", doc=doc))
    co3 = ok(h.send("bank1", "collateral-register", owner=i("sme2"), category="inventory", valuation=700_000,
                    asset="CNY.B1", doc=doc))
    ok(h.send("sme2", "pledge", item=co3, to=i("bank1")))  # a standing pledge ...
    ok(h.send("sme2", "loan-apply", lender=i("bank1"), asset="CNY.B1", amount=300_000, term_ms=20 * DAY_MS,
              collateral=[co3]))  # ... that a loan application takes over
    r3 = ok(h.send("sme2", "receivable-issue", debtor=i("sme1"), face=400_000, asset="CNY.B1", due=due, doc=doc))
    ok(h.send("sme1", "receivable-accept", receivable=r3))
    l2 = ok(h.send("sme2", "loan-apply", lender=i("bank2"), asset="CNY.B1", amount=250_000, term_ms=10 * DAY_MS,
                   collateral=[r3]))
    ok(h.send("bank2", "loan-approve", loan=l2, rate_bps=900, penalty_bps=2_000))  # a receivable securing a loan
    r4 = ok(h.send("sme3", "receivable-issue", debtor=i("sme2"), face=100_000, asset="CNY.B1", due=due, doc=doc))
    ok(h.send("sme2", "receivable-accept", receivable=r4))
    ok(h.send("sme3", "receivable-transfer", receivable=r4, to=i("sme2")))  # a debtor holding its own receivable
    ok(h.send("bank1", "credit-limit", borrower=i("sme3"), asset="CNY.B1", limit=2_000_000))
    l1 = ok(h.send("sme1", "loan-apply", lender=i("bank2"), asset="USD.B2", amount=1_000_000, term_ms=10 * DAY_MS,
                   collateral=[co1]))
    ok(h.send("bank2", "loan-approve", loan=l1, rate_bps=650, penalty_bps=1_000))
    ok(h.send("sme3", "loan-apply", lender=i("bank1"), asset="CNY.B1", amount=1_700_000, term_ms=5 * DAY_MS,
              collateral=[co2]))
    cp = ok(h.send("sme2", "campaign-create", asset="CNY.B1", target=3_000_000, minimum=1_000_000,
                   deadline=h.time + 15 * DAY_MS))
    ok(h.send("inv1", "campaign-contribute", campaign=cp, amount=500_000))
    ok(h.send("inv2", "campaign-contribute", campaign=cp, amount=200_000))
    ok(h.send("reg", "freeze", account=i("inv2")))  # a frozen investor: closing the campaign waits for it
    ok(h.send("bank1", "fx-quote", base="CNY.B1", quote="USD.B2", rate=14_000_000, amount=1_000_000,
              expiry=h.time + 5 * DAY_MS))
    h.send = send  # type: ignore[method-assign]
    return h, oracle


WARM, WARM_ORACLE = _warm_start()


class LedgerMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.h = WARM.clone()
        self.names = [n for n, _ in PEOPLE] + ["ghost"]
        self.pid = {n: self.h.id(n) for n in self.names}
        self.frozen: set[bytes] = {k[len(keys.P_PARTICIPANT):] for k, v in self.h.state.iter_range(
            *keys.prefix_range(keys.P_PARTICIPANT)) if unpack(v)["frozen"]}
        self.ids: dict[str, list[bytes]] = {b: [k[len(p):] for k, _ in self.h.state.iter_range(*keys.prefix_range(p))]
                                            for b, p in (("r", keys.P_RECEIVABLE), ("co", keys.P_COLLATERAL),
                                                         ("lo", keys.P_LOAN), ("cp", keys.P_CAMPAIGN),
                                                         ("fx", keys.P_FX))}
        self.ok_txs: list[SignedTx] = []
        self.rotations = 0
        self.statuses = self._statuses()
        self.kinds_seen: Counter[tuple[str, str]] = Counter()
        self.oracle = Oracle()
        self.oracle.adopted = dict(WARM_ORACLE.adopted)

    # ---- helpers -----------------------------------------------------------------------------

    def _statuses(self) -> dict[bytes, str]:
        out = {}
        for prefix in GRAPHS:
            for k, v in self.h.state.iter_range(*keys.prefix_range(prefix)):
                out[k] = unpack(v)["status"]
        return out

    def _pick(self, data: st.DataObject, bucket: str) -> bytes:
        known = self.ids[bucket]
        if known and data.draw(st.integers(0, 9)) < 9:
            newest = data.draw(st.integers(0, 3)) == 0  # follow a new object through its life
            return known[-1 - (0 if newest else data.draw(st.integers(0, len(known) - 1)))]
        return data.draw(st.binary(min_size=32, max_size=32))

    def _rec(self, bucket: str, oid: bytes) -> dict[str, Any] | None:
        prefix = {"r": keys.P_RECEIVABLE, "co": keys.P_COLLATERAL, "lo": keys.P_LOAN, "cp": keys.P_CAMPAIGN,
                  "fx": keys.P_FX}[bucket]
        raw = self.h.state.get(prefix + oid)
        return None if raw is None else unpack(raw)

    def _who(self, data: st.DataObject, *roles: str) -> bytes:
        """A participant id; usually one holding one of `roles` when roles are given."""
        fitting = [n for n, r in PEOPLE if set(roles) & set(r)]
        if fitting and data.draw(st.integers(0, 5)) != 5:
            return self.pid[data.draw(st.sampled_from(fitting))]
        return self.pid[data.draw(st.sampled_from(self.names))]

    def _name(self, pid: bytes) -> str | None:
        return next((n for n, p in self.pid.items() if p == pid and n in self.h.keys), None)

    def _asset(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(["CNY.B1"] * 4 + ["USD.B2"] * 3 + ["NEW.X", "bad asset"]))

    def _time(self, data: st.DataObject) -> int:
        return self.h.time + data.draw(st.sampled_from([10 * DAY_MS, 2 * DAY_MS, 40 * DAY_MS, 3_600_000, 0, -DAY_MS]))

    def _part(self, data: st.DataObject, whole: int) -> int:
        """An amount that is usually a sensible share of `whole`, sometimes too much."""
        return data.draw(st.sampled_from([max(1, whole // 3), max(1, whole // 2), whole, whole + 1, 1]))

    def _make(self, data: st.DataObject, kind: str) -> tuple[str | None, dict[str, Any]]:
        """Fields for `kind` and, for kinds about an object, the party that may act on it."""
        d = data
        f: dict[str, Any] = {}
        who: str | None = None
        if kind == "register":
            name = f"new{d.draw(st.integers(0, 3))}"
            if name not in self.h.keys:
                self.h.add_key(name)
                self.pid[name] = self.h.id(name)
                self.names.append(name)
            f = {"id": self.pid[name], "name": name, "kyc": d.draw(st.integers(0, 4)),
                 "roles": d.draw(st.lists(st.sampled_from(["SME", "INVESTOR", "BANK", "REGULATOR", "KING"]),
                                          min_size=1, max_size=2))}
        elif kind == "rotate-key":
            self.rotations += 1
            f = {"new_key": PrivateKey(sha256(b"rot%d" % self.rotations)).public_key}
        elif kind in ("freeze", "unfreeze"):
            f = {"account": self._who(d, "SME", "INVESTOR", "BANK")}
            if kind == "unfreeze" and self.frozen and not d.draw(st.booleans()):
                f["account"] = d.draw(st.sampled_from(sorted(self.frozen)))
        elif kind in ("issue", "redeem"):
            f = {"asset": self._asset(d), "amount": d.draw(AMOUNTS)}
            who = {"CNY.B1": "bank1", "USD.B2": "bank2"}.get(f["asset"])
            if kind == "issue" and d.draw(st.booleans()):
                f["to"] = self._who(d)
        elif kind == "transfer":
            f = {"to": self._who(d), "asset": self._asset(d), "amount": d.draw(AMOUNTS)}
            if d.draw(st.booleans()):
                f["memo"] = d.draw(st.binary(max_size=40))
        elif kind == "fx-quote":
            f = {"base": self._asset(d), "quote": self._asset(d), "rate": d.draw(st.integers(1, 3 * 10**8)),
                 "amount": d.draw(AMOUNTS), "expiry": self._time(d)}
            who = {"CNY.B1": "bank1", "USD.B2": "bank2"}.get(f["base"])
        elif kind == "fx-accept":
            qid = self._pick(d, "fx")
            q = self._rec("fx", qid)
            f = {"quote_id": qid, "amount": self._part(d, q["remaining"]) if q else d.draw(AMOUNTS)}
        elif kind == "receivable-issue":
            f = {"debtor": self._who(d, "SME"), "face": d.draw(AMOUNTS), "asset": self._asset(d), "due": self._time(d),
                 "doc": b"\x11" * 32}
        elif kind.startswith("receivable-"):
            rid = self._pick(d, "r")
            r = self._rec("r", rid)
            f = {"receivable": rid}
            out = r["outstanding"] if r else 1000
            if kind in ("receivable-accept", "receivable-reject", "receivable-settle") and r:
                who = self._name(r["debtor"])
            elif r:
                who = self._name(r["holder"])
            if kind == "receivable-transfer":
                f["to"] = r["debtor"] if r and d.draw(st.integers(0, 3)) == 0 else self._who(d)
            elif kind == "receivable-split":
                f.update(amount=self._part(d, out), to=self._who(d))
            elif kind == "receivable-settle":
                f["amount"] = self._part(d, out)
            elif kind == "receivable-discount":
                f.update(buyer=self._who(d, "BANK", "INVESTOR"), price=self._part(d, out))
                if r and r["offer"] and not d.draw(st.booleans()):
                    f.update(buyer=r["offer"]["buyer"], price=r["offer"]["price"])
                    who = self._name(r["offer"]["buyer"])
        elif kind == "collateral-register":
            f = {"owner": self._who(d, "SME"), "category": d.draw(st.sampled_from(["inventory"] * 5 + ["gold"])),
                 "valuation": d.draw(AMOUNTS), "asset": self._asset(d), "doc": b"\x22" * 32}
        elif kind in ("pledge", "release"):
            bucket = d.draw(st.sampled_from(["co", "co", "r"]))
            item = self._pick(d, bucket)
            if kind == "release" and not d.draw(st.booleans()):
                loose = [x for x in self.ids[bucket] if (rr := self._rec(bucket, x)) and rr["pledged_to"]
                         and not (rr["loan"] and self._rec("lo", rr["loan"])["status"] in ("applied", "active", "overdue"))]
                item = d.draw(st.sampled_from(loose)) if loose else item
            rec = self._rec(bucket, item)
            f = {"item": item}
            if kind == "pledge":
                f["to"] = self._who(d, "BANK")
                if rec:
                    who = self._name(rec["owner"] if bucket == "co" else rec["holder"])
            elif rec and rec["pledged_to"]:
                who = self._name(rec["pledged_to"])
        elif kind == "loan-apply":
            f = {"lender": self._who(d, "BANK"), "asset": self._asset(d), "amount": d.draw(AMOUNTS),
                 "term_ms": d.draw(st.sampled_from([DAY_MS, 5 * DAY_MS, 30 * DAY_MS])),
                 "collateral": []}
            if not d.draw(st.booleans()) and self.ids["co"]:
                item = self._pick(d, "co")
                rec = self._rec("co", item)
                f["collateral"].append(item)
                if rec:
                    who = self._name(rec["owner"])
                    if rec["pledged_to"]:
                        f["lender"] = rec["pledged_to"]
            f["collateral"] += [self._pick(d, "r") for _ in range(d.draw(st.sampled_from([0, 0, 0, 1, 4])))]
        elif kind in ("loan-approve", "loan-reject", "loan-repay"):
            lid = self._pick(d, "lo")
            ln = self._rec("lo", lid)
            f = {"loan": lid}
            if ln:
                who = self._name(ln["borrower"] if kind == "loan-repay" else ln["lender"])
            if kind == "loan-approve":
                f.update(rate_bps=d.draw(st.sampled_from([0, 650, 2_000])), penalty_bps=d.draw(st.sampled_from([0, 1_000])))
            elif kind == "loan-repay":
                f["amount"] = d.draw(st.sampled_from([1, 10_000, 10**6, 10**12]))
        elif kind == "campaign-create":
            target = d.draw(AMOUNTS)
            f = {"asset": self._asset(d), "target": target, "minimum": d.draw(st.sampled_from([1, target, target + 1])),
                 "deadline": self._time(d)}
        elif kind == "campaign-contribute":
            cid = self._pick(d, "cp")
            c = self._rec("cp", cid)
            f = {"campaign": cid, "amount": self._part(d, c["target"] - c["raised"]) if c and c["target"] > c["raised"]
                 else d.draw(AMOUNTS)}
        elif kind == "credit-limit":
            f = {"borrower": self._who(d, "SME"), "asset": self._asset(d), "limit": d.draw(st.sampled_from([0, 500_000, 10**7]))}
        mangle = d.draw(st.integers(0, 24))
        if mangle == 24 and f:
            f.pop(d.draw(st.sampled_from(sorted(f))))
        elif mangle == 23:
            f["surprise"] = 1
        elif mangle == 22 and f:
            f[d.draw(st.sampled_from(sorted(f)))] = "wrong type" if d.draw(st.booleans()) else -5
        return who, f

    def _draw_tx(self, data: st.DataObject, nonces: dict[str, int] | None = None) -> SignedTx:
        kind = data.draw(st.sampled_from(WEIGHTED_KINDS))
        who, fields = self._make(data, kind)
        name = who if who is not None and data.draw(st.integers(0, 5)) != 5 else self._sender(data, kind)
        nonce = None
        if nonces is not None:
            key = self.h.keys[name].public_key
            nonce = nonces.get(name, unpack(self.h.state.get(keys.nonce(key)) or b"\x00"))
            nonces[name] = nonce + 1
        return self.h.tx(name, kind, nonce=nonce, **fields)

    def _sender(self, data: st.DataObject, kind: str) -> str:
        allowed = ROLE_MATRIX[kind]
        fitting = [n for n, r in PEOPLE if not allowed or allowed & set(r)]
        if fitting and data.draw(st.integers(0, 4)) != 4:
            return data.draw(st.sampled_from(fitting))
        return data.draw(st.sampled_from(self.names))

    def _run(self, txs: list[SignedTx], advance_ms: int = 0) -> BlockResult:
        """One block, judged: each receipt against the roles its sender had when it ran, and the whole
        step against the cross-kind rules (`ledger_oracle.check_step`)."""
        before = snapshot(self.h.state)
        roles = Roles(self.h.state)
        res = self.h.block(txs, advance_ms=advance_ms)
        assert len(res.receipts) == len(txs)
        for tx, r in zip(txs, res.receipts, strict=True):
            self._check_receipt(tx, r, roles.of_key(tx.sender))
            roles.after(r)
        self.oracle.check_step(before, snapshot(self.h.state), [res.events] + [r.events for r in res.receipts])
        return res

    def _harvest(self, tx: SignedTx, r: Receipt) -> None:
        bucket = {"receivable-issue": "r", "collateral-register": "co", "loan-apply": "lo",
                  "campaign-create": "cp", "fx-quote": "fx"}.get(tx.kind)
        if bucket:
            self.ids[bucket].append(tx.hash)
        for ev in r.events:
            if ev.kind == "receivable_split":
                self.ids["r"].extend(ev.data["children"])
            if ev.kind == "participant_frozen":
                self.frozen.add(ev.data["account"])
            if ev.kind == "participant_unfrozen":
                self.frozen.discard(ev.data["account"])
            if ev.kind == "key_rotated":
                name = next(n for n, k in self.h.keys.items() if k.public_key == tx.sender)
                old = f"old-{name}-{len(self.names)}"
                self.h.keys[old] = self.h.keys[name]
                self.pid[old] = self.pid[name]
                self.h.keys[name] = next(PrivateKey(sha256(b"rot%d" % i)) for i in range(self.rotations + 1)
                                         if PrivateKey(sha256(b"rot%d" % i)).public_key == ev.data["new_key"])
                self.names.append(old)

    def _check_receipt(self, tx: SignedTx, r: Receipt, roles: frozenset[str] | None) -> None:
        self.kinds_seen[(tx.kind, r.code)] += 1
        assert r.tx_hash == tx.hash
        if r.ok:
            assert roles is not None, "an unregistered key got an ok receipt"
            allowed = ROLE_MATRIX[tx.kind]
            assert not allowed or allowed & roles, f"{tx.kind} ok for roles {roles}"
            self.ok_txs.append(tx)
            self._harvest(tx, r)
        else:
            assert r.events == ()

    # ---- rules -------------------------------------------------------------------------------

    @rule(data=st.data())
    def one_tx(self, data: st.DataObject) -> None:
        tx = self._draw_tx(data)
        res = self._run([tx])
        r = res.receipts[0]
        assert res.events == []
        changed = set(self.h.last_changes) - META
        if not r.ok:
            assert changed == {keys.nonce(tx.sender)}, f"failed {tx.kind} ({r.code}) changed {changed}"
            assert unpack(self.h.state.get(keys.nonce(tx.sender))) == tx.nonce + 1

    @rule(data=st.data(), n=st.integers(2, 4))
    def many_txs_in_one_block(self, data: st.DataObject, n: int) -> None:
        nonces: dict[str, int] = {}
        self._run([self._draw_tx(data, nonces) for _ in range(n)])

    @rule(ms=st.sampled_from([1, 3_600_000, DAY_MS, 2 * DAY_MS + 1, 9 * DAY_MS, 35 * DAY_MS]))
    def time_passes(self, ms: int) -> None:
        res = self._run([], advance_ms=ms)
        assert all(e.tx is None for e in res.events)
        assert not any(e.kind == "transition_failed" for e in res.events)

    @rule(data=st.data())
    def replayed_tx_is_rejected_and_changes_nothing(self, data: st.DataObject) -> None:
        if not self.ok_txs:
            return
        tx = self.ok_txs[data.draw(st.integers(0, len(self.ok_txs) - 1))]
        r = self.h.block([tx]).receipts[0]
        assert r.code == "bad_nonce"
        assert set(self.h.last_changes) <= META

    @rule(data=st.data(), ahead=st.integers(1, 3))
    def future_nonce_is_rejected_without_bumping(self, data: st.DataObject, ahead: int) -> None:
        name = data.draw(st.sampled_from(self.names))
        key = self.h.keys[name].public_key
        cur: int = unpack(self.h.state.get(keys.nonce(key)) or b"\x00")
        tx = self.h.tx(name, "transfer", nonce=cur + ahead, to=self.h.id("sme1"), asset="CNY.B1", amount=1)
        r = self.h.block([tx]).receipts[0]
        assert r.code == "bad_nonce"
        assert set(self.h.last_changes) <= META

    # ---- invariants --------------------------------------------------------------------------

    def _scan(self, prefix: bytes) -> list[tuple[bytes, Any]]:
        return [(k, unpack(v)) for k, v in self.h.state.iter_range(*keys.prefix_range(prefix))]

    @invariant()
    def money_is_conserved_and_never_negative(self) -> None:
        held: Counter[str] = Counter()
        for k, v in self._scan(keys.P_BALANCE):
            assert isinstance(v, int) and v > 0, f"balance {k!r} = {v}"
            held[k[len(keys.P_BALANCE) + 32:].decode()] += v
        for _, c in self._scan(keys.P_CAMPAIGN):
            if c["status"] == "open":
                held[c["asset"]] += c["raised"]
        for _, q in self._scan(keys.P_FX):
            assert 0 <= q["remaining"] <= q["amount"]
            if q["status"] == "open":
                held[q["base"]] += q["remaining"]
            else:
                assert q["remaining"] == 0
        for k, a in self._scan(keys.P_ASSET):
            aid = k[len(keys.P_ASSET):].decode()
            assert a["issued"] - a["redeemed"] == held[aid], f"{aid}: supply {a} vs held {held[aid]}"
            held.pop(aid, None)
        assert not +held, f"balances in unknown assets: {held}"

    @invariant()
    def receivables_never_exceed_face_and_splits_sum_to_parent(self) -> None:
        recs = dict(self._scan(keys.P_RECEIVABLE))
        for r in recs.values():
            assert 0 <= r["outstanding"] <= r["face"]
            if r["status"] in ("settled", "split"):
                assert r["outstanding"] == 0
            if r["status"] == "split":
                kids = [recs[keys.receivable(c)] for c in r["children"]]
                assert len(kids) == 2 and 0 < r["split_total"] <= r["face"]
                assert sum(c["face"] for c in kids) == r["split_total"]
                assert all(c["parent"] == r["id"] for c in kids)
            if r["pledged_to"]:
                assert r["status"] in ("accepted", "overdue")

    @invariant()
    def objects_only_take_legal_transitions(self) -> None:
        now = self._statuses()
        for k, st_new in now.items():
            prefix = next(p for p in GRAPHS if k.startswith(p))
            old = self.statuses.get(k)
            if old is None:
                assert st_new in INITIAL[prefix] or prefix == keys.P_RECEIVABLE, f"{k!r} born {st_new}"
            else:
                assert old == st_new or reachable(GRAPHS[prefix], old, st_new), f"{k!r}: {old} -> {st_new}"
        assert set(self.statuses) <= set(now), "an object disappeared"
        self.statuses = now

    @invariant()
    def campaign_escrow_equals_contributions(self) -> None:
        contribs: Counter[bytes] = Counter()
        people: Counter[bytes] = Counter()
        for k, v in self._scan(keys.P_CONTRIB):
            cid = k[len(keys.P_CONTRIB):len(keys.P_CONTRIB) + 32]
            contribs[cid] += v
            people[cid] += 1
        for _, c in self._scan(keys.P_CAMPAIGN):
            assert c["raised"] == contribs[c["id"]] and c["contributors"] == people[c["id"]]
            assert c["raised"] <= c["target"]
            if c["status"] == "funded":
                assert c["raised"] >= c["minimum"]

    @invariant()
    def loans_collateral_and_limits_are_consistent(self) -> None:
        open_principal: dict[bytes, Counter[str]] = {}
        loans = {}
        for _, ln in self._scan(keys.P_LOAN):
            loans[ln["id"]] = ln
            assert min(ln["principal"], ln["interest"], ln["penalty"]) >= 0
            assert ln["principal"] <= ln["amount"]
            if ln["status"] == "repaid":
                assert ln["principal"] + ln["interest"] + ln["penalty"] == 0
            if ln["status"] in ("active", "overdue"):
                open_principal.setdefault(ln["borrower"] + ln["lender"], Counter())[ln["asset"]] += ln["principal"]
        for _, co in self._scan(keys.P_COLLATERAL):
            assert (co["status"] == "pledged") == bool(co["pledged_to"])
        for k, exp in self._scan(keys.P_EXPOSURE):
            assert exp == dict(open_principal.get(k[len(keys.P_EXPOSURE):], {})), "x/ is not the open principal"
        assert len(self._scan(keys.P_EXPOSURE)) == len(open_principal)
        for k, lim in self._scan(keys.P_LIMIT):
            # a limit's used is the open principal it covers, however old the loans are (rule 3)
            assert lim["used"] == open_principal.get(k[len(keys.P_LIMIT):], Counter())[lim["asset"]], lim

    @invariant()
    def a_pledge_made_by_a_loan_secures_that_open_loan_of_its_pledgee(self) -> None:
        loans = {ln["id"]: ln for _, ln in self._scan(keys.P_LOAN)}
        for prefix in (keys.P_RECEIVABLE, keys.P_COLLATERAL):
            for k, rec in self._scan(prefix):
                if rec["loan"]:
                    ln = loans[rec["loan"]]
                    assert rec["pledged_to"] == ln["lender"] and ln["status"] in ("applied", "active", "overdue")
                    assert k[len(prefix):] in ln["collateral"]
                    assert prefix == keys.P_COLLATERAL or rec["asset"] == ln["asset"], "its payments go to the loan"

    @invariant()
    def an_open_discount_offer_never_exceeds_the_outstanding_amount(self) -> None:
        for _, r in self._scan(keys.P_RECEIVABLE):
            if r["offer"] is not None:
                assert 0 < r["offer"]["price"] <= r["outstanding"], r

    @invariant()
    def indexes_rebuilt_from_the_last_blocks_results_equal_what_it_wrote(self) -> None:
        res = self.h.last_result
        if res is None:
            return
        assert results_root(res.receipt_bytes, res.events_bytes) == res.results_root
        assert last_results_roots(self.h.state)[1] == res.results_root  # the newer of the last two
        wrote = {k: v for k, v in self.h.last_changes.items() if k.startswith(keys.INDEX_PREFIXES)}
        rebuilt = dict(index_entries(self.h.height, res.receipt_bytes, res.events_bytes))
        assert rebuilt == wrote

    def teardown(self) -> None:
        if not hasattr(self, "h"):
            return
        again = replay(self.h.spec, self.h.blocks)
        assert state_digest(again) == state_digest(self.h.state), "replaying the same blocks gave another state"
        if len(self.h.blocks) % 8 == 0:  # the Merkle root costs ~15 ms: check it on a sample of runs
            assert state_root(again) == state_root(self.h.state)


LedgerMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=not RANDOM, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
TestLedgerStateMachineKeepsItsInvariants = LedgerMachine.TestCase
