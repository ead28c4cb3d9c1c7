"""Register codecs: raw Modbus registers <-> engineering values, built once per register.

Modbus moves 16-bit registers, each sent high byte first. How a device lays a wider or signed value over them
varies, so each register in a profile states its ``byte_order`` (inside each register) and ``word_order``
(which register holds the high half of a 32-bit value). Big/big is "ABCD", the Modbus convention and the
Eastron layout; word-swapped is "CDAB"; byte-swapped is "BADC"; both is "DCBA".

:func:`make_codec` turns those settings into a pair of closures with every :class:`struct.Struct`, index and
divisor precomputed, so decoding a polled value is a pack, an unpack and one arithmetic step. The simulator
uses the same codecs in reverse (:attr:`RegisterCodec.encode`), so both ends agree by construction.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from devices.driver import MetricValue
from devices.profile import TYPE_WIDTH, Order, RegisterSpec, RegisterType

#: A decoder reads the value starting at ``offset`` of a response's registers (or bits). ``None`` means the
#: device sent a value that is not a number (a float32 NaN or infinity): the metric is left out of the reading.
Decoder = Callable[[Sequence[int], int], MetricValue | None]
#: An encoder turns an engineering value into the registers (or the single bit) that carry it.
Encoder = Callable[[MetricValue], list[int] | list[bool]]

_VALUE_FORMAT: Final[dict[str, str]] = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f"}


@dataclass(frozen=True, slots=True)
class RegisterCodec:
    """How one register's value is read from and written to the wire."""

    width: int
    decode: Decoder
    encode: Encoder


def _divisor_for(scale: float) -> float | None:
    """``10.0`` for ``scale=0.1``: dividing by 10 gives 23.4 where multiplying by 0.1 gives 23.400000000000002."""
    if abs(scale) >= 1:
        return None
    inverse = 1 / scale
    rounded = round(inverse)
    if rounded != 0 and math.isclose(inverse, rounded, rel_tol=1e-12):
        return float(rounded)
    return None


def make_bool_codec() -> RegisterCodec:
    """A coil or discrete input: one bit, read as it is."""

    def decode(bits: Sequence[int], offset: int) -> MetricValue:
        return bool(bits[offset])

    def encode(value: MetricValue) -> list[bool]:
        return [bool(value)]

    return RegisterCodec(width=1, decode=decode, encode=encode)


def make_codec(
    type_: RegisterType,
    byte_order: Order = "big",
    word_order: Order = "big",
    scale: float = 1.0,
    offset: float = 0.0,
) -> RegisterCodec:
    """Build the codec of one register. Values are ``raw * scale + offset`` as floats."""
    if type_ == "bool":
        return make_bool_codec()
    if scale == 0:
        raise ValueError("scale must not be 0")
    scale, offset = float(scale), float(offset)  # so every value comes out a float, whatever the caller passed
    width = TYPE_WIDTH[type_]
    fmt = _VALUE_FORMAT[type_]
    value_struct = struct.Struct(">" + fmt)
    # Packing each register with the device's byte order, in the device's word order, yields the value's bytes
    # most significant first; the value is then always unpacked big-endian.
    words_struct = struct.Struct(("<" if byte_order == "little" else ">") + "H" * width)
    order = tuple(range(width)) if word_order == "big" else tuple(reversed(range(width)))
    is_float = type_ == "float32"
    divisor = _divisor_for(scale)

    def to_value(raw: float) -> float:
        if divisor is not None:
            return raw / divisor + offset
        return raw * scale + offset

    def to_raw(value: float) -> float:
        return (value - offset) * divisor if divisor is not None else (value - offset) / scale

    pack_words = words_struct.pack
    unpack_value = value_struct.unpack

    if width == 1:

        def decode_one(regs: Sequence[int], at: int) -> MetricValue | None:
            return to_value(unpack_value(pack_words(regs[at]))[0])

        decode: Decoder = decode_one
    else:
        first, second = order

        def decode_two(regs: Sequence[int], at: int) -> MetricValue | None:
            raw = unpack_value(pack_words(regs[at + first], regs[at + second]))[0]
            if is_float and not math.isfinite(raw):
                return None
            return to_value(raw)

        decode = decode_two

    def encode(value: MetricValue) -> list[int]:
        if isinstance(value, str):
            raise TypeError(f"a {type_} register cannot hold the string {value!r}")
        raw_f = to_raw(float(value))
        raw: float | int = raw_f if is_float else round(raw_f)
        try:
            packed = value_struct.pack(raw)
        except (struct.error, OverflowError) as exc:
            raise ValueError(f"{value!r} is out of range for {type_} with scale {scale} and offset {offset}") from exc
        words = words_struct.unpack(packed)
        regs = [0] * width
        for k, position in enumerate(order):
            regs[position] = words[k]
        return regs

    return RegisterCodec(width=width, decode=decode, encode=encode)


def codec_for(register: RegisterSpec) -> RegisterCodec:
    """The codec of a profile register."""
    return make_codec(register.type, register.byte_order, register.word_order, register.scale, register.offset)
