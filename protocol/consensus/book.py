"""Bounded bookkeeping for the replica: the vote book of the current height, the per-sender buffer of
messages that are not usable yet, and the verified-signature cache.

Rule: every collection here has a hard bound taken from `ConsensusParams`; hitting it drops the new
item and reports so. Iteration order is insertion order of already-deterministic inputs or sorted keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.block import Block
from protocol.consensus.messages import Commit, Prepare, PrePrepare, SignedMessage

VoteMsg = PrePrepare | Prepare | Commit
ADDED, DUPLICATE, CONFLICT, FULL = "added", "duplicate", "conflict", "full"


class SigCache:
    """Remembers verification results of (signer, domain + signed bytes, signature), FIFO-bounded."""

    __slots__ = ("_d", "_max")

    def __init__(self, max_size: int) -> None:
        self._d: dict[tuple[int, bytes, bytes], bool] = {}
        self._max = max_size

    def get(self, key: tuple[int, bytes, bytes]) -> bool | None:
        return self._d.get(key)

    def put(self, key: tuple[int, bytes, bytes], ok: bool) -> None:
        if len(self._d) >= self._max:
            del self._d[next(iter(self._d))]
        self._d[key] = ok

    def __len__(self) -> int:
        return len(self._d)


@dataclass(slots=True)
class VoteBook:
    """PRE-PREPAREs, PREPAREs and COMMITs of one height, by (kind, view, signer)."""

    per_sender_limit: int
    votes: dict[tuple[str, int, int], VoteMsg] = field(default_factory=dict)
    tallies: dict[tuple[str, int, bytes], dict[int, bytes]] = field(default_factory=dict)
    per_sender: dict[int, int] = field(default_factory=dict)

    def lookup(self, msg: VoteMsg) -> tuple[str, VoteMsg | None]:
        """DUPLICATE / CONFLICT (with the earlier message) / ADDED (not yet present) without storing."""
        old = self.votes.get((msg.T, msg.view, msg.index))
        if old is None:
            return ADDED, None
        if old.block_hash == msg.block_hash:
            return DUPLICATE, old
        return CONFLICT, old

    def add(self, msg: VoteMsg) -> str:
        """Store a vote; a sender at its limit loses its lowest-view vote if the new one is newer."""
        status, _ = self.lookup(msg)
        if status != ADDED:
            return status
        if self.per_sender.get(msg.index, 0) >= self.per_sender_limit:
            own = sorted((v, t) for (t, v, i) in self.votes if i == msg.index)
            if not own or own[0][0] >= msg.view:
                return FULL
            self._remove(own[0][1], own[0][0], msg.index)
        self.per_sender[msg.index] = self.per_sender.get(msg.index, 0) + 1
        self.votes[(msg.T, msg.view, msg.index)] = msg
        self.tallies.setdefault((msg.T, msg.view, msg.block_hash), {})[msg.index] = msg.sig
        return ADDED

    def _remove(self, t: str, view: int, index: int) -> None:
        old = self.votes.pop((t, view, index))
        tally = self.tallies[(t, view, old.block_hash)]
        del tally[index]
        if not tally:
            del self.tallies[(t, view, old.block_hash)]
        self.per_sender[index] -= 1

    def drop_below(self, view: int) -> None:
        """Forget PRE-PREPAREs and PREPAREs of views below `view` (COMMITs of any view stay useful)."""
        for t, v, i in sorted(self.votes):
            if v < view and t != Commit.T:
                self._remove(t, v, i)

    def hashes(self) -> set[bytes]:
        return {m.block_hash for m in self.votes.values()}

    def tally(self, t: str, view: int, block_hash: bytes) -> dict[int, bytes]:
        return self.tallies.get((t, view, block_hash), {})

    def quorums(self, t: str, q: int) -> list[tuple[int, bytes]]:
        """(view, hash) pairs of kind `t` with at least q signers, sorted."""
        return sorted((v, h) for (k, v, h), sigs in self.tallies.items() if k == t and len(sigs) >= q)

    def clear(self) -> None:
        self.votes.clear()
        self.tallies.clear()
        self.per_sender.clear()

    def __len__(self) -> int:
        return len(self.votes)


@dataclass(slots=True)
class Buffer:
    """Verified messages for a later height or view, at most `limit` per signer, replayed in order."""

    limit: int
    by_sender: dict[int, list[SignedMessage]] = field(default_factory=dict)

    def add(self, msg: SignedMessage) -> str:
        items = self.by_sender.setdefault(msg.index, [])
        for m in items:
            if m.sig == msg.sig:
                return DUPLICATE
        if len(items) >= self.limit:
            return FULL
        items.append(msg)
        return ADDED

    def find_block(self, block_hash: bytes) -> Block | None:
        for idx in sorted(self.by_sender):
            for m in self.by_sender[idx]:
                if isinstance(m, PrePrepare) and m.block.hash == block_hash:
                    return m.block
        return None

    def contains(self, msg: SignedMessage) -> bool:
        return any(m.sig == msg.sig for m in self.by_sender.get(msg.index, ()))

    def drain(self) -> list[SignedMessage]:
        out = [m for idx in sorted(self.by_sender) for m in self.by_sender[idx]]
        self.by_sender.clear()
        return out

    def commits_for(self, height: int) -> dict[tuple[int, bytes], dict[int, bytes]]:
        """COMMIT signatures in the buffer for `height`, grouped by (view, hash)."""
        out: dict[tuple[int, bytes], dict[int, bytes]] = {}
        for idx in sorted(self.by_sender):
            for m in self.by_sender[idx]:
                if isinstance(m, Commit) and m.height == height:
                    out.setdefault((m.view, m.block_hash), {})[idx] = m.sig
        return out

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_sender.values())
