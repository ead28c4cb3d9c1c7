"""The NTCIP 1203 driver: a variable message sign polled over SNMPv2c, and ``display_message`` as its command.

Readings are declared as a table (:data:`METRICS`: metric, object, value function), planned at load into GET
requests of at most ``max_objects_per_request`` objects, and logged once. A poll runs those GETs, then one more
for the MULTI string of the message ``dmsMsgTableSource`` names. Objects a sign does not implement
(``noSuchObject``/``noSuchInstance``) or answers with the wrong type are left out of the reading and logged once;
the two the reading cannot do without (``shortErrorStatus``, ``dmsMsgTableSource``) make the poll fail.

Errors are translated here and nowhere else (pysnmp never leaks out):

- no answer within ``timeout_s`` (after ``retries`` re-sends), an address that does not resolve ->
  :class:`DeviceUnavailable`;
- an error-status in the answer (genErr, noSuchName...), a required object of the wrong type or not supported,
  a malformed ``dmsMsgTableSource`` or MULTI string -> :class:`DeviceResponseError` naming the object.

Writing a message follows the dialogs of NTCIP 1203 v03 ("defining a message", "activating a message"),
simplified where the standard leaves room: it always writes the one changeable row ``message_number`` (no search
for a free row, no ``dmsMemoryMgmt``), writes the MULTI string, owner and run-time priority in one SET, leaves
beacon and pixel service at 0, and sends source address 0.0.0.0 in the activation code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pyasn1.type import univ  # type: ignore[import-untyped]
from pysnmp.error import PySnmpError  # type: ignore[import-untyped]
from pysnmp.hlapi.v3arch.asyncio import (  # type: ignore[import-untyped]
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    get_cmd,
    set_cmd,
)
from pysnmp.proto import errind, rfc1902, rfc1905  # type: ignore[import-untyped]

from devices.driver import MetricValue, Reading, now_ms
from devices.drivers.ntcip import mib
from devices.drivers.ntcip.config import NtcipConfig
from devices.drivers.ntcip.mib import ActivateError, Activation, MemoryType, MessageId, MessageStatus, MibObject
from devices.errors import DeviceResponseError, DeviceUnavailable, UnsupportedCommand
from devices.profile import Profile

log = logging.getLogger(__name__)

Oid = tuple[int, ...]
Raw = int | bytes

#: Added to the worst case of pysnmp's own timeout and re-sends, for the outer guard around each request.
TIMEOUT_MARGIN_S: Final = 0.5
#: How often, and how long apart, ``dmsMessageStatus`` is read while the sign is still ``validating``.
VALIDATE_POLLS: Final = 10
VALIDATE_PAUSE_S: Final = 0.2
#: SNMPv2 error-status names (RFC 3416 section 3).
ERROR_STATUS: Final[dict[int, str]] = {
    1: "tooBig",
    2: "noSuchName",
    3: "badValue",
    4: "readOnly",
    5: "genErr",
    6: "noAccess",
    7: "wrongType",
    8: "wrongLength",
    9: "wrongEncoding",
    10: "wrongValue",
    11: "noCreation",
    12: "inconsistentValue",
    13: "resourceUnavailable",
    14: "commitFailed",
    15: "undoFailed",
    16: "authorizationError",
    17: "notWritable",
    18: "inconsistentName",
}
ACTION_DISPLAY_MESSAGE: Final = "display_message"
#: Serialises the building of SnmpEngines in worker threads (see ``NtcipDriver._open``).
_ENGINE_BUILD_LOCK: Final = threading.Lock()


def _build_engine() -> Any:
    with _ENGINE_BUILD_LOCK:
        return SnmpEngine()


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


class SnmpErrorStatus(DeviceResponseError):
    """The sign answered with a non-zero error-status; ``status`` is its number, ``obj`` the object it names."""

    def __init__(self, message: str, status: int, obj: str) -> None:
        super().__init__(message)
        self.status = status
        self.obj = obj


def _plan(specs: Sequence[MetricSpec], per_request: int) -> tuple[tuple[MetricSpec, ...], ...]:
    return tuple(tuple(specs[i : i + per_request]) for i in range(0, len(specs), per_request))


class NtcipDriver:
    """Polls one NTCIP 1203 sign; writes messages on it when a write community is configured."""

    def __init__(self, config: NtcipConfig, profile: Profile | None = None) -> None:
        self.config = config
        self.profile = profile
        self.where = f"ntcip {config.host}:{config.port}"
        self._requests = _plan(METRICS, config.max_objects_per_request)
        self._names: dict[Oid, str] = {spec.obj.scalar(): spec.obj.name for spec in METRICS}
        self._engine: Any = None
        self._target: Any = None
        self._unsupported: set[str] = set()
        self._mistyped: set[str] = set()
        self._optional = frozenset(spec.obj.name for spec in METRICS if not spec.required)
        self._write_lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()
        self._guard_s = config.timeout_s * (config.retries + 1) + TIMEOUT_MARGIN_S
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
        async with self._open_lock:  # a command and a poll may arrive together: make one engine, not two
            if self._engine is None:
                await self._open()

    async def _open(self) -> None:
        # Building an engine loads pysnmp's MIB modules: about 0.1 s of CPU that would stall every other device
        # of the agent, so it runs in a thread (one at a time: pysnmp does not promise thread-safe loading).
        engine = await asyncio.to_thread(_build_engine)
        try:
            target = await UdpTransportTarget.create(
                (self.config.host, self.config.port), timeout=self.config.timeout_s, retries=self.config.retries
            )
        except PySnmpError as exc:
            with contextlib.suppress(Exception):
                engine.close_dispatcher()
            raise DeviceUnavailable(f"{self.where}: cannot resolve the address ({exc})") from exc
        self._engine, self._target = engine, target

    async def close(self) -> None:
        """Close the engine's socket. Never raises."""
        engine, self._engine, self._target = self._engine, None, None
        if engine is not None:
            with contextlib.suppress(Exception):  # pysnmp may raise anything while tearing down its dispatcher
                engine.close_dispatcher()

    async def poll(self) -> list[Reading]:
        """Read the sign once."""
        await self.open()
        ts_ms = now_ms()
        raw: dict[str, Raw] = {}
        for request in self._requests:
            raw.update(await self._get_objects([spec.obj for spec in request], optional=self._optional))
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
        await self._set([(mib.dmsMessageStatus.row(*row), rfc1902.Integer(MessageStatus.modifyReq))])
        await self._set(
            [
                (mib.dmsMessageMultiString.row(*row), rfc1902.OctetString(multi)),
                (mib.dmsMessageOwner.row(*row), rfc1902.OctetString(self.config.owner.encode())),
                (mib.dmsMessageRunTimePriority.row(*row), rfc1902.Integer(priority)),
            ]
        )
        await self._set([(mib.dmsMessageStatus.row(*row), rfc1902.Integer(MessageStatus.validateReq))])
        status, crc = await self._validated(row)
        if status == MessageStatus.error:
            errors = await self._get_objects((mib.dmsValidateMessageError, mib.dmsMultiSyntaxError))
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
            await self._set([(mib.dmsActivateMessage.scalar(), rfc1902.OctetString(code.encode()))])
        except SnmpErrorStatus as exc:
            errors = await self._get_objects((mib.dmsActivateMsgError,))
            reason = _enum_name(ActivateError, errors.get("dmsActivateMsgError"))
            raise DeviceResponseError(f"{self.where}: the sign refused to activate {where}: {reason}") from exc
        shown = await self._get_objects((mib.dmsMsgTableSource,))
        source = shown.get(mib.dmsMsgTableSource.name)
        expected = MessageId(MemoryType.changeable, number, crc)
        if not isinstance(source, bytes) or source != expected.encode():
            shows = MessageId.decode(source).describe() if isinstance(source, bytes) and len(source) == 5 else "?"
            raise DeviceResponseError(f"{self.where}: after activation the sign shows {shows}, not {where}")
        return f"{where} shown (crc 0x{crc:04x}, priority {priority}, duration {_duration(duration)})"

    async def _validated(self, row: tuple[int, int]) -> tuple[int, int]:
        objects = (mib.dmsMessageStatus, mib.dmsMessageCRC)
        for attempt in range(VALIDATE_POLLS):
            values = await self._get_objects(objects, index=row)
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
        values = await self._get_objects(spec, index=(MemoryType.currentBuffer, 1), quiet=True)
        if mib.dmsMessageMultiString.name not in values:
            values = await self._get_objects(spec, index=(source.memory_type, source.number))
        multi = values.get(mib.dmsMessageMultiString.name, b"")
        assert isinstance(multi, bytes)  # checked by _get_objects against the syntax
        text = multi.decode("latin-1")
        metrics["message_multi"] = text
        metrics["message_text"] = multi_to_text(text)
        return metrics

    # --- SNMP ----------------------------------------------------------------------------------------------
    async def _get_objects(
        self,
        objects: Sequence[MibObject],
        index: Oid | None = None,
        *,
        quiet: bool = False,
        optional: Collection[str] = (),
    ) -> dict[str, Raw]:
        """GET ``objects`` (scalars, or the table row ``index``); values by object name, checked against their
        syntax. Unsupported objects are absent (logged once unless ``quiet``); so is an object named in
        ``optional`` that comes back with the wrong type (logged once); any other wrong type is an error."""
        oids = [obj.row(*index) if index else obj.scalar() for obj in objects]
        bindings = await self._call(
            get_cmd, self.config.community, [ObjectType(ObjectIdentity(o)) for o in oids], objects
        )
        values: dict[str, Raw] = {}
        for obj, (_, value) in zip(objects, bindings, strict=False):
            name = obj.name
            if isinstance(value, (rfc1905.NoSuchObject, rfc1905.NoSuchInstance, rfc1905.EndOfMibView)):
                if not quiet and name not in self._unsupported:
                    self._unsupported.add(name)
                    log.warning("%s: the sign does not support %s (%s)", self.where, name, type(value).__name__)
                continue
            try:
                values[name] = self._check_type(obj, value)
            except DeviceResponseError as exc:
                if name not in optional:
                    raise
                if name not in self._mistyped:
                    self._mistyped.add(name)
                    log.warning("%s: left out of the readings: %s", self.where, exc)
        return values

    def _check_type(self, obj: MibObject, value: Any) -> Raw:
        """The value as int or bytes; an answer of another type is the sign's error, named."""
        # Any integer type passes (Integer32, Unsigned32, Gauge32...): agents are loose with the tag of INTEGERs.
        if obj.syntax == "integer" and isinstance(value, univ.Integer):
            return int(value)
        if obj.syntax == "octets" and isinstance(value, rfc1902.OctetString):
            return bytes(value)
        wanted = "an INTEGER" if obj.syntax == "integer" else "an OCTET STRING"
        raise DeviceResponseError(f"{self.where}: {obj.name} should be {wanted}, the sign sent {type(value).__name__}")

    async def _set(self, bindings: list[tuple[Oid, Any]]) -> None:
        assert self.config.write_community is not None  # supported_actions() is empty otherwise
        names = [_object_of(oid) for oid, _ in bindings]
        await self._call(
            set_cmd,
            self.config.write_community.get_secret_value(),
            [ObjectType(ObjectIdentity(oid), value) for oid, value in bindings],
            names,
        )

    async def _call(self, command: Any, community: str, objects: list[Any], named: Sequence[MibObject]) -> list[Any]:
        if self._engine is None:
            raise DeviceUnavailable(f"{self.where}: not open")
        op = "SET" if command is set_cmd else "GET"
        try:
            async with asyncio.timeout(self._guard_s):
                indication, status, index, bindings = await command(
                    self._engine,
                    # NTCIP 1203 signs speak SNMPv1/v2c (v3 is optional in NTCIP 1103): the community it is.
                    CommunityData(community, mpModel=1),  # noqa: S508
                    self._target,
                    ContextData(),
                    *objects,
                    lookupMib=False,
                )
        except TimeoutError as exc:
            raise DeviceUnavailable(f"{self.where}: no answer to {op} within {self._guard_s:g} s") from exc
        except PySnmpError as exc:
            raise DeviceUnavailable(f"{self.where}: {op} failed: {exc}") from exc
        if indication:
            if isinstance(indication, errind.RequestTimedOut):
                tries = self.config.retries + 1
                raise DeviceUnavailable(
                    f"{self.where}: no answer to {op} within {self.config.timeout_s:g} s ({tries} tries)"
                )
            raise DeviceResponseError(f"{self.where}: {op}: {indication}")
        if int(status):
            number = int(status)
            at = int(index)
            name = named[at - 1].name if 0 < at <= len(named) else f"binding {at}"
            raise SnmpErrorStatus(
                f"{self.where}: {op} {name}: error-status {ERROR_STATUS.get(number, 'unknown')} ({number})",
                number,
                name,
            )
        if len(bindings) != len(objects):
            raise DeviceResponseError(
                f"{self.where}: {op}: {len(bindings)} objects in the answer, asked {len(objects)}"
            )
        return list(bindings)

    def __repr__(self) -> str:
        return f"NtcipDriver({self.where})"


def _object_of(oid: Oid) -> MibObject:
    for obj in mib.OBJECTS.values():
        if oid[: len(obj.oid)] == obj.oid:
            return obj
    raise KeyError(oid)


def _enum_name(enum_type: Any, value: Raw | None) -> str:
    if not isinstance(value, int):
        return f"unreadable ({value!r})"
    try:
        return f"{enum_type(value).name} ({value})"
    except ValueError:
        return f"unknown ({value})"


def _duration(minutes: int) -> str:
    return "until replaced" if minutes == mib.DURATION_INFINITE else f"{minutes} min"
