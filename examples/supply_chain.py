"""Supply-chain finance on a running smeledger testnet, end to end, printing every receipt.

    .venv/bin/python examples/supply_chain.py --node http://127.0.0.1:8701 --wallets .testnet/wallets

Storyline: SME B (the core enterprise) owes SME A for goods. SME A issues a 1,000,000.00 receivable on
SME B due in 90 days; SME B accepts; SME A splits 300,000.00 off to its supplier and discounts the rest to
Bank A. SME A borrows from Bank B against registered inventory at 650 bps, receives the money
automatically and repays with interest; a second loan defaults and its collateral moves to Bank B.
SME B runs a crowdfunding campaign that two investors fill. At maturity SME B settles the receivable to
its holders. Credit scores and risk events change along the way, and the regulator traces a payment.

Assumptions (testnet only):
- wallets are DESIGN section 5 keystores named banka, bankb, smea, smeb, supplier, investor1, investor2,
  regulator in --wallets, with the password in `<wallets>/PASSWORD` (what `make testnet` writes);
- block time moves forward through the operator endpoint `POST /admin/time-offset {"offset_ms": N}`
  (bearer token from `<home>/admin.token`), which this script calls on every node listed in
  `<wallets>/../nodes.json` ([{"name", "admin_url", "home"}, ...]); the ledger itself never reads a
  clock, it only sees block timestamps. After each jump the script sends a small transfer so that a
  block is cut at the new time and the time-driven transitions run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client.client import Client
from client.errors import ClientError, TxRejected
from client.wallet import Wallet, read_password
from protocol.api import to_builtins

DAY_MS = 24 * 3600 * 1000
CNY = "CNY.BANKA"  # Bank A's deposit token: the receivable, the campaign and the demo's time-ticks
LOAN = "CNY.BANKB"  # Bank B lends its own deposit token
NAMES = ("banka", "bankb", "smea", "smeb", "supplier", "investor1", "investor2", "regulator")
SHOWN = ("amount", "face", "price", "asset", "status", "outstanding", "raised", "rate_bps", "owed", "new",
         "principal_paid", "interest_paid", "penalty_paid", "utilisation_bps", "reason", "object")


def money(minor: int) -> str:
    return f"{minor // 100:,}.{minor % 100:02d}"


class Demo:
    def __init__(self, node: str, wallets_dir: Path, nodes_file: Path, timeout: float) -> None:
        self.api = Client(node, timeout=timeout)
        password = read_password(wallets_dir / "PASSWORD")
        self.w: dict[str, Wallet] = {n: Wallet.load(wallets_dir / f"{n}.json", password) for n in NAMES}
        self.names = {w.account: n for n, w in self.w.items()}
        self.chain = self.api.status().chain_id
        self.admins = self._admins(nodes_file, timeout)
        self.offset = max((a.time_offset().offset_ms for a in self.admins), default=0)
        self.timeout = timeout
        self.failures = 0

    # ---- plumbing --------------------------------------------------------------------------------

    @staticmethod
    def _admins(nodes_file: Path, timeout: float) -> list[Client]:
        rows = json.loads(nodes_file.read_text())
        out = []
        for row in rows:
            home = Path(row["home"])
            if not home.is_absolute() and not home.exists():
                home = nodes_file.parent / home
            token = (home / "admin.token").read_text().strip()
            out.append(Client(row["admin_url"], timeout=timeout, token=token))
        return out

    def who(self, hex_id: Any) -> str:
        return self.names.get(hex_id, str(hex_id)[:12]) if isinstance(hex_id, str) else str(hex_id)

    def id(self, name: str) -> bytes:
        return self.w[name].public_key

    def send(self, name: str, kind: str, expect_ok: bool = True, **fields: Any) -> dict[str, Any]:
        """Sign, submit, wait for the commit, print the receipt; returns it."""
        try:
            sub = self.api.send_kind(self.w[name], kind, fields)  # the SDK tracks each wallet's nonce
        except TxRejected as exc:
            raise SystemExit(f"{kind} by {name} was not admitted: {exc.code}: {exc.message}") from None
        doc = sub.follow(timeout=self.timeout)
        receipt: dict[str, Any] = to_builtins(doc.receipt) if doc.receipt else {}
        self.show_receipt(f"{kind} by {name}", doc.height, receipt)
        if expect_ok and receipt.get("status") != "ok":
            self.failures += 1
            print(f"   !! expected ok, got {receipt.get('code')}: {receipt.get('message')}")
        receipt["hash"] = sub.hash
        return receipt

    def show_receipt(self, title: str, height: Any, receipt: dict[str, Any]) -> None:
        mark = "ok " if receipt.get("status") == "ok" else "ERR"
        code = "" if receipt.get("status") == "ok" else f" [{receipt.get('code')}]"
        print(f"[{mark}] h={height} {title}{code}")
        for ev in receipt.get("events", []):
            self.show_event(ev)

    def show_event(self, ev: dict[str, Any], indent: str = "      ") -> None:
        d = ev.get("data", {})
        parts = []
        for k in ("from", "to", "creditor", "debtor", "holder", "seller", "buyer", "owner", "verifier", "pledgee",
                  "borrower", "lender", "account", "investor"):
            if k in d:
                parts.append(f"{k}={self.who(d[k])}")
        for k in SHOWN:
            if k in d:
                v = d[k]
                parts.append(f"{k}={money(v)}" if k in ("amount", "face", "price", "outstanding", "raised", "owed",
                                                        "principal_paid", "interest_paid", "penalty_paid")
                             and isinstance(v, int) else f"{k}={v}")
        if "holders" in d and "amounts" in d:
            parts.append("parts=" + ",".join(f"{self.who(x)}:{money(a)}" for x, a in zip(d["holders"], d["amounts"],
                                                                                        strict=False)))
        print(f"{indent}{ev.get('kind')}: " + " ".join(parts))

    def party(self, edge: dict[str, Any], side: str) -> str:
        """A trace edge end: a participant name, or the escrow / mint the money came from or went to."""
        if edge.get(side):
            return self.who(edge[side])
        return f"escrow {edge['escrow'][:12]}" if edge.get("escrow") else ("mint" if side == "from" else "burn")

    def chain_time(self) -> int:
        return self.api.block(self.api.status().height).time

    def jump(self, ms: int, why: str) -> None:
        """Move block time forward on every node, then cut a block so time-driven transitions run."""
        self.offset += ms
        for admin in self.admins:
            admin.set_time_offset(self.offset)
        print(f"\n>>> time +{ms // DAY_MS} days ({why}); offset now {self.offset} ms")
        start = self.api.status().height
        self.send("banka", "transfer", to=self.id("bankb"), asset=CNY, amount=1)
        for ev in self.api.events(from_height=start + 1, limit=1000).events:
            if ev.tx is None:
                self.show_event(to_builtins(ev), indent="   [time] ")

    def query(self, thing: str, ident: str) -> dict[str, Any]:
        return self.api.query(thing, ident)

    # ---- the story -------------------------------------------------------------------------------

    def run(self) -> int:
        print(f"chain {self.chain}, {len(self.admins)} nodes, start offset {self.offset} ms")
        t0 = self.chain_time()
        due = t0 + 90 * DAY_MS

        print("\n== 1. SME A issues a 1,000,000.00 receivable on SME B, due in 90 days")
        r = self.send("smea", "receivable-issue", debtor=self.id("smeb"), face=100_000_000, asset=CNY, due=due,
                      doc=bytes.fromhex("11" * 32))
        rid = r["hash"]
        self.send("smeb", "receivable-accept", receivable=bytes.fromhex(rid))

        print("\n== 2. SME A splits 300,000.00 to its supplier and discounts the rest to Bank A")
        r = self.send("smea", "receivable-split", receivable=bytes.fromhex(rid), amount=30_000_000,
                      to=self.id("supplier"))
        split = next(e for e in r["events"] if e["kind"] == "receivable_split")["data"]["children"]
        supplier_part, rest = bytes.fromhex(split[0]), bytes.fromhex(split[1])
        self.send("smea", "receivable-discount", receivable=rest, buyer=self.id("banka"), price=68_600_000)
        discount = self.send("banka", "receivable-discount", receivable=rest, buyer=self.id("banka"),
                             price=68_600_000)

        print("\n== 3. Bank B verifies SME A's inventory, sets a limit, and lends 200,000.00 at 650 bps")
        inv = self.send("bankb", "collateral-register", owner=self.id("smea"), category="inventory",
                        valuation=50_000_000, asset=LOAN, doc=bytes.fromhex("22" * 32))["hash"]
        self.send("bankb", "credit-limit", borrower=self.id("smea"), asset=LOAN, limit=24_000_000)
        loan1 = self.send("smea", "loan-apply", lender=self.id("bankb"), asset=LOAN, amount=20_000_000,
                          term_ms=60 * DAY_MS, collateral=[bytes.fromhex(inv)])["hash"]
        self.send("bankb", "loan-approve", loan=bytes.fromhex(loan1), rate_bps=650, penalty_bps=1_000)
        self.jump(30 * DAY_MS, "SME A trades for a month")
        print("   loan owed now:", money(self.query("loans", loan1)["owed_now"]))
        self.send("smea", "loan-repay", loan=bytes.fromhex(loan1), amount=10**12)

        print("\n== 4. A second loan against a warehouse receipt is never repaid")
        wr = self.send("bankb", "collateral-register", owner=self.id("smea"), category="warehouse_receipt",
                       valuation=15_000_000, asset=LOAN, doc=bytes.fromhex("33" * 32))["hash"]
        loan2 = self.send("smea", "loan-apply", lender=self.id("bankb"), asset=LOAN, amount=10_000_000,
                          term_ms=20 * DAY_MS, collateral=[bytes.fromhex(wr)])["hash"]
        self.send("bankb", "loan-approve", loan=bytes.fromhex(loan2), rate_bps=900, penalty_bps=2_000)
        self.jump(21 * DAY_MS, "the second loan falls due")
        self.jump(8 * DAY_MS, "the grace period ends")
        c = self.query("collateral", wr)
        loan = self.query("loans", loan2)
        print(f"   loan 2 status: {loan['status']}; warehouse receipt now {c['status']}, "
              f"owned by {self.who(c['owner'])}")

        print("\n== 5. SME B crowdfunds 50,000.00; two investors fill it")
        camp = self.send("smeb", "campaign-create", asset=CNY, target=5_000_000, minimum=3_000_000,
                         deadline=self.chain_time() + 10 * DAY_MS)["hash"]
        self.send("investor1", "campaign-contribute", campaign=bytes.fromhex(camp), amount=3_000_000)
        self.send("investor2", "campaign-contribute", campaign=bytes.fromhex(camp), amount=2_000_000)
        print("   campaign:", self.query("campaigns", camp)["status"])

        print("\n== 6. At maturity SME B settles the receivable to its holders")
        now = self.chain_time()
        if due - DAY_MS // 2 > now:
            self.jump(due - DAY_MS // 2 - now, "maturity approaches")
        self.send("smeb", "receivable-settle", receivable=supplier_part, amount=30_000_000)
        settle = self.send("smeb", "receivable-settle", receivable=rest, amount=70_000_000)

        print("\n== 7. Credit scores")
        for n in ("smea", "smeb", "supplier"):
            cr = self.query("credit", self.w[n].account)
            print(f"   {n}: score {cr['score']} history {cr['history']}")

        print("\n== 8. Risk events")
        for kind in ("risk_limit_utilisation", "risk_due_soon", "risk_overdue", "risk_default"):
            for ev in self.api.events(kind=kind, limit=50).events:
                self.show_event(to_builtins(ev), indent="   ")

        print("\n== 9. The regulator traces Bank A's settlement payment")
        t = self.query("trace", settle["hash"])
        for f in t["flows"]:
            print(f"   {self.party(f, 'from')} -> {self.party(f, 'to')} {money(f['amount'])} {f['asset']} "
                  f"({f['reason']})")
            for u in f.get("upstream", []):
                print(f"      came from: {self.party(u, 'from')} -> {self.party(u, 'to')} {money(u['amount'])} "
                      f"({u['reason']})")
            for dn in f.get("downstream", []):
                print(f"      went on:   {self.party(dn, 'from')} -> {self.party(dn, 'to')} {money(dn['amount'])} "
                      f"({dn['reason']})")
        print(f"   (Bank A bought its part for {money(68_600_000)} in tx {discount['hash'][:16]}...)")

        return self.check_roots()

    def check_roots(self) -> int:
        """All nodes must report the same state root at the same height."""
        deadline = time.monotonic() + 30
        while True:
            seen = {}
            for admin in self.admins:
                st = admin.status()
                seen[st.name or admin.url] = (st.height, st.state_root)
            heights = {h for h, _ in seen.values()}
            if len(heights) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print("\n== state roots")
        for name, (h, root) in sorted(seen.items()):
            print(f"   {name}: height {h} root {root}")
        same = len({v for v in seen.values()}) == 1
        print("all nodes agree" if same else "NODES DISAGREE")
        if self.failures:
            print(f"{self.failures} receipt(s) were not ok")
        return 0 if same and not self.failures else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--node", default="http://127.0.0.1:8701")
    ap.add_argument("--wallets", default=".testnet/wallets", type=Path)
    ap.add_argument("--nodes", type=Path, help="nodes.json (default: <wallets>/../nodes.json)")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    nodes = args.nodes or args.wallets.parent / "nodes.json"
    try:
        return Demo(args.node, args.wallets, nodes, args.timeout).run()
    except ClientError as exc:
        print(f"error: {exc} ({exc.code})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
