"""Is it a JPEG, and how large is its picture: read from the file's own markers, never by decoding the image.

A snapshot's bytes come from a gateway, so they are hostile until checked. A JPEG (ITU-T T.81, Annex B) is a
sequence of marker segments: SOI (``FF D8``) first, then segments ``FF xx`` each with a two-byte big-endian
length that counts itself, a frame header SOFn giving the picture's height and width, the scan (SOS) whose
entropy-coded data runs to the end, and EOI (``FF D9``) last. The walk below stops at the first SOS: the frame
header comes before it in every JPEG (B.2.1), and nothing after it is needed to know the size. Every length is
checked against the bytes there are, so a crafted file cannot make it read past the end or loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

SOI: Final = b"\xff\xd8"
EOI: Final = b"\xff\xd9"
#: Start-of-frame markers (T.81 Table B.1): baseline, extended, progressive and lossless, Huffman or arithmetic.
#: C4 (DHT), C8 (JPG, reserved) and CC (DAC) share the range but are not frame headers.
_SOF: Final = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_SOS: Final = 0xDA
#: Markers without a length: RSTn, TEM (T.81 Table B.1).
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})
#: The smallest and largest side a camera's snapshot may have, in pixels. A sub-stream frame is 320 to 1920
#: pixels wide; 8K is 7680x4320. A 1x1 "image" or a 60000-pixel side is not a camera's picture.
MIN_SIDE: Final = 16
MAX_SIDE: Final = 8192


class NotAJpeg(ValueError):
    """The bytes are not a JPEG whose picture size can be read, or the size is absurd. The message says why."""


@dataclass(frozen=True, slots=True)
class JpegInfo:
    width: int
    height: int


def jpeg_info(data: bytes, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE) -> JpegInfo:
    """The picture size of the JPEG ``data``; raise :class:`NotAJpeg` naming what is wrong."""
    if not data.startswith(SOI):
        raise NotAJpeg(f"does not start with the JPEG SOI marker FF D8 (starts with {data[:2].hex(' ') or 'nothing'})")
    if not data.endswith(EOI):
        raise NotAJpeg(f"does not end with the JPEG EOI marker FF D9 (ends with {data[-2:].hex(' ')})")
    found: JpegInfo | None = None
    for pos, marker, length in _segments(data):
        if marker in _SOF:
            if found is not None:
                raise NotAJpeg(f"a second frame header (FF {marker:02X}) at byte {pos}")
            if length < 8:
                raise NotAJpeg(f"frame header at byte {pos} is {length} bytes, too short for a picture size")
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            if not (min_side <= width <= max_side and min_side <= height <= max_side):
                raise NotAJpeg(f"picture of {width}x{height} pixels: each side must be {min_side} to {max_side}")
            found = JpegInfo(width, height)
        elif marker == _SOS:
            if found is None:
                raise NotAJpeg(f"scan (SOS) at byte {pos} before any frame header (SOFn)")
            return found
    raise AssertionError("unreachable: _segments ends by raising")  # pragma: no cover


def _segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """``(position, marker, length)`` of each marker segment after SOI, until the caller stops; raise
    :class:`NotAJpeg` where the data is not a sequence of segments (or ends before the caller stopped)."""
    size = len(data)
    pos = 2
    while True:
        if pos + 2 > size:
            raise NotAJpeg(f"ends at byte {pos} before a scan (SOS) begins")
        if data[pos] != 0xFF:
            raise NotAJpeg(f"byte {pos} is 0x{data[pos]:02x} where a marker (FF xx) should begin")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker (B.1.1.2)
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in {0xD8, 0xD9, 0x00}:
            raise NotAJpeg(f"marker FF {marker:02X} at byte {pos} where a segment should be")
        if pos + 4 > size:
            raise NotAJpeg(f"segment FF {marker:02X} at byte {pos} has no length")
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > size:
            raise NotAJpeg(f"segment FF {marker:02X} at byte {pos} claims {length} bytes, past the end of the data")
        yield pos, marker, length
        pos += 2 + length
