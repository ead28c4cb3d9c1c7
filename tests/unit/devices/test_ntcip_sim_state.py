"""The simulated sign's message state machine, without a socket: each SET answers exactly as the standard says."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from pysnmp.proto.rfc1902 import Integer, OctetString  # type: ignore[import-untyped]

from devices.drivers.ntcip import mib
from devices.drivers.ntcip.mib import ActivateError, Activation, MemoryType, MessageStatus
from devices.sim.ntcip_sign import (
    GEN_ERR,
    NO_ERROR,
    NOT_WRITABLE,
    WRONG_LENGTH,
    WRONG_TYPE,
    WRONG_VALUE,
    SignState,
)

ROW = (MemoryType.changeable, 1)


@pytest.fixture
def state() -> SignState:
    return SignState(random.Random(1), clock=lambda: 43_200.0, utc_offset_s=0)


def status(state: SignState, value: int, row: tuple[int, int] = ROW) -> tuple[int, int]:
    return state.set_many([(mib.dmsMessageStatus.row(*row), Integer(value))])


def write_text(state: SignState, text: bytes, row: tuple[int, int] = ROW) -> tuple[int, int]:
    return state.set_many([(mib.dmsMessageMultiString.row(*row), OctetString(text))])


def define(state: SignState, text: bytes, priority: int = 128) -> int:
    """Modify, write, validate; returns the row's CRC."""
    assert status(state, MessageStatus.modifyReq) == (NO_ERROR, 0)
    bindings = [
        (mib.dmsMessageMultiString.row(*ROW), OctetString(text)),
        (mib.dmsMessageRunTimePriority.row(*ROW), Integer(priority)),
    ]
    assert state.set_many(bindings) == (NO_ERROR, 0)
    assert status(state, MessageStatus.validateReq) == (NO_ERROR, 0)
    return state.rows[ROW].crc


def activate(state: SignState, code: Activation) -> tuple[int, int]:
    return state.set_many([(mib.dmsActivateMessage.scalar(), OctetString(code.encode()))])


def test_a_defined_and_activated_message_is_shown(state: SignState) -> None:
    crc = define(state, b"HELLO")
    assert state.rows[ROW].status == MessageStatus.valid
    assert crc == mib.message_crc(b"HELLO")
    assert activate(state, Activation(10, 200, *ROW, crc)) == (NO_ERROR, 0)
    snap = state.snapshot()
    assert snap[mib.dmsMsgTableSource.scalar()] == mib.MessageId(*ROW, crc).encode()
    assert snap[mib.dmsMessageMultiString.row(MemoryType.currentBuffer, 1)] == b"HELLO"
    assert snap[mib.dmsActivateMsgError.scalar()] == ActivateError.none
    assert snap[mib.dmsMessageTimeRemaining.scalar()] == 10


def test_the_row_cannot_be_written_unless_it_is_being_modified(state: SignState) -> None:
    assert write_text(state, b"HELLO") == (GEN_ERR, 1)
    assert status(state, MessageStatus.validateReq) == (GEN_ERR, 1)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ((MemoryType.permanent, 1), NOT_WRITABLE),
        ((MemoryType.blank, 1), NOT_WRITABLE),
        ((MemoryType.changeable, 99), NOT_WRITABLE),
    ],
)
def test_only_existing_changeable_rows_are_writable(state: SignState, row: tuple[int, int], expected: int) -> None:
    assert status(state, MessageStatus.modifyReq, row) == (expected, 1)


