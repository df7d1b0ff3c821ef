"""Canonical codec: what it accepts, what it rejects, and with which error code."""

import msgpack
import pytest

from protocol import codec
from protocol.errors import (
    ExtNotAllowed,
    FloatNotAllowed,
    MalformedEncoding,
    NonCanonicalEncoding,
    TooDeep,
    TooLarge,
    UnsupportedType,
)


def test_maps_are_encoded_with_keys_sorted_whatever_the_insertion_order():
    assert codec.encode({"b": 1, "a": 2}) == codec.encode({"a": 2, "b": 1})
    assert codec.decode(codec.encode({"b": 1, "a": 2})) == {"a": 2, "b": 1}


def test_unsorted_map_keys_are_rejected_as_non_canonical():
    with pytest.raises(NonCanonicalEncoding) as e:
        codec.decode(msgpack.packb({"b": 1, "a": 2}))
    assert e.value.code == "non_canonical"


def test_wide_integer_encodings_are_rejected_as_non_canonical():
    with pytest.raises(NonCanonicalEncoding):
        codec.decode(b"\xd1\x00\x01")  # int16 holding 1


def test_duplicate_map_keys_are_rejected():
    with pytest.raises(NonCanonicalEncoding):
        codec.decode(b"\x82\xa1a\x01\xa1a\x02")


def test_floats_are_refused_on_both_sides():
    with pytest.raises(FloatNotAllowed):
        codec.encode({"amount": 1.5})
    with pytest.raises(FloatNotAllowed) as e:
        codec.decode(msgpack.packb(1.5))
    assert e.value.code == "float_not_allowed"


def test_ext_types_are_refused():
    with pytest.raises(ExtNotAllowed):
        codec.decode(msgpack.packb(msgpack.ExtType(5, b"xx")))


def test_non_string_map_keys_are_refused():
    with pytest.raises(UnsupportedType):
        codec.encode({1: 2})
    with pytest.raises(MalformedEncoding):
        codec.decode(msgpack.packb({1: 2}))


def test_nesting_beyond_the_depth_limit_is_refused():
    value: object = 1
    for _ in range(40):
        value = [value]
    with pytest.raises(TooDeep):
        codec.decode(msgpack.packb(value))


def test_input_over_the_byte_limit_is_refused_before_parsing():
    with pytest.raises(TooLarge):
        codec.decode(b"\xc4\x05hello", codec.Limits(max_bytes=4))


def test_strings_longer_than_the_limit_are_refused():
    with pytest.raises(TooLarge):
        codec.decode(codec.encode("x" * 100), codec.Limits(max_str=10))


def test_trailing_bytes_and_garbage_are_malformed():
    with pytest.raises(MalformedEncoding):
        codec.decode(codec.encode(1) + b"\x00")
    with pytest.raises(MalformedEncoding):
        codec.decode(b"\xc1")
    with pytest.raises(MalformedEncoding):
        codec.decode(b"")


def test_str_and_bin_are_distinct_types_after_a_round_trip():
    assert codec.decode(codec.encode([b"ab", "ab"])) == [b"ab", "ab"]


def test_invalid_utf8_in_a_string_is_malformed():
    with pytest.raises(MalformedEncoding):
        codec.decode(b"\xa2\xff\xfe")
