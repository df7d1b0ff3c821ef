"""Encrypted keystores (DESIGN section 5): the wallets of participants, used by the SDK and the CLI.

Keystore (JSON, one key per file): `{"version": 1, "public_key": hex, "kdf": {"name": "argon2id",
"opslimit": int, "memlimit": int, "salt": hex}, "nonce": hex, "ciphertext": hex}`; the ciphertext is
SecretBox keyed by argon2id(password, salt) over the 32-byte Ed25519 seed. `name` and `roles` ride along.

Rule: secret files are created 0600 from the first byte (O_CREAT with the mode, then an atomic rename);
no seed is ever logged or printed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from client.errors import WalletError, WrongPassword
from protocol.crypto import PrivateKey

KEYSTORE_VERSION = 1
MAX_KEYSTORE_BYTES = 64 * 1024
# name -> (opslimit, memlimit). "moderate" is the default for wallets a person keeps; "interactive"
# for testnet demo wallets; "min" only for tests.
KDF_LIMITS: dict[str, tuple[int, int]] = {
    "sensitive": (nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE, nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE),
    "moderate": (nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE),
    "interactive": (nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE, nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE),
    "min": (nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN),
}
# Bounds accepted when reading a keystore: a hostile file must not make us allocate unbounded memory.
MAX_OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE * 4
MAX_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE


def write_secret(path: str | Path, data: bytes) -> None:
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


def _read_json(path: Path, what: str, err: type[WalletError]) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_KEYSTORE_BYTES:
            raise err(f"{what} {path} is too large")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise err(f"no {what} at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise err(f"{what} {path} is not valid JSON") from None
    except OSError as exc:
        raise err(f"cannot read {what} {path}: {exc.strerror}") from None
    if not isinstance(doc, dict):
        raise err(f"{what} {path} must be a JSON object")
    return doc


def _hex(doc: dict[str, Any], key: str, size: int | None, where: str) -> bytes:
    v = doc.get(key)
    try:
        b = bytes.fromhex(v) if isinstance(v, str) else None
    except ValueError:
        b = None
    if b is None or (size is not None and len(b) != size):
        raise WalletError(f"keystore {where}: field '{key}' must be hex" + (f" of {size} bytes" if size else ""))
    return b


@dataclass(frozen=True, slots=True)
class Wallet:
    key: PrivateKey
    name: str = ""
    roles: tuple[str, ...] = ()

    @property
    def public_key(self) -> bytes:
        return self.key.public_key

    @property
    def account(self) -> str:
        return self.key.public_key.hex()

    @classmethod
    def generate(cls, name: str = "", roles: tuple[str, ...] = ()) -> Wallet:
        return cls(PrivateKey(nacl.utils.random(32)), name, roles)

    def to_keystore(self, password: str, limits: str = "moderate") -> dict[str, Any]:
        if limits not in KDF_LIMITS:
            raise WalletError(f"unknown kdf limits {limits!r} (use {', '.join(KDF_LIMITS)})")
        ops, mem = KDF_LIMITS[limits]
        salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
        box_key = nacl.pwhash.argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, password.encode("utf-8"), salt,
                                           opslimit=ops, memlimit=mem)
        nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
        ct = nacl.secret.SecretBox(box_key).encrypt(self.key.seed, nonce).ciphertext
        doc: dict[str, Any] = {"version": KEYSTORE_VERSION, "public_key": self.account,
                               "kdf": {"name": "argon2id", "opslimit": ops, "memlimit": mem, "salt": salt.hex()},
                               "nonce": nonce.hex(), "ciphertext": ct.hex()}
        if self.name:
            doc["name"] = self.name
        if self.roles:
            doc["roles"] = list(self.roles)
        return doc

    def save(self, path: str | Path, password: str, limits: str = "moderate") -> None:
        data = json.dumps(self.to_keystore(password, limits), indent=2, sort_keys=True) + "\n"
        write_secret(path, data.encode("utf-8"))

    @classmethod
    def from_keystore(cls, doc: dict[str, Any], password: str, where: str = "") -> Wallet:
        if doc.get("version") != KEYSTORE_VERSION:
            raise WalletError(f"keystore {where}: unsupported version {doc.get('version')!r}")
        kdf = doc.get("kdf")
        if not isinstance(kdf, dict) or kdf.get("name") != "argon2id":
            raise WalletError(f"keystore {where}: kdf must be argon2id")
        ops, mem = kdf.get("opslimit"), kdf.get("memlimit")
        if (not isinstance(ops, int) or not isinstance(mem, int) or isinstance(ops, bool) or isinstance(mem, bool)
                or not nacl.pwhash.argon2id.OPSLIMIT_MIN <= ops <= MAX_OPSLIMIT
                or not nacl.pwhash.argon2id.MEMLIMIT_MIN <= mem <= MAX_MEMLIMIT):
            raise WalletError(f"keystore {where}: kdf opslimit/memlimit out of range")
        salt = _hex(kdf, "salt", nacl.pwhash.argon2id.SALTBYTES, where)
        nonce = _hex(doc, "nonce", nacl.secret.SecretBox.NONCE_SIZE, where)
        ct = _hex(doc, "ciphertext", 32 + nacl.secret.SecretBox.MACBYTES, where)
        pub = _hex(doc, "public_key", 32, where)
        box_key = nacl.pwhash.argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, password.encode("utf-8"), salt,
                                           opslimit=ops, memlimit=mem)
        try:
            seed = nacl.secret.SecretBox(box_key).decrypt(ct, nonce)
        except nacl.exceptions.CryptoError:
            raise WrongPassword(f"wrong password for keystore {where}".rstrip()) from None
        key = PrivateKey(seed)
        if key.public_key != pub:
            raise WalletError(f"keystore {where}: the decrypted key does not match public_key")
        name = doc.get("name", "")
        roles = doc.get("roles", [])
        if not isinstance(name, str) or not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise WalletError(f"keystore {where}: name must be a string and roles a list of strings")
        return cls(key, name, tuple(roles))

    @classmethod
    def load(cls, path: str | Path, password: str) -> Wallet:
        p = Path(path)
        return cls.from_keystore(_read_json(p, "keystore", WalletError), password, str(p))


def keystore_info(path: str | Path) -> dict[str, Any]:
    """Public fields of a keystore (no password needed): public_key, name, roles, kdf limits."""
    p = Path(path)
    doc = _read_json(p, "keystore", WalletError)
    pub = _hex(doc, "public_key", 32, str(p)).hex()
    raw_kdf = doc.get("kdf")
    kdf: dict[str, Any] = raw_kdf if isinstance(raw_kdf, dict) else {}
    return {"path": str(p), "public_key": pub, "account": pub, "name": doc.get("name", ""),
            "roles": doc.get("roles", []), "kdf": {k: kdf.get(k) for k in ("name", "opslimit", "memlimit")}}


def read_password(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise WalletError(f"cannot read password file {path}: {exc.strerror}") from None