def test_wrong_types_and_values_are_refused_and_nothing_changes(state: SignState) -> None:
    assert status(state, MessageStatus.modifyReq) == (NO_ERROR, 0)
    # The second binding is wrong: the whole SET is refused (error index 2), the first is not applied.
    bindings = [
        (mib.dmsMessageMultiString.row(*ROW), OctetString(b"NEW")),
        (mib.dmsMessageRunTimePriority.row(*ROW), OctetString(b"high")),
    ]
    assert state.set_many(bindings) == (WRONG_TYPE, 2)
    assert state.rows[ROW].multi == b""
    assert status(state, 42) == (WRONG_VALUE, 1)
    assert state.set_many([(mib.dmsMessageStatus.row(*ROW), OctetString(b"6"))]) == (WRONG_TYPE, 1)
    assert state.set_many([(mib.shortErrorStatus.scalar(), Integer(0))]) == (NOT_WRITABLE, 1)
    assert state.set_many([(mib.dmsActivateMessage.scalar(), OctetString(b"\x00" * 5))]) == (WRONG_LENGTH, 1)
    assert state.set_many([(mib.dmsActivateMessage.scalar(), Integer(1))]) == (WRONG_TYPE, 1)


def test_a_bad_multi_string_leaves_the_row_in_error(state: SignState) -> None:
    define(state, b"[zz]NOPE")
    assert state.rows[ROW].status == MessageStatus.error
    snap = state.snapshot()
    assert snap[mib.dmsValidateMessageError.scalar()] == mib.ValidateError.syntaxMULTI
    assert snap[mib.dmsMultiSyntaxError.scalar()] == mib.MultiSyntaxError.unsupportedTag


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"memory_type": MemoryType.currentBuffer}, ActivateError.messageMemoryType),
        ({"memory_type": 42}, ActivateError.messageMemoryType),
        ({"number": 77}, ActivateError.messageNumber),
        ({"crc": 0x1234}, ActivateError.messageCRC),
    ],
)
def test_activation_refusals_name_the_reason(state: SignState, change: dict[str, Any], expected: ActivateError) -> None:
    crc = define(state, b"HELLO")
    code = dataclasses.replace(Activation(5, 200, ROW[0], ROW[1], crc), **change)
    assert activate(state, code) == (GEN_ERR, 1)
    assert state.snapshot()[mib.dmsActivateMsgError.scalar()] == expected
    assert state.active.memory_type == MemoryType.permanent  # still the old message


def test_a_row_not_valid_cannot_be_activated(state: SignState) -> None:
    crc = define(state, b"HELLO")
    assert status(state, MessageStatus.modifyReq) == (NO_ERROR, 0)  # being edited again
    assert activate(state, Activation(5, 200, *ROW, crc)) == (GEN_ERR, 1)
    assert state.activate_error == ActivateError.messageStatus


def test_editing_the_shown_row_does_not_change_the_display(state: SignState) -> None:
    crc = define(state, b"FIRST")
    assert activate(state, Activation(mib.DURATION_INFINITE, 200, *ROW, crc)) == (NO_ERROR, 0)
    assert status(state, MessageStatus.modifyReq) == (NO_ERROR, 0)
    assert write_text(state, b"DRAFT") == (NO_ERROR, 0)
    assert state.current.multi == b"FIRST"
    assert state.snapshot()[mib.dmsMessageMultiString.row(MemoryType.currentBuffer, 1)] == b"FIRST"


def test_not_used_req_clears_the_row(state: SignState) -> None:
    define(state, b"HELLO")
    assert status(state, MessageStatus.notUsedReq) == (NO_ERROR, 0)
    assert state.rows[ROW].status == MessageStatus.notUsed
    assert state.rows[ROW].multi == b""


def test_control_mode_is_writable_within_its_enumeration(state: SignState) -> None:
    assert state.set_many([(mib.dmsControlMode.scalar(), Integer(mib.ControlMode.local))]) == (NO_ERROR, 0)
    assert state.snapshot()[mib.dmsControlMode.scalar()] == mib.ControlMode.local
    assert state.set_many([(mib.dmsControlMode.scalar(), Integer(99))]) == (WRONG_VALUE, 1)


def test_temperatures_wander_but_stay_plausible(state: SignState) -> None:
    seen = []
    for _ in range(200):
        state.tick()
        seen.append(state.snapshot()[mib.tempMaxCtrlCabinet.scalar()])
    assert len(set(seen)) > 1, "noise moves the values"
    assert all(isinstance(v, int) and 30 <= v <= 50 for v in seen)
