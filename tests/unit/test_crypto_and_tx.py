"""Signatures are domain separated; the signed tx envelope follows DESIGN section 5 exactly."""

import hashlib

import pytest

from protocol import codec
from protocol.block import GENESIS_PARENT, Block
from protocol.crypto import DOMAIN_CONSENSUS, DOMAIN_TX, PrivateKey, merkle_root, sha256, verify
from protocol.errors import CodecError, FieldError
from protocol.tx import SignedTx

KEY = PrivateKey(bytes(range(32)))
OTHER = PrivateKey(bytes(range(1, 33)))


def transfer(nonce=0, **extra):
    body = {"chain": "test", "kind": "transfer", "nonce": nonce, "to": OTHER.public_key, "asset": "CNY.BANKA",
            "amount": 100}
    body.update(extra)
    return SignedTx.create(KEY, body)


def test_a_signature_for_one_domain_does_not_verify_under_another():
    sig = KEY.sign(DOMAIN_TX, b"msg")
    assert verify(KEY.public_key, DOMAIN_TX, b"msg", sig)
    assert not verify(KEY.public_key, DOMAIN_CONSENSUS, b"msg", sig)
    assert not verify(OTHER.public_key, DOMAIN_TX, b"msg", sig)
    assert not verify(KEY.public_key, DOMAIN_TX, b"msg", sig[:63])


def test_the_tx_signature_covers_the_tag_followed_by_the_body_bytes():
    tx = transfer()
    assert verify(tx.sender, b"smeledger:tx:v1", tx.body_bytes, tx.sig)
    assert tx.hash == hashlib.sha256(tx.body_bytes).digest()
    assert codec.decode(tx.raw) == {"sig": tx.sig, "tx": tx.body_bytes}


def test_a_signed_tx_survives_the_wire_and_still_verifies():
    tx = transfer()
    again = SignedTx.from_wire(tx.raw)
    assert again.hash == tx.hash and again.verify_signature()
    assert again.kind == "transfer" and again.sender == KEY.public_key and again.nonce == 0


def test_a_tampered_body_fails_signature_verification():
    tx = transfer()
    body = dict(tx.body)
    body["amount"] = 10**9
    forged = SignedTx.from_wire(codec.encode({"sig": tx.sig, "tx": codec.encode(body)}))
    assert not forged.verify_signature()


@pytest.mark.parametrize(
    "envelope",
    [
        {"sig": b"x" * 64},
        {"sig": b"x" * 63, "tx": codec.encode({"chain": "c", "kind": "k", "from": b"k" * 32, "nonce": 0})},
        {"sig": b"x" * 64, "tx": codec.encode({"chain": "c", "kind": "k", "from": b"k" * 31, "nonce": 0})},
        {"sig": b"x" * 64, "tx": codec.encode({"chain": "c", "kind": "k", "from": b"k" * 32, "nonce": -1})},
        {"sig": b"x" * 64, "tx": b"\xc1"},
        {"sig": b"x" * 64, "tx": codec.encode({"chain": "c", "kind": "k", "from": b"k" * 32, "nonce": 0}), "x": 1},
    ],
)
def test_malformed_envelopes_are_rejected_with_a_typed_error(envelope):
    with pytest.raises((FieldError, CodecError)):
        SignedTx.from_wire(codec.encode(envelope))


def test_a_from_field_that_does_not_match_the_key_is_refused_at_signing():
    with pytest.raises(FieldError):
        SignedTx.create(KEY, {"chain": "c", "kind": "transfer", "nonce": 0, "from": OTHER.public_key})


def test_a_block_round_trips_and_its_tx_root_is_checked():
    txs = [transfer(i).raw for i in range(3)]
    block = Block.build(chain="test", height=1, parent=GENESIS_PARENT, proposer=KEY.public_key, view=0, time=5,
                        state_root=sha256(b""), results_root=sha256(b"r"), txs=txs)
    assert Block.decode(block.encode()) == block
    assert Block.decode(block.encode()).hash == block.hash
    value = block.to_value()
    value["txs"] = value["txs"][:2]
    with pytest.raises(FieldError):
        Block.from_value(value)


def test_the_merkle_root_depends_on_order_and_content():
    a, b, c = sha256(b"a"), sha256(b"b"), sha256(b"c")
    assert merkle_root([a, b, c]) != merkle_root([b, a, c])
    assert merkle_root([a, b]) != merkle_root([a, b, c])
    assert merkle_root([]) == sha256(b"")


def test_an_envelope_read_on_the_fast_path_equals_the_strictly_decoded_one_for_every_body_size():
    for memo in (0, 1, 200, 300, 60_000):  # bin8, bin16 and bin32 headers of the body
        tx = transfer(memo=b"m" * memo)
        again = SignedTx.from_wire(tx.raw)
        assert again == tx and again.body == tx.body


@pytest.mark.parametrize("tamper", ["wide_header", "trailing", "truncated"])
def test_an_envelope_in_any_but_its_one_canonical_form_is_refused(tamper):
    tx = transfer()
    body = tx.body_bytes
    raw = {"wide_header": b"\x82\xa3sig\xc4\x40" + tx.sig + b"\xa2tx\xc5" + len(body).to_bytes(2, "big") + body,
           "trailing": tx.raw + b"\x00", "truncated": tx.raw[:-1]}[tamper]
    with pytest.raises(CodecError):
        SignedTx.from_wire(raw)
