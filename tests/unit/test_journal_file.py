"""The accepted-tx journal file: framing at its limits and one byte over, torn and corrupt tails cut, a file
that is not a journal refused, compaction keeping exactly what a replay keeps."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.journal import (
    FILE_NAME,
    FRAME_HEADER,
    MAGIC,
    MAX_RECORD,
    Dropped,
    JournalCorrupt,
    JournalFile,
    add_record,
    committed_record,
    dropped_record,
    frame,
)

H1, H2, H3 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def _journal(tmp_path: Path) -> JournalFile:
    j = JournalFile(tmp_path / "journal")
    j.open()
    return j


def _reopen(tmp_path: Path) -> JournalFile:
    return JournalFile(tmp_path / "journal")


def test_a_new_journal_holds_only_its_header_and_replays_empty(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.close()
    assert (tmp_path / "journal" / FILE_NAME).read_bytes() == MAGIC
    r = _reopen(tmp_path).replay()
    assert not r.live and not r.dropped and r.cut_bytes == 0


def test_a_record_of_exactly_the_largest_size_is_written_and_replayed(tmp_path: Path) -> None:
    raw = b"x" * (MAX_RECORD - 33)
    assert len(add_record(H1, raw)) == MAX_RECORD
    j = _journal(tmp_path)
    j.append([add_record(H1, raw)], sync=True)
    j.close()
    assert _reopen(tmp_path).replay().live == {H1: raw}


def test_a_record_one_byte_over_the_largest_size_is_refused_when_written(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    with pytest.raises(ValueError):
        j.append([add_record(H1, b"x" * (MAX_RECORD - 32))], sync=True)
    with pytest.raises(ValueError):
        frame(b"")
    j.close()
    assert (tmp_path / "journal" / FILE_NAME).read_bytes() == MAGIC  # nothing of it was written


def test_a_frame_claiming_one_byte_over_the_largest_record_is_cut_as_too_large(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.append([add_record(H1, b"tx-1")], sync=True)
    j.close()
    path = tmp_path / "journal" / FILE_NAME
    good = path.stat().st_size
    with path.open("ab") as f:
        f.write(struct.pack(">II", MAX_RECORD + 1, 0) + b"y" * 64)
    j = _reopen(tmp_path)
    r = j.open()
    j.close()
    assert r.live == {H1: b"tx-1"}
    assert (r.cut_reason, r.file_bytes, r.cut_bytes) == ("too_large", good, FRAME_HEADER.size + 64)
    assert path.stat().st_size == good  # the tail is gone from the disk too


@pytest.mark.parametrize(("cut", "reason"), [(3, "truncated"), (FRAME_HEADER.size + 2, "truncated")])
def test_a_torn_last_frame_is_cut_and_the_frames_before_it_are_kept(tmp_path: Path, cut: int, reason: str) -> None:
    j = _journal(tmp_path)
    j.append([add_record(H1, b"tx-1"), add_record(H2, b"tx-2")], sync=True)
    j.close()
    path = tmp_path / "journal" / FILE_NAME
    data = path.read_bytes()
    last = len(data) - (FRAME_HEADER.size + 33 + 4)
    path.write_bytes(data[:last + cut])
    r = _reopen(tmp_path).open()
    assert r.live == {H1: b"tx-1"} and (r.cut_reason, r.cut_bytes) == (reason, cut)


def test_a_flipped_byte_fails_the_crc_and_that_frame_and_all_after_it_are_cut(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.append([add_record(H1, b"tx-1"), add_record(H2, b"tx-2"), add_record(H3, b"tx-3")], sync=True)
    j.close()
    path = tmp_path / "journal" / FILE_NAME
    data = bytearray(path.read_bytes())
    second = len(MAGIC) + FRAME_HEADER.size + 37
    data[second + FRAME_HEADER.size + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    r = _reopen(tmp_path).open()
    assert r.live == {H1: b"tx-1"} and r.cut_reason == "bad_crc" and r.file_bytes == second


def test_a_zero_length_frame_is_cut(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.close()
    path = tmp_path / "journal" / FILE_NAME
    with path.open("ab") as f:
        f.write(struct.pack(">II", 0, zlib.crc32(b"")))
    assert _reopen(tmp_path).open().cut_reason == "empty_record"


def test_a_file_that_does_not_start_with_the_journal_header_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "journal" / FILE_NAME
    path.parent.mkdir()
    path.write_bytes(b"not a journal at all")
    with pytest.raises(JournalCorrupt) as err:
        _reopen(tmp_path).open()
    assert str(path) in err.value.message and err.value.code == "journal_corrupt"
    assert path.read_bytes() == b"not a journal at all"


def test_a_crc_valid_record_of_an_unknown_kind_is_refused_not_cut(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.append([b"Z" + H1], sync=True)
    j.close()
    with pytest.raises(JournalCorrupt, match="kind"):
        _reopen(tmp_path).open()


def test_committed_and_dropped_records_close_an_accepted_tx_and_a_drop_keeps_its_reason(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.append([add_record(H1, b"tx-1"), add_record(H2, b"tx-2"), add_record(H3, b"tx-3"),
              committed_record(H1), dropped_record(H2, Dropped("expired", 1234))], sync=True)
    j.close()
    r = _reopen(tmp_path).replay()
    assert r.live == {H3: b"tx-3"} and r.dropped == {H2: Dropped("expired", 1234)}


def test_a_drop_reason_longer_than_64_characters_is_refused() -> None:
    dropped_record(H1, Dropped("r" * 64, 0))
    with pytest.raises(ValueError):
        dropped_record(H1, Dropped("r" * 65, 0))


def test_a_rewrite_keeps_exactly_the_given_records_and_later_appends_follow_them(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.append([add_record(H1, b"tx-1"), committed_record(H1), add_record(H2, b"tx-2")], sync=True)
    size = j.rewrite(iter([add_record(H2, b"tx-2")]))
    j.append([add_record(H3, b"tx-3")], sync=True)
    j.close()
    assert size == len(MAGIC) + FRAME_HEADER.size + 37
    assert _reopen(tmp_path).replay().live == {H2: b"tx-2", H3: b"tx-3"}
    assert not os.path.exists(tmp_path / "journal" / "accepted.tmp")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=8), st.data())
def test_a_journal_cut_at_any_byte_replays_exactly_the_whole_frames_before_the_cut(
        tmp_path_factory: pytest.TempPathFactory, raws: list[bytes], data: st.DataObject) -> None:
    tmp = tmp_path_factory.mktemp("j")
    hashes = [i.to_bytes(32, "big") for i in range(len(raws))]
    j = _journal(tmp)
    j.append([add_record(h, r) for h, r in zip(hashes, raws, strict=True)], sync=True)
    j.close()
    path = tmp / "journal" / FILE_NAME
    whole = path.read_bytes()
    cut = data.draw(st.integers(len(MAGIC), len(whole)))
    path.write_bytes(whole[:cut])
    ends, pos = [], len(MAGIC)
    for r in raws:
        pos += FRAME_HEADER.size + 33 + len(r)
        ends.append(pos)
    kept = [i for i, end in enumerate(ends) if end <= cut]
    replayed = _reopen(tmp).replay()
    assert list(replayed.live) == [hashes[i] for i in kept]
    assert replayed.cut_bytes == cut - (ends[kept[-1]] if kept else len(MAGIC))


def test_a_journal_torn_inside_its_header_is_started_anew(tmp_path: Path) -> None:
    path = tmp_path / "journal" / FILE_NAME
    path.parent.mkdir()
    path.write_bytes(MAGIC[:3])  # a crash while the file was being created
    r = _reopen(tmp_path).open()
    assert not r.live and path.read_bytes() == MAGIC
