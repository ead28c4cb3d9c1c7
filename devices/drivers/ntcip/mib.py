"""The NTCIP 1203 objects this package reads and writes: identifiers, syntaxes and enumerations.

Source: NTCIP 1203 v03 "Object Definitions for Dynamic Message Signs (DMS)" (AASHTO/ITE/NEMA, 2014), clause 5
(the DMS MIB, ``dms`` = ``1.3.6.1.4.1.1206.4.2.3``), groups as named below; the identifiers were cross-checked
against the MIB as it is used by open implementations (MnDOT IRIS ``mib1203``). The clause numbers name the
group an object belongs to; the object identifier is what the code relies on. This is the *standard*: nothing
here is vendor-specific, so the same table serves every conforming sign, and the simulator
(:mod:`devices.sim.ntcip`) serves exactly these objects.

Also here, because driver and simulator must agree on them bit for bit: the OER layouts of
``MessageIDCode`` (``dmsMsgTableSource``, 5 octets) and ``MessageActivationCode`` (``dmsActivateMessage``,
12 octets), the ``shortErrorStatus`` bit names, and the message CRC.
"""

# ruff: noqa: N815, N816 - objects and enumerations keep the standard's own (mixedCase) names, so they can be
# searched for in the standard.
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final, Literal

#: ``nema.transportation.devices.dms`` (NTCIP 1203 v03 clause 5).
DMS: Final = (1, 3, 6, 1, 4, 1, 1206, 4, 2, 3)

Syntax = Literal["integer", "octets"]


@dataclass(frozen=True, slots=True)
class MibObject:
    """One object type: its name in the standard, its OID (without instance), syntax and clause."""

    name: str
    oid: tuple[int, ...]
    syntax: Syntax
    clause: str

    def scalar(self) -> tuple[int, ...]:
        """The instance OID of a scalar (``.0``)."""
        return (*self.oid, 0)

    def row(self, *index: int) -> tuple[int, ...]:
        """The instance OID of a table column at ``index``."""
        return (*self.oid, *index)

    @property
    def dotted(self) -> str:
        return ".".join(map(str, self.oid))


def _obj(name: str, sub: tuple[int, ...], syntax: Syntax, clause: str) -> MibObject:
    return MibObject(name, (*DMS, *sub), syntax, clause)


