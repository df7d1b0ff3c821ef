"""Connection slots (node/connslots.py) and the descriptor budget (node/fdbudget.py) at their edges."""

from __future__ import annotations

import pytest

from node import fdbudget
from node.connslots import FRESH_S, ConnectionSlots, Slot, address_group
from node.errors import ConfigError


class Closed:
    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, name: str) -> object:
        return lambda: self.names.append(name)


def test_the_per_address_cap_admits_up_to_the_cap_and_refuses_one_more_while_all_are_busy() -> None:
    slots, closed = ConnectionSlots(total=100, per_address=3), Closed()
    held = [slots.admit("a", 0.0, closed(f"a{i}")) for i in range(3)]
    for s in held:
        assert isinstance(s, Slot)
        s.busy()  # in a request (API) or named a known key (P2P): never evicted
    assert slots.admit("a", 0.5, closed("a3")) == "per_address"
    assert isinstance(slots.admit("b", 0.5, closed("b0")), Slot)  # another address is not affected
    assert slots.stats.refused["per_address"] == 1 and closed.names == []


def test_a_newcomer_evicts_the_connection_of_its_address_that_has_waited_longest() -> None:
    slots, closed = ConnectionSlots(total=100, per_address=3), Closed()
    a0, a1, a2 = (slots.admit("a", t, closed(f"a{i}")) for i, t in enumerate((0.0, 0.1, 0.2)))
    assert isinstance(a0, Slot) and isinstance(a1, Slot) and isinstance(a2, Slot)
    a0.busy()
    a2.busy()
    a2.idle(0.05)  # answered and idle again: it has waited since 0.05, longer than a1
    assert isinstance(slots.admit("a", 0.3, closed("a3")), Slot)
    assert closed.names == ["a2"] and a2.released
    assert isinstance(slots.admit("a", 0.4, closed("a4")), Slot)
    assert closed.names == ["a2", "a1"] and slots.held_by("a") == 3 and slots.stats.evicted == 2
    slots.release(a1)  # its connection ends later: releasing twice is a no-op
    assert slots.held_by("a") == 3 and len(slots) == 3


def test_at_the_total_cap_the_busiest_address_gives_up_its_longest_waiting_connection() -> None:
    slots, closed = ConnectionSlots(total=4, per_address=4), Closed()
    held = [slots.admit(name[0], t, closed(name)) for name, t in (("a0", 0.0), ("a1", 0.1), ("a2", 0.2), ("b0", 0.0))]
    c0 = slots.admit("c", 0.5, closed("c0"))
    assert isinstance(c0, Slot) and closed.names == ["a0"] and slots.held_by("a") == 2 and len(slots) == 4
    for s in (*held[1:], c0):
        assert isinstance(s, Slot)
        s.busy()
    assert slots.admit("d", 0.6, closed("d0")) == "total" and slots.stats.refused["total"] == 1
    assert closed.names == ["a0"]


def test_a_fresh_connection_is_not_pushed_out_before_it_had_the_chance_to_speak() -> None:
    slots, closed = ConnectionSlots(total=100, per_address=2), Closed()
    a0, a1 = slots.admit("a", 0.0, closed("a0")), slots.admit("a", 0.0, closed("a1"))
    assert isinstance(a0, Slot) and isinstance(a1, Slot)
    assert slots.admit("a", FRESH_S - 0.01, closed("a2")) == "per_address"  # both still fresh
    a1.heard(0.1)  # its first bytes (a partial head): waiting from then on
    assert isinstance(slots.admit("a", 0.2, closed("a2")), Slot) and closed.names == ["a1"]
    assert isinstance(slots.admit("a", FRESH_S, closed("a3")), Slot) and closed.names == ["a1", "a0"]


def test_released_slots_are_free_again() -> None:
    slots, closed = ConnectionSlots(total=1, per_address=1), Closed()
    s = slots.admit("a", 0.0, closed("a0"))
    assert isinstance(s, Slot)
    s.busy()
    assert slots.admit("a", 0.0, closed("a1")) == "per_address"
    slots.release(s)
    assert isinstance(slots.admit("a", 0.0, closed("a1")), Slot) and len(slots) == 1


@pytest.mark.parametrize(("peer", "group"), [
    (("203.0.113.7", 5555), "203.0.113.7"),
    (("::ffff:203.0.113.7", 5555, 0, 0), "203.0.113.7"),
    (("2001:db8:1:2:aaaa::1", 5555, 0, 0), "2001:db8:1:2::/64"),
    (("2001:db8:1:2:bbbb::9", 5555, 0, 0), "2001:db8:1:2::/64"),
    (("fe80::1%eth0", 5555, 0, 2), "fe80::/64"),
    ("/run/smeledger.sock", "/run/smeledger.sock"),
    (None, "unix"),
])
def test_clients_are_grouped_by_ipv4_address_or_ipv6_slash_64(peer: object, group: str) -> None:
    assert address_group(peer) == group


def test_the_descriptor_budget_gives_the_api_what_is_left_and_refuses_a_limit_too_small() -> None:
    p2p = fdbudget.p2p_descriptors(allowed_peers=5, dial_targets=4, pending_handshakes=64)
    assert p2p == 2 * 5 + 4 + 64
    need = fdbudget.DB_FILES + p2p + fdbudget.RESERVE + fdbudget.API_MIN
    assert fdbudget.plan(need, p2p=p2p, api_wanted=1024).api_connections == fdbudget.API_MIN
    assert fdbudget.plan(65536, p2p=p2p, api_wanted=1024).api_connections == 1024
    with pytest.raises(ConfigError, match="LimitNOFILE") as err:
        fdbudget.plan(need - 1, p2p=p2p, api_wanted=1024)
    assert str(need) in err.value.message


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))
        now = fdbudget.raise_soft_limit()
        assert now == (hard if hard != resource.RLIM_INFINITY else fdbudget.UNLIMITED)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == now
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
