"""Transaction kinds, one module per family; each kind is a `KindSpec` with validate then apply.

Rule: validate reads state and raises `LedgerError`; apply writes state and emits events. Both run
inside the tx's savepoint, so any error in either reverts the whole tx.
"""
