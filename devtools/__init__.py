"""Developer tools that run outside a node: the local testnet (`testnet`, `devnet`), the load generator
(`load`, `load_book`), the benchmarks (`bench`, `p2p_bench`, `storage_bench`) and the seeded chaos run
(`chaos`).

Rule: tools drive nodes as separate processes or through the SDK; nothing in a running node imports them.
"""
