"""The edge <-> hub wire contract, version 1.

This module is the single owner of the MQTT topic layout and of every payload that crosses the broker.
The edge agent encodes with it, the hub decodes with it, and ``wire/schema/v1.json`` is generated from it
(``python -m wire.schema``); ``docs/protocol.md`` is the prose description. Changes here must stay backwards
compatible: the hub keeps accepting every v1 payload ever published.

Topics (``{site}`` and ``{gateway}`` are IDs, see :data:`ID_PATTERN`)::

    ioc/v1/{site}/{gateway}/state     retained birth / death (also the MQTT Last Will)
    ioc/v1/{site}/{gateway}/data      telemetry batches
    ioc/v1/{site}/{gateway}/event     device health events
    ioc/v1/{site}/{gateway}/cmd       commands to the gateway's devices (hub -> edge)
    ioc/v1/{site}/{gateway}/cmd/ack   command outcomes (edge -> hub)
    ioc/v1/{site}/{gateway}/snapshot  camera snapshots, one JPEG each (edge -> hub, not retained)

All messages are JSON objects, published with QoS 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, TypeVar, cast

import msgspec

VERSION: Final = 1
TOPIC_ROOT: Final = "ioc/v1"
QOS: Final = 1

# Every pattern must match the whole string. These are written ``^...$`` for JSON Schema (ECMAScript) and
# pydantic (Rust regex), where ``$`` is the end of the text. Python's ``$`` also matches before a final newline,
# and msgspec checks a pattern with ``re.search``: the structs below use :func:`_whole`, which puts ``(?!\n)``
# before the ``$`` (valid in ECMAScript too, so the JSON Schema carries it), so that ``"aq-01\n"``, which would
# end a line of InfluxDB line protocol early, is refused. Python code of ours matches with ``fullmatch``.

#: Site, gateway, device and command IDs: lowercase letters, digits and '-', starting with a letter or digit.
ID_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,63}$"
#: Metric names become InfluxDB field keys: snake_case, starting with a letter.
METRIC_PATTERN: Final = r"^[a-z][a-z0-9_]{0,63}$"
#: Device kinds become InfluxDB measurements: snake_case, starting with a letter.
KIND_PATTERN: Final = r"^[a-z][a-z0-9_]{0,31}$"
#: Free text (string values, reasons, details, names): no control characters (C0, DEL, C1) and no Unicode line
#: or paragraph separator, so no text of a gateway's can break a line or a log record wherever it is written.
TEXT_PATTERN: Final = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]*$"


def _whole(pattern: str) -> str:
    """``^...$`` as a pattern that ``re.search`` (msgspec) matches against the whole string only."""
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"pattern {pattern!r} is not anchored ^...$")
    return pattern[:-1] + r"(?!\n)$"


#: Limits that keep one message from exhausting the hub.
MAX_READINGS_PER_BATCH: Final = 10_000
MAX_METRICS_PER_READING: Final = 256
MAX_STRING_VALUE: Final = 1024
MAX_DEVICES_PER_GATEWAY: Final = 4096
#: The largest legitimate message, in bytes of encoded payload (4 MiB). A replay batch of the most readings a
#: batch may hold (10,000) of a typical sensor (four float metrics, ~190 bytes each) is ~1.9 MB; the limit
#: leaves twice that, and is larger than the largest reading the contract allows (256 metrics of 1024-character
#: strings, ~1.6 MB) and the largest birth (4096 devices, ~1.5 MB), so an agent can always send what it holds
#: by splitting batches by bytes (a 10,000-reading batch of 24-metric power meters, ~9.5 MB, goes as three).
#: The edge never publishes more; the broker and the hub refuse more (``docs/protocol.md``, "Sizes").
MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
#: The largest JPEG a snapshot carries, in bytes of the image itself (base64 in JSON makes it a third larger:
#: a snapshot message is at most ~131 KB, far below :data:`MAX_MESSAGE_BYTES`). A 640x360 frame at ffmpeg's
#: ``-q:v 5`` is 25 to 60 KB; the bound leaves room for a busy street scene without letting a gateway send video.
MAX_SNAPSHOT_BYTES: Final = 96 * 1024
#: Image problems a snapshot names at most.
MAX_SNAPSHOT_PROBLEMS: Final = 16

_ID_RE: Final = re.compile(ID_PATTERN)
_TEXT = _whole(TEXT_PATTERN)

Id = Annotated[str, msgspec.Meta(pattern=_whole(ID_PATTERN), description="Lowercase a-z, 0-9 and '-'.")]
Kind = Annotated[str, msgspec.Meta(pattern=_whole(KIND_PATTERN), description="Device kind; the measurement name.")]
MetricName = Annotated[str, msgspec.Meta(pattern=_whole(METRIC_PATTERN))]
#: Milliseconds since the Unix epoch (UTC). 2000-01-01 .. 2100-01-01 rejects seconds and microseconds by mistake.
TimestampMs = Annotated[int, msgspec.Meta(ge=946_684_800_000, lt=4_102_444_800_000)]
ShortText = Annotated[str, msgspec.Meta(max_length=MAX_STRING_VALUE, pattern=_TEXT)]
MetricValue = bool | int | float | ShortText
SessionId = Annotated[
    str, msgspec.Meta(pattern=_whole(r"^[A-Za-z0-9_-]{8,64}$"), description="Opaque, unique per connect.")
]


class Channel(StrEnum):
    """The last topic level(s): what kind of message travels on the topic."""

    STATE = "state"
    DATA = "data"
    EVENT = "event"
    CMD = "cmd"
    CMD_ACK = "cmd/ack"
    SNAPSHOT = "snapshot"


# --------------------------------------------------------------------------------------------- payloads


class DeviceInfo(msgspec.Struct, frozen=True):
    """One device a gateway serves, as announced in its birth message."""

    id: Id
    kind: Kind
    profile: Annotated[str, msgspec.Meta(max_length=128, pattern=_TEXT)]
    interval_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)]
    driver: Annotated[str, msgspec.Meta(max_length=64, pattern=_TEXT)] = ""


class State(msgspec.Struct, frozen=True):
    """Birth (``online: true``) or death (``online: false``) of one agent session. Retained.

    The Last Will carries the same ``session`` as the birth it follows, so a will delivered late (after the
    gateway has already reconnected with a new session) can be recognised and ignored.
    """

    online: bool
    session: SessionId
    v: Literal[1] = 1
    ts: TimestampMs | None = None
    agent: Annotated[str, msgspec.Meta(max_length=64, pattern=_TEXT)] = ""
    devices: Annotated[list[DeviceInfo], msgspec.Meta(max_length=MAX_DEVICES_PER_GATEWAY)] = []
    reason: Annotated[str, msgspec.Meta(max_length=256, pattern=_TEXT)] = ""
    #: Birth only: the session's MQTT keep-alive. An agent that sets it promises to publish on ``data`` at least
    #: once every ``keepalive_s`` while connected, so a hub that hears nothing from the gateway for
    #: 1.5 x ``keepalive_s`` may take it as gone before the broker's keep-alive check delivers the will.
    keepalive_s: Annotated[int, msgspec.Meta(ge=1, le=65_535)] | None = None


class Reading(msgspec.Struct, frozen=True):
    """Metrics of one device sampled at one instant (``ts`` is set by the edge when sampled)."""

    device: Id
    kind: Kind
    ts: TimestampMs
    metrics: Annotated[dict[MetricName, MetricValue], msgspec.Meta(min_length=1, max_length=MAX_METRICS_PER_READING)]


class DataBatch(msgspec.Struct, frozen=True):
    """A batch of readings from one gateway session.

    ``seq`` increases by one per data message within a session, starting at 1, so the hub can count gaps.
    ``replay`` is true when the batch was held back while the uplink was down and is sent late.
    """

    session: SessionId
    seq: Annotated[int, msgspec.Meta(ge=1)]
    readings: Annotated[list[Reading], msgspec.Meta(min_length=1, max_length=MAX_READINGS_PER_BATCH)]
    v: Literal[1] = 1
    replay: bool = False


class EventType(StrEnum):
    DEVICE_DOWN = "device_down"
    DEVICE_UP = "device_up"
    DEVICE_DEGRADED = "device_degraded"


class Event(msgspec.Struct, frozen=True):
    """A device health change observed by the agent (a driver going unreachable, coming back...)."""

    session: SessionId
    device: Id
    type: EventType
    ts: TimestampMs
    v: Literal[1] = 1
    reason: Annotated[str, msgspec.Meta(max_length=512, pattern=_TEXT)] = ""


class Command(msgspec.Struct, frozen=True):
    """A command for one device behind the gateway (hub -> edge). Not retained."""

    id: Id
    device: Id
    action: Annotated[str, msgspec.Meta(pattern=_whole(METRIC_PATTERN))]
    ts: TimestampMs
    v: Literal[1] = 1
    params: dict[str, MetricValue] = {}
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0


#: ``Command.action`` of a request for a new birth, addressed to the gateway id itself (``device``): the agent
#: publishes a fresh retained birth of its current session, the devices it serves now, then acks ``ok``. The
#: hub sends it when a gateway sends data for a device its current birth did not announce (as Sparkplug B's
#: "Node Control/Rebirth": data is accepted only for what the node's birth declared).
REBIRTH: Final = "rebirth"


class AckStatus(StrEnum):
    OK = "ok"
    ERROR = "error"
    #: the device did not answer within the command's ``timeout_s`` (the agent gave up)
    TIMEOUT = "timeout"
    UNSUPPORTED = "unsupported"


class CommandAck(msgspec.Struct, frozen=True):
    """The outcome of a command (edge -> hub)."""

    id: Id
    device: Id
    status: AckStatus
    ts: TimestampMs
    v: Literal[1] = 1
    detail: Annotated[str, msgspec.Meta(max_length=1024, pattern=_TEXT)] = ""
    #: what the command produced (for ``read_now``: the metrics read), flat like a reading's metrics
    result: Annotated[dict[MetricName, MetricValue], msgspec.Meta(max_length=MAX_METRICS_PER_READING)] = {}


class SnapshotTrigger(StrEnum):
    """Why the agent took a snapshot."""

    #: the camera's regular snapshot (its rate is the agent's setting)
    PERIODIC = "periodic"
    #: an image problem was raised (``problems`` names those raised now)
    PROBLEM = "problem"
    #: the image problems cleared: the picture is good again
    CLEARED = "cleared"


class Snapshot(msgspec.Struct, frozen=True):
    """One still frame of a camera (edge -> hub, QoS 1, not retained).

    ``jpeg`` is the JPEG file itself, base64 in JSON (as msgspec encodes ``bytes``): 1 to 98,304 bytes once
    decoded (``MAX_SNAPSHOT_BYTES``), starting with the SOI marker FF D8 and ending with EOI FF D9. The contract
    bounds its size; the hub checks that it is a JPEG and reads its dimensions itself. ``problems``: the image
    problems raised when the frame was taken, sorted, at most 16.
    """

    session: SessionId
    device: Id
    #: when the frame was taken
    ts: TimestampMs
    jpeg: Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_SNAPSHOT_BYTES)]
    trigger: SnapshotTrigger
    v: Literal[1] = 1
    #: the device's image problems raised when the frame was taken (their metric names), sorted
    problems: Annotated[list[MetricName], msgspec.Meta(max_length=MAX_SNAPSHOT_PROBLEMS)] = []
    #: the frame's size in pixels, as the agent knows it (the hub reads the JPEG's own)
    width: Annotated[int, msgspec.Meta(ge=1, le=65_535)] | None = None
    height: Annotated[int, msgspec.Meta(ge=1, le=65_535)] | None = None


Payload = State | DataBatch | Event | Command | CommandAck | Snapshot

CHANNEL_TYPES: Final[dict[Channel, type[Payload]]] = {
    Channel.STATE: State,
    Channel.DATA: DataBatch,
    Channel.EVENT: Event,
    Channel.CMD: Command,
    Channel.CMD_ACK: CommandAck,
    Channel.SNAPSHOT: Snapshot,
}

# --------------------------------------------------------------------------------------------- topics


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed v1 topic."""

    site: str
    gateway: str
    channel: Channel

    def __str__(self) -> str:
        return topic(self.site, self.gateway, self.channel)


