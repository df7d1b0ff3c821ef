"""Connection slots: how many connections one client address, and all of them together, may hold.

Both listeners of a node use it: the API for its open connections, P2P for its inbound handshakes still
pending. A newcomer gets a `Slot` or is refused (the caller closes it at once, which is a clean refusal,
never an error anywhere else). At a cap the table first tries to make room by evicting the connection
that has been *evictable* the longest, for at least `grace_s`: from the newcomer's own address when that
address is at its cap, else from the address holding the most slots. What is evictable is the caller's
call (an API connection waiting for a request head; a handshake whose peer has not yet named a known
key), so a flood of idle strangers, even from the address a validator or a health probe shares with
them, cannot keep a client that speaks at once out: it waits at most for one stranger to age past
`grace_s`. A stranger's own fresh connection is safe for `grace_s`, so two clients on one address at
the cap do not evict each other's connections before either could send a byte.

Addresses are grouped: an IPv4 address (also IPv4-mapped IPv6) is its own group, an IPv6 address counts
by its /64 (one host usually holds a whole /64). Rule: this module is plain data and arithmetic, no I/O
and no clock: callers pass `now` and get back which slot to close.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

GRACE_S = 1.0  # a connection is never evicted in its first second, nor a request's first second of idleness


def address_group(peername: object) -> str:
    """The group a socket's peer address counts in: '203.0.113.7', '2001:db8:1:2::/64', or 'unix'."""
    host = peername[0] if isinstance(peername, tuple) and peername else peername
    if not isinstance(host, str):
        return "unix"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(eq=False, slots=True)
class Slot:
    """One admitted connection. `idle_since` is when it became evictable (None: not evictable now)."""

    group: str
    close: Callable[[], None]
    idle_since: float | None
    released: bool = False

    def busy(self) -> None:
        self.idle_since = None

    def idle(self, now: float) -> None:
        self.idle_since = now


@dataclass
class SlotStats:
    admitted: int = 0
    evicted: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # reason: per_address | total


class ConnectionSlots:
    def __init__(self, *, total: int, per_address: int, grace_s: float = GRACE_S) -> None:
        if total < 1 or per_address < 1:
            raise ValueError("connection caps must be at least 1")
        self.total = total
        self.per_address = per_address
        self.grace_s = grace_s
        self.stats = SlotStats()
        self._groups: dict[str, list[Slot]] = {}  # each list in admission order
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def held_by(self, group: str) -> int:
        return len(self._groups.get(group, ()))

    def admit(self, group: str, now: float, close: Callable[[], None], *, idle: bool = True) -> Slot | None:
        """A slot for a new connection from `group`, evicting one older evictable connection if a cap
        requires it; None when the newcomer must be refused. A new slot starts evictable (idle) unless
        `idle` is False; its `close` is called if it is ever evicted."""
        if self.held_by(group) >= self.per_address and not self._evict_from(group, now):
            self.stats.refused["per_address"] += 1
            return None
        if self._count >= self.total and not self._evict_busiest(now):
            self.stats.refused["total"] += 1
            return None
        slot = Slot(group, close, now if idle else None)
        self._groups.setdefault(group, []).append(slot)
        self._count += 1
        self.stats.admitted += 1
        return slot

    def release(self, slot: Slot) -> None:
        """Give a slot back when its connection ends (again after an eviction: a no-op)."""
        if slot.released:
            return
        slot.released = True
        slots = self._groups[slot.group]
        slots.remove(slot)
        if not slots:
            del self._groups[slot.group]
        self._count -= 1

    def _oldest_evictable(self, group: str, now: float) -> Slot | None:
        best: Slot | None = None
        for s in self._groups.get(group, ()):
            if s.idle_since is not None and now - s.idle_since >= self.grace_s and (
                    best is None or best.idle_since is None or s.idle_since < best.idle_since):
                best = s
        return best

    def _evict_from(self, group: str, now: float) -> bool:
        victim = self._oldest_evictable(group, now)
        if victim is None:
            return False
        self.release(victim)
        self.stats.evicted += 1
        victim.close()
        return True

    def _evict_busiest(self, now: float) -> bool:
        for group in sorted(self._groups, key=lambda g: (-len(self._groups[g]), g)):
            if self._evict_from(group, now):
                return True
        return False
