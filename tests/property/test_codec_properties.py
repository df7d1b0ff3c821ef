"""Property tests: the canonical codec round-trips every encodable value and never crashes on garbage."""

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.errors import CodecError

scalars = st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text(max_size=20) | st.binary(max_size=20)
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids, max_size=5), max_leaves=30)


@given(values)
@settings(max_examples=300)
def test_every_encodable_value_round_trips_to_the_same_bytes(value):
    data = codec.encode(value)
    assert codec.encode(codec.decode(data)) == data


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_arbitrary_bytes_either_decode_canonically_or_raise_a_codec_error(data):
    try:
        value = codec.decode(data)
    except CodecError:
        return
    assert codec.encode(value) == data
