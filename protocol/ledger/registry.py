"""The kinds registry: CLI kind name -> `KindSpec`, assembled from the family modules.

Rule: this is the only place that lists the families; the role matrix is derived from it.
"""

from __future__ import annotations

from protocol.ledger.kinds import (
    campaigns,
    collateral,
    credit,
    fx,
    identity,
    loans,
    money,
    receivables,
)
from protocol.ledger.spec import KindSpec

FAMILIES = (identity, money, fx, receivables, collateral, loans, campaigns, credit)

KINDS: dict[str, KindSpec] = {k.name: k for fam in FAMILIES for k in fam.KINDS}

ROLE_MATRIX: dict[str, frozenset[str]] = {name: spec.roles for name, spec in KINDS.items()}
"""kind -> roles allowed to send it; an empty set means any registered participant."""
