"""Consensus parameters: every limit and timer of the replica, with its default, in one frozen value.

Rule: the replica reads limits and durations only from here; durations are integer milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_VALIDATORS = 1024
VC_HISTORY = 8  # own VIEW-CHANGEs of this many most recent views are kept (and re-sent to restarted peers)
SUSPECT_KEEP_HEIGHTS = 8  # SUSPECTs of this many heights below ours are kept: they count once a VIEW-CHANGE shows
#                           that a validator left on a quorum that raced a commit (docs/consensus.md)


@dataclass(frozen=True, slots=True)
class ConsensusParams:
    max_block_txs: int = 2_000           # a block holds at most this many txs...
    max_block_bytes: int = 4 * 1024 * 1024  # ...and this many tx bytes
    # the batch interval: a primary proposes a block that is not full at most once per this many ms, and
    # else as soon as the height is open and work is ready (the block takes what became ready during the
    # previous round: adaptive batching); 0 = no interval
    batch_timeout_ms: int = 0
    view_timeout_ms: int = 2_000         # base view timeout: work pending without a commit
    view_timeout_cap_ms: int = 60_000    # the exponential back-off stops doubling here
    retransmit_ms: int = 1_000           # own messages of an unfinished round are re-sent this often
    checkpoint_interval: int = 100       # K: validators sign a CHECKPOINT every K heights
    window: int = 1                      # heights agreed on at once (execution of the last one overlaps it)
    future_view_window: int = 64         # messages for views beyond view + this are dropped
    future_height_window: int = 200      # messages for heights beyond committed + this are dropped
    per_sender_buffer: int = 64          # buffered (not yet usable) messages kept per validator
    max_evidence: int = 64               # conflicting-signature pairs kept; the oldest are dropped
    sig_cache_size: int = 4_096          # verified (signer, signed bytes, signature) triples remembered
    help_interval_ms: int = 500          # at most one catch-up proof per lagging validator this often

    def __post_init__(self) -> None:
        for name in ("max_block_txs", "max_block_bytes", "view_timeout_ms",
                     "retransmit_ms", "checkpoint_interval", "future_view_window",
                     "future_height_window", "per_sender_buffer", "max_evidence", "sig_cache_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"consensus parameter {name} must be >= 1")
        for name in ("batch_timeout_ms", "help_interval_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"consensus parameter {name} must be >= 0")
        if self.view_timeout_cap_ms < self.view_timeout_ms:
            raise ValueError("view_timeout_cap_ms must be >= view_timeout_ms")
        if self.window != 1:
            raise ValueError("only window = 1 (one height in flight) is implemented")
        if self.future_height_window < self.checkpoint_interval:
            raise ValueError("future_height_window must cover at least one checkpoint interval")

    def view_timeout(self, failures: int) -> int:
        """Timeout after `failures` consecutive view changes without a commit: base * 2**k, capped."""
        t = self.view_timeout_ms
        for _ in range(min(failures, 32)):
            t *= 2
            if t >= self.view_timeout_cap_ms:
                return self.view_timeout_cap_ms
        return min(t, self.view_timeout_cap_ms)


def max_faulty(n: int) -> int:
    """f: the most byzantine validators n tolerates (n >= 3f + 1)."""
    return (n - 1) // 3


def quorum(n: int) -> int:
    """n - f signers: any two quorums share at least f + 1 validators, so at least one honest one."""
    return n - max_faulty(n)
