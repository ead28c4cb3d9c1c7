"""The NTCIP 1203 driver: a variable message sign polled over SNMPv2c, and ``display_message`` as its command.

Readings are declared as a table (:data:`METRICS`: metric, object, value function), planned at load into GET
requests of at most ``max_objects_per_request`` objects, and logged once. A poll runs those GETs, then one more
for the MULTI string of the message ``dmsMsgTableSource`` names. Objects a sign does not implement
(``noSuchObject``/``noSuchInstance``) or answers with the wrong type are left out of the reading and logged once;
the two the reading cannot do without (``shortErrorStatus``, ``dmsMsgTableSource``) make the poll fail.

SNMP goes through :class:`~devices.drivers.ntcip.snmp.SnmpClient`, the one place pysnmp is called and its
errors are translated (no answer -> :class:`DeviceUnavailable`; an error-status, a wrong type -> a
:class:`DeviceResponseError` naming the object). Here: a required object missing or a malformed
``dmsMsgTableSource`` -> :class:`DeviceResponseError`.

Writing a message follows the dialogs of NTCIP 1203 v03 ("defining a message", "activating a message"),
simplified where the standard leaves room: it always writes the one changeable row ``message_number`` (no search
for a free row, no ``dmsMemoryMgmt``), writes the MULTI string, owner and run-time priority in one SET, leaves
beacon and pixel service at 0, and sends source address 0.0.0.0 in the activation code.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pysnmp.proto import rfc1902  # type: ignore[import-untyped]

from devices.driver import MetricValue, Reading, now_ms
from devices.drivers.ntcip import mib
from devices.drivers.ntcip.config import NtcipConfig
from devices.drivers.ntcip.mib import ActivateError, Activation, MemoryType, MessageId, MessageStatus, MibObject
from devices.drivers.ntcip.snmp import Raw, SnmpClient, SnmpErrorStatus
from devices.errors import DeviceResponseError, UnsupportedCommand
from devices.profile import Profile

log = logging.getLogger(__name__)


#: How often, and how long apart, ``dmsMessageStatus`` is read while the sign is still ``validating``.
VALIDATE_POLLS: Final = 10
VALIDATE_PAUSE_S: Final = 0.2
ACTION_DISPLAY_MESSAGE: Final = "display_message"
_MULTI_TOKEN: Final = re.compile(r"\[\[|\]\]|\[([^\]]*)\]")


def multi_to_text(multi: str) -> str:
    """The words a MULTI string shows: tags dropped, a new line as a space, a new page as `` | ``."""

    def tag(match: re.Match[str]) -> str:
        if match.group(1) is None:  # an escaped bracket: [[ or ]]
            return match.group(0)[0]
        name = match.group(1).lower()
        if name == "np":
            return " | "
        if name.startswith("nl"):
            return " "
        return ""

    text = _MULTI_TOKEN.sub(tag, multi)
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric of a reading: the object it comes from and how its raw value becomes the metric."""

    metric: str
    obj: MibObject
    value: Callable[[Any], MetricValue] = int  # dmsMsgTableSource is decoded apart (it is several metrics)
    required: bool = False


def _percent_of_65535(raw: int) -> float:
    return round(raw * 100 / 65535, 1)


def _bitmap_count(raw: bytes) -> int:
    return sum(b.bit_count() for b in raw)


#: What a poll reads. Temperatures are whole degrees Celsius; signVolts is in hundredths of a volt.
METRICS: Final[tuple[MetricSpec, ...]] = (
    MetricSpec("short_error_status", mib.shortErrorStatus, required=True),
    MetricSpec("message_source", mib.dmsMsgTableSource, required=True),
    MetricSpec("sign_type", mib.dmsSignType),
    MetricSpec("control_mode", mib.dmsControlMode),
    MetricSpec("message_time_remaining_min", mib.dmsMessageTimeRemaining),
    MetricSpec("illum_control", mib.dmsIllumControl),
    MetricSpec("brightness_level", mib.dmsIllumBrightLevelStatus),
    MetricSpec("brightness_levels", mib.dmsIllumNumBrightLevels),
    MetricSpec("light_output_pct", mib.dmsIllumLightOutputStatus, _percent_of_65535),
    MetricSpec("photocell_level", mib.dmsIllumPhotocellLevelStatus),
    MetricSpec("pixel_failures", mib.pixelFailureTableNumRows),
    MetricSpec("controller_error_status", mib.controllerErrorStatus),
    MetricSpec("power_failures", mib.dmsPowerFailureStatusMap, _bitmap_count),
    MetricSpec("sign_volts", mib.signVolts, lambda raw: raw / 100),
    MetricSpec("watchdog_failures", mib.watchdogFailureCount),
    MetricSpec("door_open", mib.dmsStatDoorOpen),
    MetricSpec("temp_cabinet_min_c", mib.tempMinCtrlCabinet),
    MetricSpec("temp_cabinet_max_c", mib.tempMaxCtrlCabinet),
    MetricSpec("temp_ambient_min_c", mib.tempMinAmbient),
    MetricSpec("temp_ambient_max_c", mib.tempMaxAmbient),
    MetricSpec("temp_housing_min_c", mib.tempMinSignHousing),
    MetricSpec("temp_housing_max_c", mib.tempMaxSignHousing),
)


