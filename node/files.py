"""The files of a node home and the modes they get, set explicitly whatever the process umask.

| what                                                        | mode | why                                   |
|-------------------------------------------------------------|------|---------------------------------------|
| node home, its `data/` (LevelDB), a testnet directory, `wallets/` | 0700 | only the node's user goes in    |
| `node_key.json`, `admin.token`, wallet keystores, `PASSWORD` | 0600 | secrets                              |
| `config.toml`, `genesis.json`, `nodes.json`, pid and log files | 0644 | no secrets: readable where the directory lets others in, never writable by them |

Rule: a file is written to a temp file created with its mode and `fchmod`ed to it (a umask can neither
widen nor narrow it), synced, then renamed over the target, so no reader ever sees it half written or
with another mode. A directory made here is `chmod`ed to 0700 after `mkdir`. A secret file that group or
others may read is refused with the `chmod` that fixes it.
"""

from __future__ import annotations

import os
from pathlib import Path

from node.errors import KeyFileError

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
PUBLIC_FILE = 0o644


def write_file(path: str | Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` with exactly `mode`, atomically (temp file + fsync + rename)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)


def fsync_dir(path: str | Path) -> None:
    """Make the entries of directory `path` durable (a file created or renamed in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: str | Path, data: bytes) -> None:
    """A secret file: 0600 from creation on."""
    write_file(path, data, PRIVATE_FILE)


def write_public(path: str | Path, data: bytes) -> None:
    """A file without secrets (config, genesis): 0644."""
    write_file(path, data, PUBLIC_FILE)


def make_private_dir(path: str | Path, *, parents: bool = False) -> None:
    """Create `path` (and with `parents` each missing parent) with mode 0700. A directory that exists
    keeps its mode: the operator chose it."""
    p = Path(path)
    if p.is_dir():
        return
    if parents and not p.parent.is_dir():
        make_private_dir(p.parent, parents=True)
    p.mkdir(mode=PRIVATE_DIR)
    os.chmod(p, PRIVATE_DIR)


def check_private(path: str | Path, what: str) -> None:
    """Refuse a secret file that group or others may read or write."""
    p = Path(path)
    mode = p.stat().st_mode
    if mode & 0o077:
        raise KeyFileError(f"{what} {p} is open to group or others (mode {oct(mode & 0o777)}); "
                           f"run: chmod 600 {p}")