class ContractError(ValueError):
    """A topic or payload that does not follow the v1 contract. The message says what is wrong."""


_TEXT_UNSAFE: Final = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]")


def clean_text(text: str, max_length: int) -> str:
    """``text`` as :data:`TEXT_PATTERN` allows it: each control character or line separator made a space, and
    cut to ``max_length`` characters (ending in ``...`` when cut). For text an agent did not choose (an exception's
    message, a device's answer) on its way into a payload."""
    text = _TEXT_UNSAFE.sub(" ", text)
    return text if len(text) <= max_length else text[: max_length - 3] + "..."


def check_id(value: str, what: str) -> str:
    """Return ``value`` if it is a valid ID, else raise :class:`ContractError` naming ``what``."""
    if not _ID_RE.fullmatch(value):
        raise ContractError(f"{what} {value!r} is not a valid ID (lowercase a-z, 0-9 and '-', max 64)")
    return value


def topic(site: str, gateway: str, channel: Channel) -> str:
    """Build the topic of ``channel`` for one gateway, validating both IDs."""
    check_id(site, "site")
    check_id(gateway, "gateway")
    return f"{TOPIC_ROOT}/{site}/{gateway}/{channel.value}"


def subscription(channel: Channel, site: str = "+", gateway: str = "+") -> str:
    """A topic filter for ``channel`` across all sites and gateways (or one of them)."""
    return f"{TOPIC_ROOT}/{site}/{gateway}/{channel.value}"


