"""Codec cases: known wire layouts for every type, byte and word order, and round trips through both ends."""

from __future__ import annotations

import itertools
import math
import struct

import pytest

from devices.drivers.modbus.codec import make_codec

# (type, byte_order, word_order, scale, offset, engineering value, registers on the wire)
LAYOUTS = [
    ("uint16", "big", "big", 1, 0, 513.0, [0x0201]),
    ("uint16", "little", "big", 1, 0, 513.0, [0x0102]),
    ("uint16", "big", "big", 1, 0, 65535.0, [0xFFFF]),
    ("int16", "big", "big", 1, 0, -2.0, [0xFFFE]),
    ("int16", "little", "big", 1, 0, -2.0, [0xFEFF]),
    ("int16", "big", "big", 1, 0, -32768.0, [0x8000]),
    ("int16", "big", "big", 0.1, 0, -12.3, [0xFF85]),
    ("int16", "big", "big", 0.1, -40, 25.0, [650]),
    ("uint16", "big", "big", 0.001, 0, 1.234, [1234]),
    ("int32", "big", "big", 1, 0, 16909060.0, [0x0102, 0x0304]),  # ABCD
    ("int32", "big", "little", 1, 0, 16909060.0, [0x0304, 0x0102]),  # CDAB
    ("int32", "little", "big", 1, 0, 16909060.0, [0x0201, 0x0403]),  # BADC
    ("int32", "little", "little", 1, 0, 16909060.0, [0x0403, 0x0201]),  # DCBA
    ("int32", "big", "big", 1, 0, -2.0, [0xFFFF, 0xFFFE]),
    ("int32", "big", "little", 1, 0, -2.0, [0xFFFE, 0xFFFF]),
    ("int32", "big", "little", 0.01, 0, -1234567.89, [0x32EB, 0xF8A4]),  # raw -123456789 = 0xF8A432EB
    ("uint32", "big", "big", 1, 0, 4_000_000_000.0, [0xEE6B, 0x2800]),
    ("uint32", "big", "little", 0.1, 0, 400_000_000.0, [0x2800, 0xEE6B]),
    ("float32", "big", "big", 1, 0, 230.0, [0x4366, 0x0000]),  # Eastron layout
    ("float32", "big", "little", 1, 0, 230.0, [0x0000, 0x4366]),
    ("float32", "little", "big", 1, 0, 230.0, [0x6643, 0x0000]),
    ("float32", "little", "little", 1, 0, 230.0, [0x0000, 0x6643]),
    ("float32", "big", "little", 1, 0, -1.5, [0x0000, 0xBFC0]),
    ("float32", "big", "big", 1000, 0, 1500.0, [0x3FC0, 0x0000]),  # kW register read as W
]


@pytest.mark.parametrize(
    ("type_", "byte_order", "word_order", "scale", "offset", "value", "registers"),
    LAYOUTS,
    ids=[f"{t}-{b}-{w}-x{s}+{o}={v}" for t, b, w, s, o, v, _ in LAYOUTS],
)
def test_known_layouts_decode_and_encode(
    type_: str, byte_order: str, word_order: str, scale: float, offset: float, value: float, registers: list[int]
) -> None:
    codec = make_codec(type_, byte_order, word_order, scale, offset)  # type: ignore[arg-type]
    assert codec.width == len(registers)
    decoded = codec.decode(registers, 0)
    assert isinstance(decoded, float)
    assert decoded == value
    assert codec.encode(value) == registers
    # The same value further into a longer answer, as a merged request delivers it.
    padded = [0xAAAA, 0xBBBB, *registers, 0xCCCC]
    assert codec.decode(padded, 2) == value


VALUES: dict[str, list[float]] = {
    "int16": [0, 1, -1, 32767, -32768, -300],
    "uint16": [0, 1, 65535, 40000],
    "int32": [0, -1, 2**31 - 1, -(2**31), 70000, -70000],
    "uint32": [0, 1, 2**32 - 1, 70000],
    "float32": [0.0, -0.5, 230.25, -(2.0**-10), 2.0**127, float(struct.unpack(">f", struct.pack(">f", 0.1))[0])],
}
ORDERS = list(itertools.product(["big", "little"], ["big", "little"]))


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@pytest.mark.parametrize("type_", sorted(VALUES))
def test_round_trip_every_type_and_order(type_: str, byte_order: str, word_order: str) -> None:
    codec = make_codec(type_, byte_order, word_order)  # type: ignore[arg-type]
    for value in VALUES[type_]:
        regs = codec.encode(value)
        assert len(regs) == codec.width
        assert all(0 <= r <= 0xFFFF for r in regs)
        assert codec.decode(regs, 0) == value, (type_, byte_order, word_order, value, regs)


@pytest.mark.parametrize("type_", ["int16", "int32"])
@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
def test_scaled_negative_values_round_trip_exactly(type_: str, byte_order: str, word_order: str) -> None:
    codec = make_codec(type_, byte_order, word_order, scale=0.1, offset=0)  # type: ignore[arg-type]
    for value in (-0.1, -12.3, -273.1, 99.9):
        assert codec.decode(codec.encode(value), 0) == value


def test_word_order_matters_for_32_bit_values() -> None:
    big = make_codec("float32", "big", "big")
    swapped = make_codec("float32", "big", "little")
    regs = big.encode(230.0)
    assert swapped.decode(regs, 0) != 230.0
    assert swapped.decode(list(reversed(regs)), 0) == 230.0


@pytest.mark.parametrize(
    ("type_", "value"),
    [("int16", 32768), ("int16", -32769), ("uint16", -1), ("uint16", 65536), ("int32", 2**31), ("uint32", -1)],
)
def test_values_out_of_range_are_refused(type_: str, value: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        make_codec(type_).encode(value)  # type: ignore[arg-type]


def test_scaled_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        make_codec("int16", scale=0.1).encode(3276.8)


@pytest.mark.parametrize("registers", [[0x7FC0, 0x0000], [0x7F80, 0x0000], [0xFF80, 0x0000]])
def test_non_finite_float32_decodes_to_none(registers: list[int]) -> None:
    assert make_codec("float32").decode(registers, 0) is None


def test_scale_below_one_divides_so_decimals_are_exact() -> None:
    assert make_codec("uint16", scale=0.1).decode([234], 0) == 23.4
    assert 234 * 0.1 != 23.4  # why the codec divides
    assert make_codec("uint16", scale=0.01).decode([1999], 0) == 19.99
    odd = make_codec("uint16", scale=0.3).decode([10], 0)
    assert isinstance(odd, float)
    assert math.isclose(odd, 3.0)


def test_bool_codec() -> None:
    codec = make_codec("bool")
    assert codec.width == 1
    assert codec.decode([False, True, False], 1) is True
    assert codec.decode([False, True, False], 2) is False
    assert codec.encode(True) == [True]
    assert codec.encode(False) == [False]


def test_zero_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="scale"):
        make_codec("uint16", scale=0)


def test_strings_cannot_be_encoded() -> None:
    with pytest.raises(TypeError):
        make_codec("uint16").encode("12")
