"""The chaos verdict's judgement (devtools/chaos/verify.py) on synthetic chains: agreement passes, and a
missing block, a different block, a certificate without a quorum, a wrong state root and money from
nowhere are each caught; the audit sums supply against balances, escrow and open FX quotes."""

from __future__ import annotations

from typing import Any

from devtools.chaos.verify import Replay, Verdict, _reference_chain, _replay
from protocol import codec
from protocol.block import GENESIS_PARENT, Block, state_root_height
from protocol.consensus import CommitCertificate, vote_bytes
from protocol.crypto import DOMAIN_CONSENSUS, PrivateKey
from protocol.ledger import apply_genesis
from protocol.ledger import keys as lkeys
from protocol.ledger.audit import supply_problems
from protocol.results import GENESIS_RESULTS
from protocol.state import MemoryState, Overlay
from protocol.tx import SignedTx

CHAIN = "chaos-test"
VALIDATORS = [PrivateKey(bytes([i + 1]) * 32) for i in range(4)]
BANK, ALICE, BOB = (PrivateKey(bytes([40 + i]) * 32) for i in range(3))
T0 = 1_700_000_000_000


def genesis() -> dict[str, Any]:
    people = [(BANK, "bank", ["BANK"]), (ALICE, "alice", ["SME"]), (BOB, "bob", ["SME"])]
    return {"chain_id": CHAIN,
            "validators": [{"name": f"v{i}", "public_key": k.public_key.hex()} for i, k in enumerate(VALIDATORS)],
            "ledger": {"participants": [{"id": k.public_key.hex(), "name": n, "roles": r, "kyc": 2}
                                        for k, n, r in people],
                       "assets": [{"id": "CNY.X", "issuer": BANK.public_key.hex(), "decimals": 2}],
                       "balances": [{"account": ALICE.public_key.hex(), "asset": "CNY.X", "amount": 1000}],
                       "time": T0}}


def certificate(block: Block, signers: range = range(3)) -> CommitCertificate:
    sigs = tuple((i, VALIDATORS[i].sign(DOMAIN_CONSENSUS, vote_bytes("commit", CHAIN, 0, block.height, block.hash, i)))
                 for i in signers)
    return CommitCertificate(height=block.height, view=0, block_hash=block.hash, sigs=sigs)


def entry(block: Block, cert: CommitCertificate) -> bytes:
    """What `GET /blocks/{h}?format=msgpack` gives the verdict: block and certificate together."""
    return codec.encode({"block": block.raw, "certificate": codec.encode(cert.to_value())})


def chain(n: int) -> list[Block]:
    """n blocks of one transfer each, with the state roots a node would put in their headers (block h: the
    root after h-2)."""
    replay = Replay(genesis()["ledger"])
    parent, out, roots, results = GENESIS_PARENT, [], [replay.root], [GENESIS_RESULTS]
    for h in range(1, n + 1):
        tx = SignedTx.create(ALICE, {"chain": CHAIN, "kind": "transfer", "nonce": h - 1, "to": BOB.public_key,
                                     "asset": "CNY.X", "amount": 10})
        block = Block.build(chain=CHAIN, height=h, parent=parent, proposer=VALIDATORS[0].public_key, view=0,
                            time=T0 + h, state_root=roots[state_root_height(h)],
                            results_root=results[state_root_height(h)], txs=[tx.raw])
        result = replay.apply(block, [tx])
        assert result.receipts[0].ok
        roots.append(replay.root)
        results.append(result.results_root)
        parent = block.hash
        out.append(block)
    return out


def judge(by_node: dict[str, list[bytes | None]], height: int) -> Verdict:
    v = Verdict(invariants_ok=True)
    agreed = _reference_chain(by_node, height, genesis(), v)
    _state, root = _replay(agreed, genesis(), v)
    if root is None:
        v.invariants_ok = False
    return v


def test_nodes_holding_the_same_certified_chain_pass_and_the_replay_finds_every_tx() -> None:
    blocks = chain(4)
    entries: list[bytes | None] = [entry(b, certificate(b)) for b in blocks]
    other_quorum: list[bytes | None] = [entry(b, certificate(b, range(1, 4))) for b in blocks]
    v = judge({"a": entries, "b": list(entries), "c": other_quorum}, 4)
    assert (v.divergences, v.history_holes, v.invariants_ok, v.problems) == (0, 0, True, [])
    assert sorted(v.in_chain.values()) == [1, 2, 3, 4] and v.failed_receipts == 0


