"""Keystores per DESIGN section 5: round trip, wrong password, file mode, format, node key file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import nacl.pwhash
import nacl.secret
import pytest

from client.errors import WalletError, WrongPassword
from client.wallet import Wallet, keystore_info
from node.errors import KeyFileError
from node.keyfile import load_node_key, save_node_key


def test_a_saved_wallet_loads_back_with_the_same_key_name_and_roles(tmp_path: Path) -> None:
    w = Wallet.generate("smea", ("SME",))
    p = tmp_path / "w.json"
    w.save(p, "pw", "min")
    back = Wallet.load(p, "pw")
    assert back.public_key == w.public_key
    assert back.key.seed == w.key.seed
    assert (back.name, back.roles) == ("smea", ("SME",))


def test_the_keystore_is_0600_and_has_exactly_the_documented_format(tmp_path: Path) -> None:
    w = Wallet.generate()
    p = tmp_path / "w.json"
    w.save(p, "pw", "min")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    doc = json.loads(p.read_text())
    assert set(doc) == {"version", "public_key", "kdf", "nonce", "ciphertext"}
    assert doc["version"] == 1 and doc["public_key"] == w.account
    assert doc["kdf"]["name"] == "argon2id"
    assert doc["kdf"]["opslimit"] == nacl.pwhash.argon2id.OPSLIMIT_MIN
    # decrypt by the spec alone: SecretBox keyed by argon2id(password, salt) over the 32-byte seed
    key = nacl.pwhash.argon2id.kdf(32, b"pw", bytes.fromhex(doc["kdf"]["salt"]),
                                   opslimit=doc["kdf"]["opslimit"], memlimit=doc["kdf"]["memlimit"])
    seed = nacl.secret.SecretBox(key).decrypt(bytes.fromhex(doc["ciphertext"]), bytes.fromhex(doc["nonce"]))
    assert seed == w.key.seed


def test_a_wrong_password_is_a_clear_wrong_password_error(tmp_path: Path) -> None:
    p = tmp_path / "w.json"
    Wallet.generate().save(p, "right", "min")
    with pytest.raises(WrongPassword, match="wrong password"):
        Wallet.load(p, "wrong")


def test_a_tampered_public_key_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "w.json"
    Wallet.generate().save(p, "pw", "min")
    doc = json.loads(p.read_text())
    doc["public_key"] = "00" * 32
    p.write_text(json.dumps(doc))
    with pytest.raises(WalletError, match="does not match"):
        Wallet.load(p, "pw")


def test_hostile_kdf_limits_are_refused_before_any_work(tmp_path: Path) -> None:
    p = tmp_path / "w.json"
    Wallet.generate().save(p, "pw", "min")
    doc = json.loads(p.read_text())
    doc["kdf"]["memlimit"] = 2**40
    p.write_text(json.dumps(doc))
    with pytest.raises(WalletError, match="out of range"):
        Wallet.load(p, "pw")


def test_missing_or_garbage_keystore_files_are_wallet_errors(tmp_path: Path) -> None:
    with pytest.raises(WalletError, match="no keystore"):
        Wallet.load(tmp_path / "none.json", "pw")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(WalletError, match="not valid JSON"):
        keystore_info(tmp_path / "bad.json")


def test_keystore_info_needs_no_password(tmp_path: Path) -> None:
    w = Wallet.generate("bank", ("BANK",))
    w.save(tmp_path / "w.json", "pw", "min")
    info = keystore_info(tmp_path / "w.json")
    assert info["public_key"] == w.account and info["roles"] == ["BANK"]


def test_the_node_key_file_round_trips_and_refuses_group_readable_modes(tmp_path: Path) -> None:
    w = Wallet.generate()
    p = tmp_path / "node_key.json"
    save_node_key(p, w.key)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert load_node_key(p).public_key == w.public_key
    os.chmod(p, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_node_key(p)
