"""The test-only byzantine layer (`smeledger run --byzantine MODE`): refused off testnets, and each mode
changes only what leaves the node, in the way honest peers must survive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog

from node.byzantine import FLOOD_PER_MESSAGE, ByzantineOutbox, is_testnet_chain
from node.errors import ConfigError
from protocol import consensus as cs
from protocol.block import GENESIS_PARENT, Block
from protocol.crypto import PrivateKey
from protocol.errors import ProtocolError
from protocol.messages import T_CONS
from tests.unit.test_cli_errors import cli

CHAIN = "smeledger-testnet"
KEYS = [PrivateKey(bytes([i + 1]) * 32) for i in range(4)]
VALIDATORS = [k.public_key for k in KEYS]
OBSERVER = PrivateKey(b"\x09" * 32).public_key


class FakeP2P:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str, Any]] = []

    def connected(self) -> list[bytes]:
        return sorted([*VALIDATORS[1:], OBSERVER])

    def is_validator(self, peer: bytes) -> bool:
        return peer in VALIDATORS

    def send(self, peer: bytes, msg_type: str, body: Any) -> bool:
        self.sent.append((peer, msg_type, body))
        return True

    def broadcast(self, msg_type: str, body: Any, *, validators_only: bool = False) -> int:
        raise AssertionError("the byzantine layer sends peer by peer")

    def register(self, msg_type: str, handler: Any) -> None:
        pass


def outbox(mode: str, chain: str = CHAIN) -> tuple[ByzantineOutbox, FakeP2P]:
    p2p = FakeP2P()
    return ByzantineOutbox(mode, p2p, KEYS[0], chain, VALIDATORS, structlog.get_logger(), seed=7), p2p  # type: ignore[arg-type]


def proposal() -> cs.PrePrepare:
    block = Block.build(chain=CHAIN, height=1, parent=GENESIS_PARENT, proposer=VALIDATORS[0], view=0,
                        time=1_700_000_000_000, state_root=b"\x00" * 32, results_root=b"\x00" * 32, txs=[])
    return cs.PrePrepare.create(KEYS[0], CHAIN, 0, block, 0)


def verified(body: Any) -> cs.Message | None:
    """What an honest receiver makes of a body: the message if it decodes and its signature holds."""
    try:
        msg = cs.decode_message(body)
    except ProtocolError:
        return None
    return msg if msg.verify_sig(VALIDATORS[msg.index]) else None


@pytest.mark.parametrize("chain, ok", [("smeledger-testnet", True), ("acme-devnet", True), ("x-chaos", True),
                                       ("smeledger", False), ("bank-mainnet", False), ("contestnet", False)])
def test_only_a_chain_id_with_a_testnet_word_allows_byzantine_mode(chain: str, ok: bool) -> None:
    assert is_testnet_chain(chain) is ok
    if not ok:
        with pytest.raises(ConfigError) as err:
            outbox("silent", chain)
        assert "testnets only" in str(err.value)


def test_run_refuses_byzantine_mode_on_a_chain_that_is_not_a_testnet(single_home: Path) -> None:
    home = single_home / "banka"
    for name in ("genesis.json", "banka/genesis.json", "banka/config.toml"):
        p = single_home / name
        p.write_text(p.read_text().replace("smeledger-testnet", "smeledger-prod"))
    p = cli("run", "--home", str(home), "--byzantine", "silent")  # a node's start errors are one JSON line
    assert p.returncode == 1 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    err = json.loads(p.stderr)
    assert err["error"] == "config_error" and "testnets only" in err["message"]


def test_silent_mode_sends_no_consensus_message_but_other_traffic_passes() -> None:
    box, p2p = outbox("silent")
    assert box.broadcast(T_CONS, proposal().to_value()) == 0
    assert box.send(VALIDATORS[1], "sync_resp", {"x": 1})
    assert p2p.sent == [(VALIDATORS[1], "sync_resp", {"x": 1})]


def test_equivocate_mode_proposes_two_signed_blocks_for_one_height_to_two_halves() -> None:
    box, p2p = outbox("equivocate")
    honest = proposal()
    box.broadcast(T_CONS, honest.to_value())
    got = {peer: verified(body) for peer, _t, body in p2p.sent}
    assert set(got) == {*VALIDATORS[1:], OBSERVER}
    blocks = {peer: m.block.hash for peer, m in got.items() if isinstance(m, cs.PrePrepare)}
    assert len(blocks) == 4 and len(set(blocks.values())) == 2  # every copy verifies; two different blocks
    assert blocks[OBSERVER] == honest.block.hash
    p2p.sent.clear()
    vote = cs.Prepare.create(KEYS[0], CHAIN, 0, 1, honest.block.hash, 0)
    box.broadcast(T_CONS, vote.to_value())
    votes = {peer: m.block_hash for peer, _t, body in p2p.sent if isinstance(m := verified(body), cs.Prepare)}
    assert set(votes.values()) == set(blocks.values())  # it votes for both of its blocks


def test_flood_mode_follows_each_message_with_signed_votes_for_future_views() -> None:
    box, p2p = outbox("flood")
    vote = cs.Commit.create(KEYS[0], CHAIN, 3, 10, b"\x05" * 32, 0)
    box.send(VALIDATORS[1], T_CONS, vote.to_value())
    msgs = [verified(body) for _p, _t, body in p2p.sent]
    assert len(msgs) == 1 + FLOOD_PER_MESSAGE and msgs[0] == vote
    assert all(isinstance(m, cs.Prepare | cs.Commit) and m.view > 3 and m.height >= 10 for m in msgs[1:])


def test_garbage_mode_sends_messages_an_honest_peer_rejects() -> None:
    box, p2p = outbox("garbage")
    vote = cs.Commit.create(KEYS[0], CHAIN, 0, 1, b"\x05" * 32, 0)
    for _ in range(40):
        box.send(VALIDATORS[1], T_CONS, vote.to_value())
    outcomes = [verified(body) for _p, _t, body in p2p.sent]
    assert outcomes.count(None) >= 20 and vote in outcomes  # mostly rejected, sometimes honest
    assert all(m is None or m == vote for m in outcomes)
