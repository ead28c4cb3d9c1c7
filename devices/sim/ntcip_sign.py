"""The simulated NTCIP 1203 sign itself: message table, state machine and moving signals, without SNMP.

:class:`SignState` holds what a sign knows and answers (``snapshot()``: every object instance with its value)
and applies SETs the way NTCIP 1203 v03 clauses 5.6/5.7 describe (``set_many``: all-or-nothing, an SNMP
error-status and index on refusal). The agent in :mod:`devices.sim.ntcip` puts it on the wire.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from pysnmp.proto import api  # type: ignore[import-untyped]

from devices.drivers.ntcip import mib
from devices.drivers.ntcip.mib import ActivateError, Activation, MemoryType, MessageId, MessageStatus, ValidateError

Oid = tuple[int, ...]
Value = int | bytes

_V2C: Final = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]

#: SNMPv2 error-status values (RFC 3416 section 3).
NO_ERROR: Final = 0
TOO_BIG: Final = 1
GEN_ERR: Final = 5
WRONG_TYPE: Final = 7
WRONG_LENGTH: Final = 8
WRONG_VALUE: Final = 10
NOT_WRITABLE: Final = 17

MULTI_NONE: Final = int(mib.MultiSyntaxError.none)
MULTI_UNSUPPORTED_TAG: Final = int(mib.MultiSyntaxError.unsupportedTag)
MULTI_TEXT_TOO_BIG: Final = int(mib.MultiSyntaxError.textTooBig)

#: Longest MULTI string the simulated sign accepts (its ``dmsMaxSupportedLength``).
MAX_MULTI_LENGTH: Final = 500
#: Changeable message rows (``dmsMaxChangeableMsg``).
CHANGEABLE_ROWS: Final = 10
#: MULTI tags the simulated sign knows (NTCIP 1203 v03 clause 6): new line/page, justification, font, colours,
#: flashing, page times, spacing. Anything else is ``unsupportedTag``.
_TAG_RE: Final = re.compile(
    r"^(nl\d*|np|jl[1-5]|jp[1-4]|fo\d+(,[0-9a-fA-F]{4})?|cf\d+(,\d+,\d+)?|cb\d+(,\d+,\d+)?|"
    r"pb\d+(,\d+,\d+)?|fl(t\d+o\d+|o\d+t\d+)?|/fl|pt\d+(o\d+)?|sc\d+|/sc)$",
    re.IGNORECASE,
)
DEFAULT_MESSAGE: Final = b"[jl3]DRIVE SAFELY"


def validate_multi(multi: bytes) -> int:
    """``dmsMultiSyntaxError`` of a MULTI string: ``none`` (2) if the simulated sign can show it."""
    if len(multi) > MAX_MULTI_LENGTH:
        return MULTI_TEXT_TOO_BIG
    try:
        text = multi.decode("ascii")
    except UnicodeDecodeError:
        return MULTI_UNSUPPORTED_TAG
    i = 0
    while i < len(text):
        ch = text[i]
        if text.startswith(("[[", "]]"), i):  # escaped brackets
            i += 2
            continue
        if ch == "]":
            return MULTI_UNSUPPORTED_TAG
        if ch == "[":
            end = text.find("]", i)
            if end < 0 or not _TAG_RE.match(text[i + 1 : end]):
                return MULTI_UNSUPPORTED_TAG
            i = end + 1
            continue
        if not 32 <= ord(ch) < 127:
            return MULTI_UNSUPPORTED_TAG
        i += 1
    return MULTI_NONE


@dataclass
class MessageRow:
    """One row of ``dmsMessageTable``."""

    multi: bytes = b""
    owner: bytes = b""
    priority: int = 3
    beacon: int = 0
    pixel_service: int = 0
    status: MessageStatus = MessageStatus.notUsed
    crc: int = 0

    def validate(self) -> int:
        """Run validation; returns ``dmsMultiSyntaxError`` and leaves the row ``valid`` or ``error``."""
        syntax = validate_multi(self.multi)
        if syntax == MULTI_NONE:
            self.status = MessageStatus.valid
            self.crc = mib.message_crc(self.multi, self.beacon, self.pixel_service)
        else:
            self.status = MessageStatus.error
        return syntax


@dataclass
class SignState:
    """The simulated sign: its message table, the current message and the moving signals."""

    rng: random.Random
    clock: Callable[[], float]
    utc_offset_s: float
    pixel_failure_probability: float = 0.002
    #: Chance per update that one of the two power supplies fails; a failed one comes back with 5 % per update.
    power_failure_probability: float = 0.0005
    rows: dict[tuple[int, int], MessageRow] = field(default_factory=dict)
    active: MessageId = field(default_factory=lambda: MessageId(MemoryType.permanent, 1, 0))
    #: What the sign shows: a copy taken at activation (the currentBuffer), so editing the row it came from
    #: does not change the display.
    current: MessageRow = field(default_factory=MessageRow)
    expires_at: float | None = None
    control_mode: int = mib.ControlMode.central
    activate_error: int = ActivateError.none
    validate_error: int = ValidateError.none
    multi_syntax_error: int = MULTI_NONE
    pixel_failures: int = 0
    #: dmsPowerFailureStatusMap: bit n set = power supply n failed (this sign has two).
    power_failure_map: int = 0
    watchdog_failures: int = 0
    noise: dict[str, float] = field(default_factory=dict)
    sign_volts: int = 2400  # hundredths of a volt: a 24 V supply
    pinned: dict[Oid, Value] = field(default_factory=dict)
    removed: set[Oid] = field(default_factory=set)

    def __post_init__(self) -> None:
        permanent = MessageRow(DEFAULT_MESSAGE, b"factory", priority=1)
        permanent.validate()
        self.rows[(MemoryType.permanent, 1)] = permanent
        blank = MessageRow(b"", b"", priority=1)
        blank.validate()
        self.rows[(MemoryType.blank, 1)] = blank
        for number in range(1, CHANGEABLE_ROWS + 1):
            self.rows[(MemoryType.changeable, number)] = MessageRow()
        self.active = MessageId(MemoryType.permanent, 1, permanent.crc)
        self.current = dataclasses.replace(permanent)
        self.tick()

    # --- signals -------------------------------------------------------------------------------------------
    def daylight(self) -> float:
        """0 at night, 1 at local noon: a half sine between 06:00 and 18:00 of the simulated local time."""
        hour = ((self.clock() + self.utc_offset_s) % 86_400) / 3600
        return max(0.0, math.sin(math.pi * (hour - 6) / 12))

    def tick(self) -> None:
        """Move the noisy signals one step; now and then a pixel fails, or a power supply (for a while)."""
        for name in ("ambient", "cabinet", "housing"):
            previous = self.noise.get(name, 0.0)
            self.noise[name] = max(-1.5, min(1.5, previous + self.rng.uniform(-0.3, 0.3)))
        self.sign_volts = 2400 + self.rng.randint(-20, 20)
        if self.rng.random() < self.pixel_failure_probability:
            self.pixel_failures += 1
        if self.power_failure_map and self.rng.random() < 0.05:
            self.power_failure_map = 0
        elif self.rng.random() < self.power_failure_probability:
            self.power_failure_map |= 1 << self.rng.randrange(2)
        if self.expires_at is not None and self.clock() >= self.expires_at:
            # dmsEndDurationMessage: the simulated sign blanks when an activation's duration runs out.
            self.expires_at = None
            blank = self.rows[(MemoryType.blank, 1)]
            self.active = MessageId(MemoryType.blank, 1, blank.crc)
            self.current = dataclasses.replace(blank)

    def temperatures(self) -> dict[str, float]:
        light = self.daylight()
        ambient = 26.0 + 7.0 * light + self.noise.get("ambient", 0.0)
        return {
            "ambient": ambient,
            "cabinet": ambient + 6.0 + self.noise.get("cabinet", 0.0),
            "housing": ambient + 4.0 + 14.0 * light + self.noise.get("housing", 0.0),
        }

    def short_error_status(self) -> int:
        bits = 0
        if self.power_failure_map:
            bits |= 1 << 2  # power error
        if self.pixel_failures:
            bits |= 1 << 5  # pixel error
        if self.temperatures()["housing"] >= 60:
            bits |= 1 << 9  # temperature warning
        return bits

    # --- the object values ---------------------------------------------------------------------------------
    def snapshot(self) -> dict[Oid, Value]:
        """Every object instance with its current value."""
        light = self.daylight()
        levels = 16
        temps = self.temperatures()
        remaining = 0
        if self.expires_at is not None:
            remaining = max(0, math.ceil((self.expires_at - self.clock()) / 60))
        elif self.active.memory_type != MemoryType.blank:
            remaining = mib.DURATION_INFINITE
        values: dict[Oid, Value] = {
            mib.dmsSignType.scalar(): int(mib.SignType.vmsFull),
            mib.dmsNumChangeableMsg.scalar(): sum(
                1
                for (mt, _), r in self.rows.items()
                if mt == MemoryType.changeable and r.status != MessageStatus.notUsed
            ),
            mib.dmsMaxChangeableMsg.scalar(): CHANGEABLE_ROWS,
            mib.dmsValidateMessageError.scalar(): int(self.validate_error),
            mib.dmsControlMode.scalar(): int(self.control_mode),
            mib.dmsActivateMessage.scalar(): Activation(0, 0, 0, 0, 0).encode(),
            mib.dmsMessageTimeRemaining.scalar(): remaining,
            mib.dmsMsgTableSource.scalar(): self.active.encode(),
            mib.dmsActivateMsgError.scalar(): int(self.activate_error),
            mib.dmsMultiSyntaxError.scalar(): self.multi_syntax_error,
            mib.dmsIllumControl.scalar(): int(mib.IllumControl.photocell),
            mib.dmsIllumMaxPhotocellLevel.scalar(): 1000,
            mib.dmsIllumPhotocellLevelStatus.scalar(): round(1000 * light),
            mib.dmsIllumNumBrightLevels.scalar(): levels,
            mib.dmsIllumBrightLevelStatus.scalar(): 1 + round(light * (levels - 1)),
            mib.dmsIllumLightOutputStatus.scalar(): round(65535 * (0.15 + 0.85 * light)),
            mib.watchdogFailureCount.scalar(): self.watchdog_failures,
            mib.dmsStatDoorOpen.scalar(): 0,
            mib.shortErrorStatus.scalar(): self.short_error_status(),
            mib.pixelFailureTableNumRows.scalar(): self.pixel_failures,
            mib.controllerErrorStatus.scalar(): 0,
            mib.dmsPowerFailureStatusMap.scalar(): bytes((self.power_failure_map,)),
            mib.signVolts.scalar(): self.sign_volts,
            mib.tempMinCtrlCabinet.scalar(): math.floor(temps["cabinet"] - 0.5),
            mib.tempMaxCtrlCabinet.scalar(): math.ceil(temps["cabinet"] + 0.5),
            mib.tempMinAmbient.scalar(): math.floor(temps["ambient"]),
            mib.tempMaxAmbient.scalar(): math.ceil(temps["ambient"]),
            mib.tempMinSignHousing.scalar(): math.floor(temps["housing"] - 1),
            mib.tempMaxSignHousing.scalar(): math.ceil(temps["housing"] + 1),
        }
        table = {**self.rows, (MemoryType.currentBuffer, 1): self.current}
        for (mt, number), row in table.items():
            values[mib.dmsMessageMultiString.row(mt, number)] = row.multi
            values[mib.dmsMessageOwner.row(mt, number)] = row.owner
            values[mib.dmsMessageCRC.row(mt, number)] = row.crc
            values[mib.dmsMessageBeacon.row(mt, number)] = row.beacon
            values[mib.dmsMessagePixelService.row(mt, number)] = row.pixel_service
            values[mib.dmsMessageRunTimePriority.row(mt, number)] = row.priority
            values[mib.dmsMessageStatus.row(mt, number)] = int(row.status)
        values.update(self.pinned)
        for oid in self.removed:
            values.pop(oid, None)
        return values

    # --- writing -------------------------------------------------------------------------------------------
    def set_many(self, bindings: list[tuple[Oid, Any]]) -> tuple[int, int]:
        """Apply a SET atomically: check every binding first, then apply. Returns (error status, index)."""
        actions: list[Callable[[], int]] = []
        for index, (oid, value) in enumerate(bindings, start=1):
            outcome = self._plan_set(oid, value)
            if isinstance(outcome, int):
                return outcome, index
            actions.append(outcome)
        for index, action in enumerate(actions, start=1):
            status = action()
            if status != NO_ERROR:
                return status, index
        return NO_ERROR, 0

    def _plan_set(self, oid: Oid, value: Any) -> int | Callable[[], int]:  # noqa: PLR0911 - one branch per object
        column, index = oid[:-2], oid[-2:]
        is_int = _is_integer(value)
        is_octets = _is_octets(value)
        if column == mib.dmsMessageStatus.oid:
            row = self._writable_row(index)
            if row is None:
                return NOT_WRITABLE
            if not is_int:
                return WRONG_TYPE
            return functools.partial(self._set_status, row, int(value))
        row_columns: dict[Oid, str] = {
            mib.dmsMessageMultiString.oid: "multi",
            mib.dmsMessageOwner.oid: "owner",
            mib.dmsMessageRunTimePriority.oid: "priority",
            mib.dmsMessageBeacon.oid: "beacon",
            mib.dmsMessagePixelService.oid: "pixel_service",
        }
        if column in row_columns:
            row = self._writable_row(index)
            if row is None:
                return NOT_WRITABLE
            attr = row_columns[column]
            wants_octets = attr in ("multi", "owner")
            if (wants_octets and not is_octets) or (not wants_octets and not is_int):
                return WRONG_TYPE
            python_value: Value = bytes(value) if wants_octets else int(value)
            return functools.partial(self._set_row_value, row, attr, python_value)
        if oid == mib.dmsActivateMessage.scalar():
            if not is_octets:
                return WRONG_TYPE
            raw = bytes(value)
            if len(raw) != 12:
                return WRONG_LENGTH
            return functools.partial(self._activate, Activation.decode(raw))
        if oid == mib.dmsControlMode.scalar():
            if not is_int:
                return WRONG_TYPE
            if int(value) not in {m.value for m in mib.ControlMode}:
                return WRONG_VALUE
            return functools.partial(self._set_control_mode, int(value))
        return NOT_WRITABLE

    def _writable_row(self, index: Oid) -> MessageRow | None:
        if len(index) != 2 or index[0] not in (MemoryType.changeable, MemoryType.volatile):
            return None
        return self.rows.get((index[0], index[1]))

    def _set_status(self, row: MessageRow, value: int) -> int:
        if value == MessageStatus.modifyReq:
            if row.status == MessageStatus.validating:
                return GEN_ERR
            row.status = MessageStatus.modifying
            return NO_ERROR
        if value == MessageStatus.validateReq:
            if row.status != MessageStatus.modifying:
                return GEN_ERR
            self.multi_syntax_error = row.validate()
            ok = self.multi_syntax_error == MULTI_NONE
            self.validate_error = ValidateError.none if ok else ValidateError.syntaxMULTI
            return NO_ERROR
        if value == MessageStatus.notUsedReq:
            row.multi, row.owner, row.crc, row.status = b"", b"", 0, MessageStatus.notUsed
            return NO_ERROR
        return WRONG_VALUE

    @staticmethod
    def _set_row_value(row: MessageRow, attr: str, value: Value) -> int:
        # Columns of a row can only be written while it is being modified (clause 5.6, dmsMessageStatus).
        if row.status != MessageStatus.modifying:
            return GEN_ERR
        setattr(row, attr, value)
        return NO_ERROR

    def _set_control_mode(self, value: int) -> int:
        self.control_mode = value
        return NO_ERROR

    def _activate(self, code: Activation) -> int:
        """``dmsActivateMessage``: checks in the order of clause 5.7; a refusal is genErr + dmsActivateMsgError."""
        error = self._activation_error(code)
        self.activate_error = error
        if error != ActivateError.none:
            return GEN_ERR
        self.active = MessageId(code.memory_type, code.number, code.crc)
        self.current = dataclasses.replace(self.rows[(code.memory_type, code.number)])
        duration = code.duration_min
        self.expires_at = None if duration == mib.DURATION_INFINITE else self.clock() + 60 * duration
        return NO_ERROR

    def _activation_error(self, code: Activation) -> ActivateError:  # noqa: PLR0911 - one return per check
        if self.control_mode not in (mib.ControlMode.central, mib.ControlMode.centralOverride):
            return ActivateError.localMode
        if code.memory_type not in (MemoryType.permanent, MemoryType.changeable, MemoryType.volatile, MemoryType.blank):
            return ActivateError.messageMemoryType
        row = self.rows.get((code.memory_type, code.number))
        if row is None:
            return ActivateError.messageNumber
        if row.status != MessageStatus.valid:
            return ActivateError.messageStatus
        if row.crc != code.crc:
            return ActivateError.messageCRC
        if self.active.memory_type != MemoryType.blank and code.priority < self.current.priority:
            return ActivateError.priority
        return ActivateError.none


def _is_integer(value: Any) -> bool:
    return bool(value.tagSet == _V2C.Integer.tagSet) if hasattr(value, "tagSet") else isinstance(value, int)


def _is_octets(value: Any) -> bool:
    return bool(value.tagSet == _V2C.OctetString.tagSet) if hasattr(value, "tagSet") else isinstance(value, bytes)
