"""The hub's JPEG check (hub/snapshots/jpeg.py): a table of crafted marker sequences, each refused with what is
wrong, and real ffmpeg JPEGs whose size it reads."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.snapshots.jpeg import MAX_SIDE, MIN_SIDE, JpegInfo, NotAJpeg, jpeg_info


def segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body


def sof(width: int, height: int, marker: int = 0xC0) -> bytes:
    # precision 8, height, width, 1 component (id 1, sampling 0x11, table 0)
    return segment(marker, b"\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big") + b"\x01\x01\x11\x00")


APP0 = segment(0xE0, b"JFIF\x00\x01\x02\x00\x00\x01\x00\x01\x00\x00")
DQT = segment(0xDB, b"\x00" + bytes(range(64)))
SOS = segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
SCAN = b"\x12\x34\xff\x00\x56"  # entropy-coded data, a stuffed FF 00 in it
SOI, EOI = b"\xff\xd8", b"\xff\xd9"


def jpeg(*segments: bytes) -> bytes:
    return SOI + b"".join(segments) + EOI


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (jpeg(APP0, DQT, sof(640, 360), SOS, SCAN), JpegInfo(640, 360)),
        (jpeg(sof(1920, 1080, 0xC2), SOS), JpegInfo(1920, 1080)),  # progressive
        (jpeg(APP0, b"\xff\xff\xff", sof(MIN_SIDE, MAX_SIDE), SOS), JpegInfo(MIN_SIDE, MAX_SIDE)),  # fill bytes
        (jpeg(segment(0xC4, b"\x00" * 17), sof(320, 180, 0xC1), SOS), JpegInfo(320, 180)),  # DHT is not a frame
    ],
)
def test_the_picture_size_is_read_from_the_frame_header(data: bytes, expected: JpegInfo) -> None:
    assert jpeg_info(data) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "does not start with the JPEG SOI marker FF D8 (starts with nothing)"),
        (b"GIF89a" + b"\x00" * 20, "does not start with the JPEG SOI marker FF D8 (starts with 47 49)"),
        (b"\x89PNG\r\n\x1a\n", "does not start with the JPEG SOI marker"),
        (SOI + APP0 + sof(640, 360) + SOS, "does not end with the JPEG EOI marker FF D9 (ends with "),
        (SOI + EOI, "marker FF D9 at byte 2 where a segment should be"),
        (SOI + b"\xff" + EOI, "marker FF D9 at byte 3 where a segment should be"),  # after a fill byte
        (SOI + b"\xff\xe0\x00\x04\xaa" + EOI, "ends at byte 8 before a scan (SOS) begins"),  # takes half the EOI
        (jpeg(APP0, SOS), "scan (SOS) at byte 20 before any frame header (SOFn)"),
        (jpeg(APP0), "marker FF D9 at byte 20 where a segment should be"),  # EOI before any scan
        (jpeg(APP0, b"\x00\x00"), "byte 20 is 0x00 where a marker (FF xx) should begin"),
        (SOI + b"\xff\xe0\x7f\xff" + EOI, "segment FF E0 at byte 2 claims 32767 bytes, past the end of the data"),
        (SOI + b"\xff\xe0\x00\x01" + EOI, "segment FF E0 at byte 2 claims 1 bytes"),
        (SOI + b"\xff\xd8" + EOI, "marker FF D8 at byte 2 where a segment should be"),
        (jpeg(sof(0, 360), SOS), "picture of 0x360 pixels: each side must be 16 to 8192"),
        (jpeg(sof(640, 0), SOS), "picture of 640x0 pixels"),
        (jpeg(sof(65_535, 65_535), SOS), "picture of 65535x65535 pixels"),
        (jpeg(sof(8, 8), SOS), "picture of 8x8 pixels"),
        (jpeg(sof(640, 360), sof(640, 360), SOS), "a second frame header (FF C0) at byte 15"),
        (jpeg(segment(0xC0, b"\x08\x01"), SOS), "frame header at byte 2 is 4 bytes, too short for a picture size"),
    ],
)
def test_what_is_not_a_sane_jpeg_is_refused_naming_why(data: bytes, message: str) -> None:
    with pytest.raises(NotAJpeg) as info:
        jpeg_info(data)
    assert message in str(info.value)


def test_the_sides_are_the_callers() -> None:
    data = jpeg(sof(640, 360), SOS)
    with pytest.raises(NotAJpeg, match="each side must be 1 to 600"):
        jpeg_info(data, 1, 600)
    assert jpeg_info(data, 360, 640) == JpegInfo(640, 360)


@given(st.binary(max_size=300))
def test_any_bytes_are_a_size_or_a_refusal_never_a_crash(data: bytes) -> None:
    for candidate in (data, SOI + data, SOI + data + EOI):
        try:
            info = jpeg_info(candidate)
        except NotAJpeg:
            continue
        assert MIN_SIDE <= info.width <= MAX_SIDE
        assert MIN_SIDE <= info.height <= MAX_SIDE


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
@pytest.mark.parametrize(("width", "height"), [(320, 180), (640, 360), (1280, 720)])
def test_real_jpegs_from_ffmpeg(width: int, height: int) -> None:
    data = subprocess.run(
        [
            *("ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc2=s={width}x{height}", "-frames:v", "1"),
            *("-q:v", "5", "-f", "image2pipe", "-c:v", "mjpeg", "-"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    assert jpeg_info(data) == JpegInfo(width, height)
    with pytest.raises(NotAJpeg, match="does not end with the JPEG EOI marker"):
        jpeg_info(data[:-1])
