"""The write overlay: reads see writes, savepoints revert exactly, iteration merges in key order."""

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.state import MemoryState, Overlay


def test_reverting_a_savepoint_restores_the_values_before_it():
    base = MemoryState({b"a": b"1"})
    ov = Overlay(base)
    ov.put(b"b", b"2")
    sp = ov.savepoint()
    ov.put(b"a", b"9")
    ov.delete(b"b")
    ov.put(b"c", b"3")
    ov.revert(sp)
    assert ov.get(b"a") == b"1" and ov.get(b"b") == b"2" and ov.get(b"c") is None
    assert ov.changes() == {b"b": b"2"}


def test_released_nested_savepoints_fold_into_the_outer_one():
    ov = Overlay(MemoryState())
    outer = ov.savepoint()
    inner = ov.savepoint()
    ov.put(b"k", b"v")
    ov.release(inner)
    ov.revert(outer)
    assert ov.get(b"k") is None


keys = st.binary(min_size=1, max_size=3)


@given(st.dictionaries(keys, st.binary(max_size=3)), st.lists(st.tuples(keys, st.none() | st.binary(max_size=3))))
@settings(max_examples=200)
def test_merged_iteration_equals_iterating_the_applied_result(base_items, writes):
    base = MemoryState(base_items)
    ov = Overlay(base)
    expected = MemoryState(base_items)
    for k, v in writes:
        if v is None:
            ov.delete(k)
        else:
            ov.put(k, v)
        expected.apply({k: v})
    assert list(ov.iter_range(b"", b"\xff\xff\xff\xff")) == expected.items()
    assert list(ov.iter_range(b"\x10", b"\x80")) == [kv for kv in expected.items() if b"\x10" <= kv[0] < b"\x80"]
