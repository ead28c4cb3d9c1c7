"""The on-disk spill: FIFO order, bounds, segments freed when written back, and recovery after a crash."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any

import pytest

from hub.storage.spill import Spill, SpillFull, append_durably


def drain(spill: Spill) -> list[bytes]:
    bodies = []
    while (record := spill.oldest()) is not None:
        bodies.append(record.body)
        spill.commit(record)
    return bodies


def test_batches_come_back_oldest_first_across_segments_and_the_files_go(tmp_path: Path) -> None:
    spill = Spill(tmp_path, max_bytes=1_000_000, segment_bytes=200)
    bodies = [f"m,t=x v={i} {i}".encode() * 5 for i in range(20)]
    for body in bodies:
        spill.append(body, 5)
    assert spill.records == 20
    assert spill.lines == 100
    assert len(list(tmp_path.glob("*.seg"))) > 3
    assert drain(spill) == bodies
    assert spill.empty
    assert spill.size_bytes == 0
    assert list(tmp_path.glob("*.seg")) == []
    spill.append(b"again", 1)  # a fresh segment after everything was written back
    assert drain(spill) == [b"again"]
    spill.close()


def test_a_record_is_only_dropped_on_commit(tmp_path: Path) -> None:
    spill = Spill(tmp_path, max_bytes=10_000)
    spill.append(b"a", 1)
    spill.append(b"b", 1)
    first = spill.oldest()
    assert first is not None
    assert first.body == b"a"
    assert spill.oldest() == first  # not committed: the same again (the write failed, retry it)
    spill.commit(first)
    spill.commit(first)  # a second commit of the same record is ignored
    assert [r.body for r in [spill.oldest()] if r] == [b"b"]
    assert spill.records == 1
    spill.close()


def test_a_full_spill_refuses_and_takes_again_once_written_back(tmp_path: Path) -> None:
    spill = Spill(tmp_path, max_bytes=2048, segment_bytes=1024)
    body = os.urandom(512)  # incompressible
    taken = 0
    while spill.size_bytes + 600 <= 2048:
        spill.append(body, 1)
        taken += 1
    with pytest.raises(SpillFull, match="is full"):
        spill.append(body, 1)
    assert taken >= 2
    assert spill.size_bytes <= 2048
    assert len(drain(spill)) == taken
    spill.append(body, 1)
    spill.close()


def test_after_a_crash_the_kept_batches_are_found_and_a_torn_tail_is_cut(tmp_path: Path) -> None:
    spill = Spill(tmp_path, max_bytes=1_000_000, segment_bytes=100)
    for i in range(5):
        spill.append(f"line {i}".encode(), 1)
    # simulate kill -9 in the middle of an append: half a record at the end of the newest segment
    newest = max(tmp_path.glob("*.seg"))
    with newest.open("ab") as f:
        f.write(b"IOCS\x10\x00\x00\x00half")
    spill.close()  # only to free the file handle; nothing is flushed by it (each append is fsynced)
    again = Spill(tmp_path, max_bytes=1_000_000, segment_bytes=100)
    assert again.records == 5
    assert drain(again) == [f"line {i}".encode() for i in range(5)]
    again.close()


def test_a_partly_written_back_spill_is_written_back_again_from_its_oldest_segment(tmp_path: Path) -> None:
    spill = Spill(tmp_path, max_bytes=1_000_000)
    for i in range(3):
        spill.append(f"line {i}".encode(), 1)
    record = spill.oldest()
    assert record is not None
    spill.commit(record)
    spill.close()
    again = Spill(tmp_path, max_bytes=1_000_000)
    # the position within a segment is not kept: rewriting a point is harmless (same series and time)
    assert drain(again) == [b"line 0", b"line 1", b"line 2"]
    again.close()


def test_an_unusable_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Exception, match=r"spill folder .*file"):
        Spill(blocker / "spill", max_bytes=1000)


def test_a_corrupt_record_in_an_older_segment_skips_the_rest_of_that_segment_only(tmp_path: Path) -> None:
    spill = Spill(tmp_path, max_bytes=1_000_000, segment_bytes=90)
    for i in range(6):
        spill.append(f"batch number {i}".encode(), 1)
    spill.close()
    assert len(list(tmp_path.glob("*.seg"))) == 3  # two records per segment
    oldest = min(tmp_path.glob("*.seg"))
    data = bytearray(oldest.read_bytes())
    data[-3] ^= 0xFF  # flip a bit inside the oldest segment's last record (disk corruption)
    oldest.write_bytes(bytes(data))
    again = Spill(tmp_path, max_bytes=1_000_000, segment_bytes=90)
    bodies = drain(again)
    again.close()
    # The damaged record is cut off at start; every other batch comes back, in order.
    assert bodies == [f"batch number {i}".encode() for i in (0, 2, 3, 4, 5)]


class _DiskFullAfter(io.FileIO):
    """A file whose disk fills up after ``room`` more bytes: a write takes what fits, the next one fails."""

    room = 0

    def write(self, data: Any) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        taken = super().write(bytes(data)[: self.room])
        self.room -= taken
        return taken


def test_an_append_that_fails_on_a_full_disk_leaves_nothing_of_it_behind(tmp_path: Path) -> None:
    path = tmp_path / "segment"
    path.write_bytes(b"whole records")
    with _DiskFullAfter(path, "ab") as f:
        f.room = 5
        with pytest.raises(OSError, match="No space left"):
            append_durably(f, b"a record of 27 bytes, whole", len(b"whole records"))
        assert path.read_bytes() == b"whole records"  # the 5 bytes that fitted are cut off again
        f.room = 100
        assert append_durably(f, b"+next", len(b"whole records")) == len(b"whole records+next")
    assert path.read_bytes() == b"whole records+next"
