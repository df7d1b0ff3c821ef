"""Sans-I/O framing: any chunking of the stream yields the same frames; oversized frames are refused early."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import FrameTooLarge
from protocol.framing import FrameReader, frame


@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(min_value=0, max_value=2**32))
@settings(max_examples=200)
def test_frames_survive_arbitrary_chunking_of_the_stream(payloads, seed):
    stream = b"".join(frame(p) for p in payloads)
    rng = random.Random(seed)
    reader = FrameReader()
    out = []
    i = 0
    while i < len(stream):
        n = rng.randint(1, 64)
        out.extend(reader.feed(stream[i : i + n]))
        i += n
    assert out == payloads
    assert reader.buffered == 0


def test_a_frame_header_announcing_more_than_the_limit_is_refused_before_buffering():
    reader = FrameReader(max_frame=1024)
    with pytest.raises(FrameTooLarge):
        reader.feed((10_000).to_bytes(4, "big") + b"x")
    assert reader.buffered < 1024


def test_sending_a_frame_over_the_limit_is_refused():
    with pytest.raises(FrameTooLarge):
        frame(b"x" * 11, max_frame=10)
