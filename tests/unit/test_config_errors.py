"""Config validation: every wrong or unknown field is named in the error; defaults are named limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from node import config
from node.errors import ConfigError

KEY = "ab" * 32


def _load(tmp_path: Path, text: str) -> config.Config:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return config.load(p)


BASE = '[node]\nname = "n1"\nchain_id = "c"\n'


def test_minimal_config_gets_every_default(tmp_path: Path) -> None:
    cfg = _load(tmp_path, BASE)
    assert cfg.api.host == "127.0.0.1"
    assert cfg.api.port == config.DEFAULT_API_PORT
    assert cfg.p2p.max_frame == config.DEFAULT_MAX_FRAME
    assert cfg.mempool.max_txs == config.DEFAULT_MEMPOOL_TXS
    assert cfg.node.home == tmp_path.resolve()
    assert cfg.node.key_file == tmp_path.resolve() / "node_key.json"
    assert cfg.testnet.allow_time_offset is False


@pytest.mark.parametrize(("extra", "field", "why"), [
    ("[p2p]\nport = 70000\n", "p2p.port", "must be an integer 1..65535"),
    ('[p2p]\nport = "7701"\n', "p2p.port", "must be an integer"),
    ("[api]\nport = -1\n", "api.port", "must be an integer"),
    ("[api]\nprot = 1\n", "api.prot", "is not a known setting"),
    ("[mempool]\nmax_txs = 0\n", "mempool.max_txs", "must be an integer"),
    ('[logging]\nlevel = "loud"\n', "logging.level", "must be one of"),
    ('[testnet]\nallow_time_offset = "yes"\n', "testnet.allow_time_offset", "must be true or false"),
    ("[consensus]\nbatch_timeout_ms = -1\n", "consensus.batch_timeout_ms", "must be an integer 0.."),
    ("[consensus]\nview_timeout_ms = 0\n", "consensus.view_timeout_ms", "must be an integer 1.."),
    ("[consensus]\nfoo = 1\n", "consensus.foo", "is not a known setting"),
    ('[p2p]\nobservers = ["zz"]\n', "p2p.observers[0]", "must be a 32-byte public key"),
    ('[[p2p.peers]]\nhost = "127.0.0.1"\nport = 1\n', "p2p.peers[0].public_key", "must be a 32-byte"),
    (f'[[p2p.peers]]\npublic_key = "{KEY}"\nport = 99999\n', "p2p.peers[0].port", "must be an integer"),
    (f'[[p2p.peers]]\npublic_key = "{KEY}"\nport = 1\nweight = 3\n', "p2p.peers[0].weight", "not a known"),
    ("[bogus]\n", "bogus", "is not a known setting"),
])
def test_a_wrong_field_is_named_in_the_error(tmp_path: Path, extra: str, field: str, why: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, BASE + extra)
    assert e.value.message.startswith(f"config error: {field} ")
    assert why in e.value.message


def test_missing_node_name_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"node\.name is required"):
        _load(tmp_path, '[node]\nchain_id = "c"\n')


def test_missing_node_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config error: node section is required"):
        _load(tmp_path, "[api]\nport = 1\n")


def test_invalid_toml_says_so_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML"):
        _load(tmp_path, "[node\nname=")


def test_missing_file_points_at_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="smeledger init"):
        config.load(tmp_path / "nope.toml")


def test_render_writes_toml_that_loads_back_with_peers(tmp_path: Path) -> None:
    doc = {"node": {"name": "a", "chain_id": "c"},
           "p2p": {"port": 7, "observers": [KEY], "peers": [{"name": "b", "public_key": KEY, "host": "127.0.0.1",
                                                             "port": 8}]},
           "testnet": {"allow_time_offset": True}}
    cfg = _load(tmp_path, config.render(doc))
    assert cfg.p2p.peers[0].public_key == bytes.fromhex(KEY)
    assert cfg.p2p.peers[0].port == 8
    assert cfg.p2p.observers == (bytes.fromhex(KEY),)
    assert cfg.testnet.allow_time_offset is True


def test_example_config_in_configs_is_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    cfg = config.load(root / "configs" / "node.example.toml")
    assert cfg.node.name


def test_the_journal_may_be_bounded_at_the_mempools_bounds_but_not_one_tx_or_byte_above(tmp_path: Path) -> None:
    pool = "[mempool]\nmax_txs = 100\nmax_bytes = 4096\nttl_s = 1\n"
    cfg = _load(tmp_path, BASE + pool + "[journal]\nmax_txs = 100\nmax_bytes = 4096\n")
    assert (cfg.journal.max_txs, cfg.journal.max_bytes, cfg.mempool.ttl_s) == (100, 4096, 1)
    for over, field in (("max_txs = 101", "journal.max_txs"), ("max_bytes = 4097", "journal.max_bytes")):
        with pytest.raises(ConfigError) as e:
            _load(tmp_path, BASE + pool + f"[journal]\n{over}\n")
        assert e.value.message.startswith(f"config error: {field} must be an integer 0..")
    with pytest.raises(ConfigError, match=r"mempool\.ttl_s must be an integer 1\.\."):
        _load(tmp_path, BASE + "[mempool]\nttl_s = 0\n")