def test_a_block_a_node_cannot_serve_is_a_history_hole() -> None:
    blocks = chain(3)
    entries: list[bytes | None] = [entry(b, certificate(b)) for b in blocks]
    v = judge({"a": entries, "b": [entries[0], None, entries[2]]}, 3)
    assert v.history_holes == 1 and v.holes_by_node == {"b": {"blocks": 1}} and v.divergences == 0


def test_two_blocks_at_one_height_are_a_divergence() -> None:
    blocks = chain(2)
    forked = Block.build(chain=CHAIN, height=2, parent=blocks[0].hash, proposer=VALIDATORS[1].public_key, view=0,
                         time=T0 + 99, state_root=blocks[1].header.state_root,
                         results_root=blocks[1].header.results_root, txs=[])
    honest: list[bytes | None] = [entry(b, certificate(b)) for b in blocks]
    v = judge({"a": honest, "b": list(honest), "c": [honest[0], entry(forked, certificate(forked))]}, 2)
    assert v.divergences == 1 and any("2 different blocks" in p for p in v.problems)


def test_a_certificate_without_a_quorum_is_a_divergence() -> None:
    blocks = chain(2)
    weak: list[bytes | None] = [entry(blocks[0], certificate(blocks[0])),
                                entry(blocks[1], certificate(blocks[1], range(2)))]
    v = judge({"a": weak}, 2)
    assert v.divergences == 1 and any("not a quorum" in p for p in v.problems)


def test_a_header_whose_state_root_the_replay_does_not_reach_breaks_the_invariants() -> None:
    blocks = chain(2)
    bad = Block.build(chain=CHAIN, height=2, parent=blocks[0].hash, proposer=VALIDATORS[0].public_key, view=0,
                      time=T0 + 2, state_root=b"\x07" * 32, results_root=blocks[1].header.results_root,
                      txs=list(blocks[1].txs))
    entries: list[bytes | None] = [entry(blocks[0], certificate(blocks[0])), entry(bad, certificate(bad))]
    v = judge({"a": entries}, 2)
    assert not v.invariants_ok and any("header state root" in p for p in v.problems)


def test_a_header_whose_results_root_the_replay_does_not_reach_breaks_the_invariants() -> None:
    blocks = chain(3)
    bad = Block.build(chain=CHAIN, height=3, parent=blocks[1].hash, proposer=VALIDATORS[0].public_key, view=0,
                      time=T0 + 3, state_root=blocks[2].header.state_root, results_root=b"\x09" * 32,
                      txs=list(blocks[2].txs))
    entries: list[bytes | None] = [entry(b, certificate(b)) for b in (*blocks[:2], bad)]
    v = judge({"a": entries}, 3)
    assert not v.invariants_ok and any("height 3: header results root" in p for p in v.problems)


def test_a_header_carrying_the_root_after_the_block_just_below_it_breaks_the_invariants() -> None:
    blocks = chain(3)
    replay = Replay(genesis()["ledger"])
    for b in blocks[:2]:
        replay.apply(b, [SignedTx.from_wire(t) for t in b.txs])
    early = Block.build(chain=CHAIN, height=3, parent=blocks[1].hash, proposer=VALIDATORS[0].public_key, view=0,
                        time=T0 + 3, state_root=replay.root, results_root=blocks[2].header.results_root,
                        txs=list(blocks[2].txs))  # the root after 2, not after 1
    entries: list[bytes | None] = [entry(b, certificate(b)) for b in (*blocks[:2], early)]
    v = judge({"a": entries}, 3)
    assert not v.invariants_ok and any("height 3: header state root" in p for p in v.problems)


def test_the_audit_finds_money_from_nowhere_and_accepts_escrow_and_open_quotes() -> None:
    state = MemoryState()
    ov = Overlay(state)
    apply_genesis(ov, genesis()["ledger"])
    state.apply(ov.changes())
    assert supply_problems(state) == []
    state.apply({lkeys.P_BALANCE + BOB.public_key + b"CNY.X": codec.encode(5)})
    assert supply_problems(state) == ["CNY.X: supply 1000 but 1005 held"]
    state.apply({lkeys.P_BALANCE + BOB.public_key + b"CNY.X": None,
                 lkeys.P_BALANCE + ALICE.public_key + b"CNY.X": codec.encode(700),
                 lkeys.P_CAMPAIGN + b"\x01" * 32: codec.encode({"status": "open", "asset": "CNY.X", "raised": 200}),
                 lkeys.P_FX + b"\x02" * 32: codec.encode({"status": "open", "base": "CNY.X", "remaining": 100})})
    assert supply_problems(state) == []
    state.apply({lkeys.P_BALANCE + BOB.public_key + b"GOLD": codec.encode(1)})
    assert supply_problems(state) == ["GOLD: 1 held of an asset the ledger does not know"]
