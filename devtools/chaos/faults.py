"""How each kind of fault of the schedule is put in place and undone on a `Cluster`, and the check that
`peers` tells the truth during a partition.

Rule: every fault `apply_fault` makes, `heal_fault` (with `Cluster.clear_links` for cut flows and degraded links)
undoes; nothing here waits longer than a fault's own stagger.
"""

from __future__ import annotations

import time

from client.errors import ClientError
from devtools.chaos import schedule
from devtools.chaos.cluster import Cluster


def cut_pairs(c: Cluster, f: schedule.Fault, resolved: list[str]) -> list[tuple[str, str]]:
    """The (sender, receiver) byte flows a split or one-way fault black-holes."""
    names = c.names
    if f.kind == "split":
        cut = f.targets.index("|")
        a, b = f.targets[:cut], f.targets[cut + 1:]
        return [(x, y) for x in a for y in b] + [(y, x) for x in a for y in b]
    if f.kind == "oneway":
        x = resolved[0]
        others = [y for y in names if y != x]
        return [(x, y) for y in others] if f.params["direction"] == "out" else [(y, x) for y in others]
    return []


def apply_fault(c: Cluster, f: schedule.Fault, resolved: list[str]) -> None:
    """Put the fault in place (the links overlay is the caller's)."""
    if f.kind in ("kill", "kill2"):
        for n in resolved:
            c.kill9(n)
    elif f.kind == "pause":
        c.pause(resolved[0])
    elif f.kind == "isolate":
        c.isolate(resolved[0], True)
    elif f.kind in ("split", "oneway"):
        for src, dst in cut_pairs(c, f, resolved):
            c.set_flow(src, dst, cut=True)
    elif f.kind == "links":
        c.degrade(resolved, f.params)
    elif f.kind == "clock_skew":
        c.stop_gracefully(resolved[0])
        c.start(resolved[0], skew_ms=int(f.params["skew_ms"]))
    elif f.kind == "byzantine":
        c.stop_gracefully(resolved[0])
        c.start(resolved[0], byzantine=str(f.params["mode"]))


def heal_fault(c: Cluster, f: schedule.Fault, resolved: list[str]) -> None:
    """Undo the fault (cut flows and degraded links: `Cluster.clear_links`, after every episode)."""
    if f.kind == "kill":
        c.start(resolved[0])
    elif f.kind == "kill2":
        c.start(resolved[0])
        time.sleep(float(f.params["stagger_s"]))
        c.start(resolved[1])
    elif f.kind == "pause":
        c.resume(resolved[0])
    elif f.kind == "isolate":
        c.isolate(resolved[0], False)
    elif f.kind in ("clock_skew", "byzantine"):
        c.stop_gracefully(resolved[0])
        c.start(resolved[0])
    # split, oneway and links: clear_links() after every episode restores every link


def stale_peers(c: Cluster, f: schedule.Fault, resolved: list[str]) -> list[str]:
    """Peer-table rows that claim a link the partition has cut ("a lists b")."""
    pairs = set(cut_pairs(c, f, resolved))
    if f.kind == "isolate":
        x = resolved[0]
        pairs = {(x, y) for y in c.names if y != x} | {(y, x) for y in c.names if y != x}
    stale = []
    for name in c.names:
        try:
            rows = c.client(name, 2.0).peers().peers
        except ClientError:
            continue  # a node cut off in its namespace cannot be asked; the others can
        for row in rows:
            if (name, row.name) in pairs or (row.name, name) in pairs:
                stale.append(f"{name} lists {row.name}")
    return stale
