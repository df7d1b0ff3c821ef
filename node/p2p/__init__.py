"""Authenticated, encrypted P2P links between smeledger nodes, with batched tx gossip.

Construct `P2P(key, chain_id, validators=..., observers=..., dial=[PeerAddr(...)], settings=P2PSettings())`,
`TxGossip(p2p, mempool, settings)`, then `await p2p.start(); await gossip.start()`; stop in reverse order.
"""

from node.p2p.errors import ChannelError, HandshakeError, P2PError
from node.p2p.gossip import TxGossip
from node.p2p.metrics import MempoolCollector, MempoolStats, P2PCollector, P2PStats
from node.p2p.node import P2P, Handler
from node.p2p.types import P2PSettings, PeerAddr, PeerInfo

__all__ = ["P2P", "ChannelError", "Handler", "HandshakeError", "MempoolCollector", "MempoolStats",
           "P2PCollector", "P2PError", "P2PSettings", "P2PStats", "PeerAddr", "PeerInfo", "TxGossip"]
