"""The node's own key file (`node_key.json`) and the operator token file.

The node key file is `{"version": 1, "public_key": hex, "seed": hex}`: unencrypted so a server restarts
unattended, protected by mode 0600. Participants' wallets are encrypted keystores and live on the client
side (`client/wallet.py`); the daemon never reads them.

Rule: secret files are created 0600 from the first byte (node/files.py), and a secret file that others
can read is refused with the chmod that fixes it: the node key at load, the token at start and at each
operator request; no seed is ever logged.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from node.errors import KeyFileError
from node.files import check_private, write_private
from protocol.crypto import PrivateKey

MAX_KEY_FILE_BYTES = 64 * 1024


def save_node_key(path: str | Path, key: PrivateKey) -> None:
    doc = {"version": 1, "public_key": key.public_key.hex(), "seed": key.seed.hex()}
    write_private(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def generate_token() -> str:
    return secrets.token_hex(32)


def check_admin_token(path: str | Path) -> None:
    """At start: a token file others can read is refused; a missing one leaves operator routes disabled."""
    p = Path(path)
    try:
        check_private(p, "admin token file")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise KeyFileError(f"cannot read admin token file {p}: {exc.strerror}") from None


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