def _plan(specs: Sequence[MetricSpec], per_request: int) -> tuple[tuple[MetricSpec, ...], ...]:
    return tuple(tuple(specs[i : i + per_request]) for i in range(0, len(specs), per_request))


class NtcipDriver:
    """Polls one NTCIP 1203 sign; writes messages on it when a write community is configured."""

    def __init__(self, config: NtcipConfig, profile: Profile | None = None) -> None:
        self.config = config
        self.profile = profile
        self.where = f"ntcip {config.host}:{config.port}"
        self._requests = _plan(METRICS, config.max_objects_per_request)
        self._optional = frozenset(spec.obj.name for spec in METRICS if not spec.required)
        self._write_lock = asyncio.Lock()
        write = config.write_community.get_secret_value() if config.write_community is not None else None
        self._snmp = SnmpClient(
            self.where,
            config.host,
            config.port,
            community=config.community,
            write_community=write,
            timeout_s=config.timeout_s,
            retries=config.retries,
        )
        log.info(
            "%s: %d objects in %d GETs per poll, then the current MULTI string",
            self.where,
            len(METRICS),
            len(self._requests),
        )
        for line in self.describe_plan():
            log.info("%s:   %s", self.where, line)

    # --- the Driver protocol -------------------------------------------------------------------------------
    def describe_plan(self) -> list[str]:
        """One line per GET of a poll."""
        lines = [f"GET {', '.join(spec.obj.name for spec in request)}" for request in self._requests]
        lines.append("GET dmsMessageMultiString.5.1 (currentBuffer; else the row dmsMsgTableSource names)")
        return lines

    async def open(self) -> None:
        """Prepare the SNMP engine and resolve the address (UDP: nothing is sent yet)."""
        await self._snmp.open()

    async def close(self) -> None:
        """Close the engine's socket. Never raises."""
        await self._snmp.close()

    async def poll(self) -> list[Reading]:
        """Read the sign once."""
        await self.open()
        ts_ms = now_ms()
        raw: dict[str, Raw] = {}
        for request in self._requests:
            raw.update(await self._snmp.get([spec.obj for spec in request], optional=self._optional))
        missing = [spec.obj.name for spec in METRICS if spec.required and spec.obj.name not in raw]
        if missing:
            raise DeviceResponseError(f"{self.where}: the sign does not support {', '.join(missing)}")
        metrics: dict[str, MetricValue] = {}
        for spec in METRICS:
            if spec.obj.name in raw and spec.obj is not mib.dmsMsgTableSource:  # decoded below
                metrics[spec.metric] = spec.value(raw[spec.obj.name])
        short_error = int(raw[mib.shortErrorStatus.name])
        metrics.update(mib.decode_short_error_status(short_error))
        metrics.update(await self._current_message(bytes(raw[mib.dmsMsgTableSource.name])))
        return [Reading(ts_ms=ts_ms, metrics=metrics)]

    # --- the command ---------------------------------------------------------------------------------------
    def supported_actions(self) -> frozenset[str]:
        return frozenset({ACTION_DISPLAY_MESSAGE}) if self.config.write_community is not None else frozenset()

    async def execute(self, action: str, params: Mapping[str, MetricValue]) -> str:
        """Run ``display_message`` (params ``text``, optional ``priority``, ``duration`` in minutes)."""
        if action not in self.supported_actions():
            why = "" if self.config.write_community is not None else " (no write_community configured)"
            raise UnsupportedCommand(f"{self.where}: action {action!r} is not supported{why}")
        text, priority, duration = self._message_params(params)
        await self.open()
        async with self._write_lock:
            return await self._display(text, priority, duration)

    def _message_params(self, params: Mapping[str, MetricValue]) -> tuple[bytes, int, int]:
        unknown = sorted(set(params) - {"text", "priority", "duration"})
        if unknown:
            raise UnsupportedCommand(f"{self.where}: display_message: unknown param(s) {', '.join(unknown)}")
        text = params.get("text")
        if not isinstance(text, str):
            raise UnsupportedCommand(f"{self.where}: display_message: param 'text' (a MULTI string) is required")
        if any(not 32 <= ord(ch) < 127 for ch in text):
            raise UnsupportedCommand(
                f"{self.where}: display_message: param 'text' must be printable ASCII (MULTI), got {text!r}"
            )
        if len(text) > self.config.max_message_length:
            raise UnsupportedCommand(
                f"{self.where}: display_message: param 'text' is {len(text)} characters, "
                f"longer than max_message_length {self.config.max_message_length}"
            )
        priority = self._int_param(params, "priority", self.config.default_priority, 1, 255)
        duration = self._int_param(params, "duration", self.config.default_duration_min, 0, mib.DURATION_INFINITE)
        return text.encode("ascii"), priority, duration

    def _int_param(self, params: Mapping[str, MetricValue], name: str, default: int, lo: int, hi: int) -> int:
        value = params.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise UnsupportedCommand(
                f"{self.where}: display_message: param {name!r} must be an integer {lo}..{hi}, not {value!r}"
            )
        return value

    async def _display(self, multi: bytes, priority: int, duration: int) -> str:
        number = self.config.message_number
        row = (MemoryType.changeable, number)
        where = f"changeable message {number}"
        # Defining a message: modifyReq, write the row, validateReq, wait for valid, read the CRC back.
        await self._snmp.set([(mib.dmsMessageStatus.row(*row), rfc1902.Integer(MessageStatus.modifyReq))])
        await self._snmp.set(
            [
                (mib.dmsMessageMultiString.row(*row), rfc1902.OctetString(multi)),
                (mib.dmsMessageOwner.row(*row), rfc1902.OctetString(self.config.owner.encode())),
                (mib.dmsMessageRunTimePriority.row(*row), rfc1902.Integer(priority)),
            ]
        )
        await self._snmp.set([(mib.dmsMessageStatus.row(*row), rfc1902.Integer(MessageStatus.validateReq))])
        status, crc = await self._validated(row)
        if status == MessageStatus.error:
            errors = await self._snmp.get((mib.dmsValidateMessageError, mib.dmsMultiSyntaxError))
            reason = _enum_name(mib.ValidateError, errors.get(mib.dmsValidateMessageError.name))
            syntax = _enum_name(mib.MultiSyntaxError, errors.get(mib.dmsMultiSyntaxError.name))
            raise DeviceResponseError(
                f"{self.where}: the sign refused the text of {where}: {reason}, MULTI syntax error {syntax}"
            )
        if status != MessageStatus.valid:
            raise DeviceResponseError(f"{self.where}: {where} is {_enum_name(MessageStatus, status)}, not valid")
        # Activating it: the activation code quotes the CRC the sign computed.
        code = Activation(duration, priority, MemoryType.changeable, number, crc)
        try:
            await self._snmp.set([(mib.dmsActivateMessage.scalar(), rfc1902.OctetString(code.encode()))])
        except SnmpErrorStatus as exc:
            errors = await self._snmp.get((mib.dmsActivateMsgError,))
            reason = _enum_name(ActivateError, errors.get("dmsActivateMsgError"))
            raise DeviceResponseError(f"{self.where}: the sign refused to activate {where}: {reason}") from exc
        shown = await self._snmp.get((mib.dmsMsgTableSource,))
        source = shown.get(mib.dmsMsgTableSource.name)
        expected = MessageId(MemoryType.changeable, number, crc)
        if not isinstance(source, bytes) or source != expected.encode():
            shows = MessageId.decode(source).describe() if isinstance(source, bytes) and len(source) == 5 else "?"
            raise DeviceResponseError(f"{self.where}: after activation the sign shows {shows}, not {where}")
        return f"{where} shown (crc 0x{crc:04x}, priority {priority}, duration {_duration(duration)})"

    async def _validated(self, row: tuple[int, int]) -> tuple[int, int]:
        objects = (mib.dmsMessageStatus, mib.dmsMessageCRC)
        for attempt in range(VALIDATE_POLLS):
            values = await self._snmp.get(objects, index=row)
            status = int(values.get(mib.dmsMessageStatus.name, 0))
            if status != MessageStatus.validating:
                return status, int(values.get(mib.dmsMessageCRC.name, 0))
            if attempt + 1 < VALIDATE_POLLS:
                await asyncio.sleep(VALIDATE_PAUSE_S)
        raise DeviceResponseError(f"{self.where}: the sign is still validating changeable message {row[1]}")

    async def _current_message(self, source_code: bytes) -> dict[str, MetricValue]:
        try:
            source = MessageId.decode(source_code)
        except ValueError as exc:
            raise DeviceResponseError(f"{self.where}: dmsMsgTableSource: {exc}") from exc
        metrics: dict[str, MetricValue] = {
            "message_source": source.describe(),
            "message_memory_type": source.memory_type,
            "message_number": source.number,
        }
        # The currentBuffer row holds what is shown (the source row may have been edited since it was
        # activated); a sign that does not serve it is read at the row dmsMsgTableSource names.
        spec = (mib.dmsMessageMultiString,)
        values = await self._snmp.get(spec, index=(MemoryType.currentBuffer, 1), quiet=True)
        if mib.dmsMessageMultiString.name not in values:
            values = await self._snmp.get(spec, index=(source.memory_type, source.number))
        multi = values.get(mib.dmsMessageMultiString.name, b"")
        assert isinstance(multi, bytes)  # checked by SnmpClient.get against the syntax
        text = multi.decode("latin-1")
        metrics["message_multi"] = text
        metrics["message_text"] = multi_to_text(text)
        return metrics

    def __repr__(self) -> str:
        return f"NtcipDriver({self.where})"


def _enum_name(enum_type: Any, value: Raw | None) -> str:
    if not isinstance(value, int):
        return f"unreadable ({value!r})"
    try:
        return f"{enum_type(value).name} ({value})"
    except ValueError:
        return f"unknown ({value})"


def _duration(minutes: int) -> str:
    return "until replaced" if minutes == mib.DURATION_INFINITE else f"{minutes} min"
