"""The node's own key file (`node_key.json`) and the operator token file.

The node key file is `{"version": 1, "public_key": hex, "seed": hex}`: unencrypted so a server restarts
unattended, protected by mode 0600. Participants' wallets are encrypted keystores and live on the client
side (`client/wallet.py`); the daemon never reads them.

Rule: secret files are created 0600 from the first byte (O_CREAT with the mode, then an atomic rename),
and a secret file that others can read is refused with the chmod that fixes it; no seed is ever logged.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from node.errors import KeyFileError
from protocol.crypto import PrivateKey

MAX_KEY_FILE_BYTES = 64 * 1024


def write_private(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 from creation on, atomically (temp file + rename)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)


def save_node_key(path: str | Path, key: PrivateKey) -> None:
    doc = {"version": 1, "public_key": key.public_key.hex(), "seed": key.seed.hex()}
    write_private(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def generate_token() -> str:
    return secrets.token_hex(32)


def check_private(p: Path, what: str) -> None:
    """Refuse a secret file that group or others may read."""
    mode = p.stat().st_mode
    if mode & 0o077:
        raise KeyFileError(f"{what} {p} is readable by others (mode {oct(mode & 0o777)}); run: chmod 600 {p}")


def load_node_key(path: str | Path) -> PrivateKey:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"node key file {p} is too large")
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyFileError(f"no node key file at {p}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KeyFileError(f"node key file {p} is not valid JSON") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read node key file {p}: {exc.strerror}") from None
    if not isinstance(doc, dict):
        raise KeyFileError(f"node key file {p} must be a JSON object")
    try:
        seed = bytes.fromhex(doc.get("seed", ""))
        pub = bytes.fromhex(doc.get("public_key", ""))
    except (ValueError, TypeError):
        raise KeyFileError(f"node key file {p}: seed and public_key must be hex") from None
    if len(seed) != 32:
        raise KeyFileError(f"node key file {p}: seed must be 32 bytes")
    key = PrivateKey(seed)
    if key.public_key != pub:
        raise KeyFileError(f"node key file {p}: public_key does not match the seed")
    check_private(p, "node key file")
    return key