def shared(group: str, topic_filter: str) -> str:
    """An MQTT 5 shared subscription filter, so several hub processes split the load."""
    check_id(group, "shared subscription group")
    return f"$share/{group}/{topic_filter}"


_CHANNELS_BY_SUFFIX: Final = {c.value: c for c in Channel}


def parse_topic(value: str) -> Topic:
    """Parse a v1 topic, raising :class:`ContractError` with the reason when it is not one."""
    parts = value.split("/")
    if len(parts) < 5 or parts[0] != "ioc" or parts[1] != "v1":
        raise ContractError(f"topic {value!r} is not under {TOPIC_ROOT}/")
    channel = _CHANNELS_BY_SUFFIX.get("/".join(parts[4:]))
    if channel is None:
        raise ContractError(f"topic {value!r} has an unknown channel {'/'.join(parts[4:])!r}")
    return Topic(check_id(parts[2], "site"), check_id(parts[3], "gateway"), channel)


# --------------------------------------------------------------------------------------------- codec

_P = TypeVar("_P", State, DataBatch, Event, Command, CommandAck, Snapshot)

_encoder: Final = msgspec.json.Encoder()
_decoders: Final[dict[type[Payload], msgspec.json.Decoder[Any]]] = {
    t: msgspec.json.Decoder(t) for t in CHANNEL_TYPES.values()
}


def encode(message: Payload) -> bytes:
    """Encode a payload to compact JSON bytes."""
    return _encoder.encode(message)


def decode(payload: bytes | str, kind: type[_P]) -> _P:
    """Decode and validate one payload; raise :class:`ContractError` saying what is wrong."""
    try:
        return cast("_P", _decoders[kind].decode(payload))
    except msgspec.ValidationError as exc:
        raise ContractError(f"{kind.__name__}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ContractError(f"{kind.__name__}: not valid JSON ({exc})") from exc


def decode_for(channel: Channel, payload: bytes | str) -> Payload:
    """Decode a payload received on ``channel``."""
    kind = CHANNEL_TYPES[channel]
    try:
        return cast(Payload, _decoders[kind].decode(payload))
    except msgspec.ValidationError as exc:
        raise ContractError(f"{kind.__name__}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ContractError(f"{kind.__name__}: not valid JSON ({exc})") from exc
