"""Sans-I/O pieces of the P2P layer: the sealed channel, the envelope and the handshake messages."""

from __future__ import annotations

import pytest

from node.p2p.channel import OVERHEAD, SecureChannel, derive_key
from node.p2p.errors import ChannelError
from protocol import codec
from protocol.errors import CodecError, FieldError
from protocol.messages import (
    KNOWN_TYPES,
    SESSION_TYPES,
    Envelope,
    Hello,
    Txs,
    encode_envelope,
    envelope_limits,
    handshake_transcript,
)

SHARED = bytes(range(32))
TH = bytes(32)


def pair() -> tuple[SecureChannel, SecureChannel]:
    return SecureChannel.from_secret(SHARED, TH, True), SecureChannel.from_secret(SHARED, TH, False)


def test_a_sealed_frame_opens_on_the_other_side_in_both_directions() -> None:
    i, r = pair()
    assert r.open(i.seal(b"hello")) == b"hello"
    assert i.open(r.seal(b"back")) == b"back"
    assert len(i.seal(b"x")) == 1 + OVERHEAD


def test_the_two_directions_use_different_keys() -> None:
    assert derive_key(SHARED, TH, b"sml-p2p-i2r") != derive_key(SHARED, TH, b"sml-p2p-r2i")
    i, _ = pair()
    with pytest.raises(ChannelError) as err:
        i.open(i.seal(b"reflected"))  # a frame reflected back at its sender does not authenticate
    assert err.value.reason == "decrypt_failed"


def test_a_replayed_counter_is_rejected() -> None:
    i, r = pair()
    f = i.seal(b"one")
    r.open(f)
    with pytest.raises(ChannelError) as err:
        r.open(f)
    assert err.value.reason == "replayed_counter"


def test_an_out_of_order_counter_is_rejected() -> None:
    i, r = pair()
    i.seal(b"skipped")
    with pytest.raises(ChannelError) as err:
        r.open(i.seal(b"two"))
    assert err.value.reason == "counter_gap"


def test_a_tampered_frame_is_rejected_and_does_not_advance_the_counter() -> None:
    i, r = pair()
    f = bytearray(i.seal(b"payload"))
    f[-1] ^= 1
    with pytest.raises(ChannelError):
        r.open(bytes(f))
    assert r.received == 0
    with pytest.raises(ChannelError) as err:
        r.open(b"short")
    assert err.value.reason == "short_frame"


def test_the_envelope_round_trips_and_rejects_unknown_or_extra_fields() -> None:
    payload = encode_envelope("txs", Txs(txs=(b"a", b"b"), also=()).to_value())
    env = Envelope.decode(payload, envelope_limits(1 << 20), SESSION_TYPES)
    assert env.type == "txs" and Txs.from_value(env.body).txs == (b"a", b"b")
    with pytest.raises(FieldError) as err:
        Envelope.decode(encode_envelope("nope", {}), envelope_limits(1 << 20), KNOWN_TYPES)
    assert err.value.code == "unknown_type"
    with pytest.raises(FieldError):
        Envelope.decode(encode_envelope("hello", {}), envelope_limits(1 << 20), SESSION_TYPES)
    with pytest.raises(FieldError):
        Envelope.decode(codec.encode({"t": "ping", "b": {}, "x": 1}), envelope_limits(1 << 20))
    with pytest.raises(CodecError):
        Envelope.decode(b"\xc1garbage", envelope_limits(1 << 20))


def test_a_txs_batch_rejects_non_bytes_items_and_malformed_peer_keys() -> None:
    with pytest.raises(FieldError):
        Txs.from_value({"txs": [1], "also": []})
    with pytest.raises(FieldError):
        Txs.from_value({"txs": [b"x"], "also": [b"short"]})
    with pytest.raises(FieldError):
        Txs.from_value({"txs": [b"x"]})


def test_the_transcript_binds_the_chain_and_both_sides_keys() -> None:
    a = Hello(1, "c", b"\x01" * 32, b"\x02" * 32)
    b = Hello(1, "c", b"\x03" * 32, b"\x04" * 32)
    base = handshake_transcript("c", 1, a, b)
    assert base != handshake_transcript("d", 1, a, b)
    assert base != handshake_transcript("c", 1, b, a)
    assert base != handshake_transcript("c", 2, a, b)
    assert Hello.from_value(a.to_value()) == a


def test_the_collectors_expose_p2p_and_mempool_counters_to_a_registry() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from node.mempool import Mempool
    from node.p2p import P2P
    from protocol.crypto import PrivateKey

    key = PrivateKey(b"\x01" * 32)
    p2p = P2P(key, "c", validators=[key.public_key])
    pool = Mempool("c", lambda _s: 0)
    try:
        reg = CollectorRegistry()
        reg.register(p2p.collector())
        reg.register(pool.collector())
        p2p.stats.rejected_frames["replayed_counter"] += 1
        pool.stats.rejected["mempool_full"] += 2
        text = generate_latest(reg).decode()
        assert 'smeledger_p2p_rejected_frames_total{reason="replayed_counter"} 1.0' in text
        assert 'smeledger_mempool_rejected_total{code="mempool_full"} 2.0' in text
        assert "smeledger_p2p_frames_in_total 0.0" in text and "smeledger_mempool_txs 0.0" in text
    finally:
        pool.close()
