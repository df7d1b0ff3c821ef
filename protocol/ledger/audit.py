"""Money conservation over a whole state: where every asset's supply is held, and what does not add up.

Per asset, `issued - redeemed` (its supply) must equal what is held: the sum of positive balances, plus
the escrow of open crowdfunding campaigns, plus the unsold base amount of open FX quotes (both taken from
their owners' balances when they were made). `supply_problems` lists every way a state breaks that; an
empty list is a state whose money adds up. Used by the chaos verdict on a state replayed from the chain,
and usable by any test that holds a `StateReader`.

Rule: read-only, one pass per prefix, ints only.
"""

from __future__ import annotations

from collections import Counter

from protocol.ledger import keys
from protocol.ledger.store import unpack
from protocol.state import StateReader


def _scan(state: StateReader, prefix: bytes) -> list[tuple[bytes, object]]:
    return [(k, unpack(v)) for k, v in state.iter_range(*keys.prefix_range(prefix))]


def holdings(state: StateReader) -> tuple[dict[str, int], Counter[str], list[str]]:
    """(supply per asset, amount held per asset, problems with single records such as a balance <= 0)."""
    problems: list[str] = []
    held: Counter[str] = Counter()
    for k, v in _scan(state, keys.P_BALANCE):
        asset = k[len(keys.P_BALANCE) + 32:].decode("ascii", "replace")
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            problems.append(f"balance {k[len(keys.P_BALANCE):len(keys.P_BALANCE) + 32].hex()} {asset} = {v!r}")
            continue
        held[asset] += v
    for _k, c in _scan(state, keys.P_CAMPAIGN):
        if isinstance(c, dict) and c.get("status") == "open":
            held[str(c["asset"])] += int(c["raised"])
    for _k, q in _scan(state, keys.P_FX):
        if isinstance(q, dict) and q.get("status") == "open":
            held[str(q["base"])] += int(q["remaining"])
    supply: dict[str, int] = {}
    for k, a in _scan(state, keys.P_ASSET):
        if isinstance(a, dict):
            supply[k[len(keys.P_ASSET):].decode("ascii", "replace")] = int(a["issued"]) - int(a["redeemed"])
    return supply, held, problems


def supply_problems(state: StateReader) -> list[str]:
    """Every asset whose supply differs from what is held, every bad balance, every unknown asset held."""
    supply, held, problems = holdings(state)
    for asset in sorted(set(supply) | set(held)):
        if asset not in supply:
            problems.append(f"{asset}: {held[asset]} held of an asset the ledger does not know")
        elif supply[asset] != held[asset]:
            problems.append(f"{asset}: supply {supply[asset]} but {held[asset]} held")
    return problems