# --- 5.2 Sign Configuration and Capability (dmsSignCfg, dms.1) -------------------------------------------
dmsSignType = _obj("dmsSignType", (1, 2), "integer", "5.2 dmsSignCfg")
# --- 5.6 Message objects (dmsMessage, dms.5); the message table is indexed by memory type . number -------
dmsNumChangeableMsg = _obj("dmsNumChangeableMsg", (5, 2), "integer", "5.6 dmsMessage")
dmsMaxChangeableMsg = _obj("dmsMaxChangeableMsg", (5, 3), "integer", "5.6 dmsMessage")
dmsMessageMultiString = _obj("dmsMessageMultiString", (5, 8, 1, 3), "octets", "5.6 dmsMessageTable")
dmsMessageOwner = _obj("dmsMessageOwner", (5, 8, 1, 4), "octets", "5.6 dmsMessageTable")
dmsMessageCRC = _obj("dmsMessageCRC", (5, 8, 1, 5), "integer", "5.6 dmsMessageTable")
dmsMessageBeacon = _obj("dmsMessageBeacon", (5, 8, 1, 6), "integer", "5.6 dmsMessageTable")
dmsMessagePixelService = _obj("dmsMessagePixelService", (5, 8, 1, 7), "integer", "5.6 dmsMessageTable")
dmsMessageRunTimePriority = _obj("dmsMessageRunTimePriority", (5, 8, 1, 8), "integer", "5.6 dmsMessageTable")
dmsMessageStatus = _obj("dmsMessageStatus", (5, 8, 1, 9), "integer", "5.6 dmsMessageTable")
dmsValidateMessageError = _obj("dmsValidateMessageError", (5, 9), "integer", "5.6 dmsMessage")
# --- 5.7 Sign Control (signControl, dms.6) ------------------------------------------------------------------
dmsControlMode = _obj("dmsControlMode", (6, 1), "integer", "5.7 signControl")
dmsActivateMessage = _obj("dmsActivateMessage", (6, 3), "octets", "5.7 signControl")
dmsMessageTimeRemaining = _obj("dmsMessageTimeRemaining", (6, 4), "integer", "5.7 signControl")
dmsMsgTableSource = _obj("dmsMsgTableSource", (6, 5), "octets", "5.7 signControl")
dmsActivateMsgError = _obj("dmsActivateMsgError", (6, 17), "integer", "5.7 signControl")
dmsMultiSyntaxError = _obj("dmsMultiSyntaxError", (6, 18), "integer", "5.7 signControl")
# --- 5.8 Illumination / brightness (illum, dms.7) ---------------------------------------------------------
dmsIllumControl = _obj("dmsIllumControl", (7, 1), "integer", "5.8 illum")
dmsIllumMaxPhotocellLevel = _obj("dmsIllumMaxPhotocellLevel", (7, 2), "integer", "5.8 illum")
dmsIllumPhotocellLevelStatus = _obj("dmsIllumPhotocellLevelStatus", (7, 3), "integer", "5.8 illum")
dmsIllumNumBrightLevels = _obj("dmsIllumNumBrightLevels", (7, 4), "integer", "5.8 illum")
dmsIllumBrightLevelStatus = _obj("dmsIllumBrightLevelStatus", (7, 5), "integer", "5.8 illum")
dmsIllumLightOutputStatus = _obj("dmsIllumLightOutputStatus", (7, 9), "integer", "5.8 illum")
# --- 5.11 Sign status (dmsStatus, dms.9) ----------------------------------------------------------------------
watchdogFailureCount = _obj("watchdogFailureCount", (9, 5), "integer", "5.11 dmsStatus")
dmsStatDoorOpen = _obj("dmsStatDoorOpen", (9, 6), "integer", "5.11 dmsStatus")
#   5.11.2 Status error objects (statError, dms.9.7)
shortErrorStatus = _obj("shortErrorStatus", (9, 7, 1), "integer", "5.11.2 statError")
pixelFailureTableNumRows = _obj("pixelFailureTableNumRows", (9, 7, 2), "integer", "5.11.2 statError")
controllerErrorStatus = _obj("controllerErrorStatus", (9, 7, 10), "integer", "5.11.2 statError")
dmsPowerFailureStatusMap = _obj("dmsPowerFailureStatusMap", (9, 7, 11), "octets", "5.11.2 statError")
#   5.11.3 Power status objects (statPower, dms.9.8)
signVolts = _obj("signVolts", (9, 8, 1), "integer", "5.11.3 statPower")
#   5.11.4 Temperature status objects (statTemp, dms.9.9), whole degrees Celsius
tempMinCtrlCabinet = _obj("tempMinCtrlCabinet", (9, 9, 1), "integer", "5.11.4 statTemp")
tempMaxCtrlCabinet = _obj("tempMaxCtrlCabinet", (9, 9, 2), "integer", "5.11.4 statTemp")
tempMinAmbient = _obj("tempMinAmbient", (9, 9, 3), "integer", "5.11.4 statTemp")
tempMaxAmbient = _obj("tempMaxAmbient", (9, 9, 4), "integer", "5.11.4 statTemp")
tempMinSignHousing = _obj("tempMinSignHousing", (9, 9, 5), "integer", "5.11.4 statTemp")
tempMaxSignHousing = _obj("tempMaxSignHousing", (9, 9, 6), "integer", "5.11.4 statTemp")

#: Every object above, by name (the simulator serves these; tests walk them).
OBJECTS: Final[dict[str, MibObject]] = {o.name: o for o in list(globals().values()) if isinstance(o, MibObject)}


class MemoryType(enum.IntEnum):
    """``dmsMessageMemoryType`` (clause 5.6): where a message lives; the first index of the message table."""

    other = 1
    permanent = 2
    changeable = 3
    volatile = 4
    currentBuffer = 5
    schedule = 6
    blank = 7


class MessageStatus(enum.IntEnum):
    """``dmsMessageStatus`` (clause 5.6): the state machine of one message row; ``*Req`` are written."""

    notUsed = 1
    modifying = 2
    validating = 3
    valid = 4
    error = 5
    modifyReq = 6
    validateReq = 7
    notUsedReq = 8


class ValidateError(enum.IntEnum):
    """``dmsValidateMessageError`` (clause 5.6)."""

    other = 1
    none = 2
    beacons = 3
    pixelService = 4
    syntaxMULTI = 5


class ActivateError(enum.IntEnum):
    """``dmsActivateMsgError`` (clause 5.7): why the last activation was refused."""

    other = 1
    none = 2
    priority = 3
    messageStatus = 4
    messageMemoryType = 5
    messageNumber = 6
    messageCRC = 7
    syntaxMULTI = 8
    localMode = 9


class MultiSyntaxError(enum.IntEnum):
    """``dmsMultiSyntaxError`` (clause 5.7): what is wrong with a MULTI string."""

    other = 1
    none = 2
    unsupportedTag = 3
    unsupportedTagValue = 4
    textTooBig = 5
    fontNotDefined = 6
    characterNotDefined = 7
    fieldDeviceNotExist = 8
    fieldDeviceError = 9
    flashRegionError = 10
    tagConflict = 11
    tooManyPages = 12
    fontVersionID = 13
    graphicID = 14
    graphicNotDefined = 15


