"""smeledger protocol layer: pure, deterministic logic.

Nothing in this package performs I/O, reads the clock or draws randomness: time and randomness come in
as arguments. It must never import from `storage` or `node`.
"""
