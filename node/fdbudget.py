"""The node's file-descriptor budget: the database first, then P2P, then what is left for API clients.

Running out of descriptors must never reach the database (a LevelDB that cannot open a table file is a
storage error and stops the node), so the limit is split up front: LevelDB keeps at most `db_files` open
(its `max_open_files`), P2P at most one link per allowed peer (twice, while a link is replaced), one per
dial target and its pending-handshake cap, and `RESERVE` covers the rest (stdio, the event loop's own,
log and key files, connections the kernel accepted in one burst before they are counted and refused).
The API gets the remainder, up to its configured cap; clients beyond it are refused at once by the
API's connection slots. At start the soft limit is raised to the hard one (systemd's `LimitNOFILE`);
a limit too small for even `API_MIN` client connections is a config error naming the way out.
Rule: this module only computes and reads/raises the process limit; it opens nothing.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from node.errors import ConfigError

DB_FILES = 512  # LevelDB max_open_files: its table cache, log, manifest and lock stay within it
RESERVE = 256
API_MIN = 16
UNLIMITED = 1 << 20  # what an unlimited descriptor limit counts as (the kernel's usual nr_open)


@dataclass(frozen=True, slots=True)
class FdBudget:
    limit: int  # the process's soft RLIMIT_NOFILE
    db_files: int
    p2p: int
    reserve: int
    api_connections: int

    def as_log(self) -> dict[str, int]:
        return {"nofile": self.limit, "db_files": self.db_files, "p2p": self.p2p, "reserve": self.reserve,
                "api_connections": self.api_connections}


def p2p_descriptors(allowed_peers: int, dial_targets: int, pending_handshakes: int) -> int:
    """Most sockets P2P holds at once: two links per allowed peer (while one replaces the other),
    one per dial in flight and every inbound handshake still pending."""
    return 2 * allowed_peers + dial_targets + pending_handshakes


def plan(limit: int, *, p2p: int, api_wanted: int, db_files: int = DB_FILES, reserve: int = RESERVE) -> FdBudget:
    """Split `limit` descriptors; ConfigError when the API would get fewer than `API_MIN`."""
    room = limit - db_files - p2p - reserve
    if room < API_MIN:
        need = db_files + p2p + reserve + API_MIN
        raise ConfigError(f"config error: the open-file limit is {limit}, this node needs at least {need} "
                          f"({db_files} database, {p2p} p2p, {reserve} reserve, {API_MIN} API); raise "
                          "LimitNOFILE in the systemd unit (or `ulimit -n`)")
    return FdBudget(limit=limit, db_files=db_files, p2p=p2p, reserve=reserve,
                    api_connections=min(api_wanted, room))


def raise_soft_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit where allowed; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return UNLIMITED
    target = UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft  # not allowed to raise it: the budget is planned within the soft limit
        soft = target
    return soft