class ControlMode(enum.IntEnum):
    """``dmsControlMode`` (clause 5.7)."""

    other = 1
    local = 2
    external = 3
    central = 4
    centralOverride = 5
    simulation = 6


class IllumControl(enum.IntEnum):
    """``dmsIllumControl`` (clause 5.8)."""

    other = 1
    photocell = 2
    timer = 3
    manual = 4
    manualDirect = 5
    manualIndexed = 6


class SignType(enum.IntEnum):
    """``dmsSignType`` (clause 5.2); 128 is added for a portable sign."""

    other = 1
    bos = 2
    cms = 3
    vmsChar = 4
    vmsLine = 5
    vmsFull = 6


#: ``shortErrorStatus`` bits (clause 5.11.2): bit number -> the metric reporting it (0 or 1). Bit 0 and bits
#: 15 and up are reserved; they show only in the raw value.
SHORT_ERROR_BITS: Final[dict[int, str]] = {
    1: "error_communications",
    2: "error_power",
    3: "error_attached_device",
    4: "error_lamp",
    5: "error_pixel",
    6: "error_photocell",
    7: "error_message",
    8: "error_controller",
    9: "error_temperature_warning",
    10: "error_climate_control",
    11: "error_critical_temperature",
    12: "error_drum_rotor",
    13: "error_door_open",
    14: "error_humidity_warning",
}


def decode_short_error_status(value: int) -> dict[str, int]:
    """Each named bit of ``shortErrorStatus`` as a 0/1 metric."""
    return {name: (value >> bit) & 1 for bit, name in SHORT_ERROR_BITS.items()}


#: The ``duration`` of an activation that never expires.
DURATION_INFINITE: Final = 65535


@dataclass(frozen=True, slots=True)
class MessageId:
    """``MessageIDCode`` (clause 5.7, ``dmsMsgTableSource``): memory type (1), number (2), CRC (2) octets."""

    memory_type: int
    number: int
    crc: int

    def encode(self) -> bytes:
        return struct.pack(">BHH", self.memory_type, self.number, self.crc)

    @classmethod
    def decode(cls, raw: bytes) -> MessageId:
        if len(raw) != 5:
            raise ValueError(f"a MessageIDCode has 5 octets, not {len(raw)}")
        memory_type, number, crc = struct.unpack(">BHH", raw)
        return cls(memory_type, number, crc)

    def describe(self) -> str:
        """``changeable 1``, ``permanent 3``, ``blank 1`` (unknown memory types by number)."""
        try:
            kind = MemoryType(self.memory_type).name
        except ValueError:
            kind = f"memory type {self.memory_type}"
        return f"{kind} {self.number}"


@dataclass(frozen=True, slots=True)
class Activation:
    """``MessageActivationCode`` (clause 5.7, ``dmsActivateMessage``), 12 octets in OER order.

    duration (2, minutes, 65535 = until replaced), activate priority (1), memory type (1), message number (2),
    message CRC (2), source address (4: the requester's IPv4 address; 0.0.0.0 when not given).
    """

    duration_min: int
    priority: int
    memory_type: int
    number: int
    crc: int
    source: bytes = b"\x00\x00\x00\x00"

    def encode(self) -> bytes:
        return struct.pack(
            ">HBBHH4s", self.duration_min, self.priority, self.memory_type, self.number, self.crc, self.source
        )

    @classmethod
    def decode(cls, raw: bytes) -> Activation:
        if len(raw) != 12:
            raise ValueError(f"a MessageActivationCode has 12 octets, not {len(raw)}")
        duration, priority, memory_type, number, crc, source = struct.unpack(">HBBHH4s", raw)
        return cls(duration, priority, memory_type, number, crc, source)


def crc16_x25(data: bytes) -> int:
    """CRC-16 of ISO/IEC 3309 (the HDLC/X.25 frame check sequence): reflected polynomial 0x1021, initial value
    and final XOR 0xFFFF. Its check value (the CRC of ``b"123456789"``) is 0x906E."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def message_crc(multi: bytes, beacon: int = 0, pixel_service: int = 0) -> int:
    """``dmsMessageCRC`` (clause 5.6): the CRC-16 over the message's MULTI string, beacon and pixel-service octets.

    The driver never computes it: it reads the CRC the sign computed and quotes it back on activation, as the
    standard's dialog does. The simulator uses this to compute it.
    """
    return crc16_x25(multi + bytes((beacon & 0xFF, pixel_service & 0xFF)))
