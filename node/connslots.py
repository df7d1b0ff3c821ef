"""Connection slots: how many connections one client address, and all of them together, may hold.

Both listeners of a node use it: the API for its open connections, P2P for its inbound handshakes still
pending. A newcomer gets a `Slot` or is refused (the caller closes it at once, which is a clean refusal,
never an error anywhere else). At a cap the table first makes room by evicting the connection that has
been *idle* the longest: from the newcomer's own address when that address is at its cap, else from the
address holding the most slots. What is idle is the caller's call: an API connection waiting for a
request head, a handshake whose peer has not yet named a known key. So a flood of silent strangers, even
from the address a validator or a health probe shares with them, only ever pushes out the stalest
stranger: a client that speaks at once becomes busy within a round trip and is never the longest idle.
A new connection counts as waiting only from `FRESH_S` after it opened (or from its first bytes, when
the caller says so with `heard`): the event loop accepts connections in bursts of up to its backlog
before it reads any of them, and a client in such a burst must get the chance to speak. Only when
every slot of an address (or of all of them) is busy or fresh is a newcomer refused.

Addresses are grouped: an IPv4 address (also IPv4-mapped IPv6) is its own group, an IPv6 address counts
by its /64 (one host usually holds a whole /64). Rule: this module is plain data and arithmetic, no I/O
and no clock: callers pass `now` and get back which slot to close.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

FRESH_S = 0.25  # a new connection that has sent nothing is not evictable for this long


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
    """One admitted connection. `idle_since` is when it began waiting for its peer (None: busy; in the
    future: fresh, see `FRESH_S`)."""

    group: str
    close: Callable[[], None]
    idle_since: float | None
    released: bool = False

    def busy(self) -> None:
        self.idle_since = None

    def idle(self, now: float) -> None:
        self.idle_since = now

    def heard(self, now: float) -> None:
        """The peer sent its first bytes: a fresh connection counts as waiting from now."""
        if self.idle_since is not None and self.idle_since > now:
            self.idle_since = now


@dataclass
class SlotStats:
    admitted: int = 0
    evicted: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # reason: per_address | total


class ConnectionSlots:
    def __init__(self, *, total: int, per_address: int) -> None:
        if total < 1 or per_address < 1:
            raise ValueError("connection caps must be at least 1")
        self.total = total
        self.per_address = per_address
        self.stats = SlotStats()
        self._groups: dict[str, list[Slot]] = {}  # each list in admission order
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def held_by(self, group: str) -> int:
        return len(self._groups.get(group, ()))

    def admit(self, group: str, now: float, close: Callable[[], None]) -> Slot | str:
        """A slot for a new connection from `group`, evicting the longest idle connection if a cap requires
        it; else the cap that refuses the newcomer: "per_address" or "total". A new slot starts idle (it
        waits for its peer, fresh for `FRESH_S`); its `close` is called if it is ever evicted."""
        for cap, full, make_room in (("per_address", self.held_by(group) >= self.per_address,
                                      lambda: self._evict_from(group, now)),
                                     ("total", self._count >= self.total, lambda: self._evict_busiest(now))):
            if full and not make_room():
                self.stats.refused[cap] += 1
                return cap
        slot = Slot(group, close, now + FRESH_S)
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

    def _evict_from(self, group: str, now: float) -> bool:
        idle = [s for s in self._groups.get(group, ()) if s.idle_since is not None and s.idle_since <= now]
        if not idle:
            return False
        victim = min(idle, key=lambda s: s.idle_since or 0.0)
        self.release(victim)
        self.stats.evicted += 1
        victim.close()
        return True

    def _evict_busiest(self, now: float) -> bool:
        return any(self._evict_from(g, now) for g in sorted(self._groups, key=lambda g: (-len(self._groups[g]), g)))
