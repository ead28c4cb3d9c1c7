"""Commands from the hub: every payload on ``.../cmd`` is answered with a :class:`wire.v1.CommandAck`.

The publisher hands each payload over undecoded (:data:`edge.publisher.CommandHandler`); the
:class:`CommandDispatcher` decodes it against the contract, starts one task per command and returns at once,
so a slow device never holds up the MQTT receive loop, the other commands or the polling of other devices
(the scheduler serializes requests per device, never across devices).

Actions (``docs/protocol.md``, "cmd and cmd/ack"):

- ``set_interval`` (``params.interval_s``, 0.1..86400 s): the device's new poll interval, until the next
  restart or reload; ``result`` has ``interval_s`` and ``previous_interval_s``.
- ``read_now``: polls the device at once (after a poll in progress on it); the readings are queued as data
  and their metrics are the ``result`` (merged if the driver returned several readings).
- any action the device's driver declares (:class:`devices.driver.CommandCapable`), e.g. ``restart`` of a
  camera, ``display_message`` on a sign: ``params`` go to the driver as they are; its detail is the ack's.
- ``reload_config``, addressed to the gateway id: rereads the config file and applies added, removed and
  changed devices without restarting the process; a bad file is an ``error`` ack and the old config stays.
- ``rebirth`` (:data:`wire.v1.REBIRTH`), addressed to the gateway id: publishes a fresh retained birth of the
  current session (the devices served now) and acks ``ok`` once the broker has it (Sparkplug B's
  "Node Control/Rebirth": the hub asks when it got data for a device the birth it holds did not announce).

Statuses: ``ok``; ``unsupported`` for an action this device does not have (its driver does not declare it);
``timeout`` when the device did not answer within the command's ``timeout_s`` (or its own poll timeout, for
``read_now``); ``error`` for everything else, with the reason in ``detail``: bad params (also when the driver
refuses them, even as :class:`~devices.errors.UnsupportedCommand`: the action exists, the command is
malformed), unknown device, the device's own error, and payloads that break the contract. A payload whose
``id`` cannot be recovered cannot be answered: it is logged (the first at WARNING, then DEBUG) and counted.
``reload_config`` is not cut short by ``timeout_s`` (half a reload would leave devices neither old nor new);
its ack may come later.

A command id seen again (QoS 1 redelivers after a lost PUBACK) is not run twice: the first run's ack is sent
again, or nothing if it is still running. Nothing here raises into the publisher.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol, Self

import msgspec

from common.tasks import cancel_and_wait
from devices.driver import MetricValue, now_ms
from devices.errors import DeviceError
from edge.errors import ConfigError, UplinkError
from edge.scheduler import ActionNotSupported, PollFailed, UnknownDevice
from wire.v1 import (
    MAX_METRICS_PER_READING,
    REBIRTH,
    AckStatus,
    Command,
    CommandAck,
    ContractError,
    Reading,
    check_id,
    clean_text,
    decode,
)

log = logging.getLogger(__name__)

SET_INTERVAL: Final = "set_interval"
READ_NOW: Final = "read_now"
RELOAD_CONFIG: Final = "reload_config"
#: The same bounds as ``devices[].interval_s`` in the config.
MIN_INTERVAL_S: Final = 0.1
MAX_INTERVAL_S: Final = 86_400.0
#: Commands running at once; beyond this a command is answered ``error`` at once (the agent is not a queue).
DEFAULT_MAX_RUNNING: Final = 32
#: Command ids remembered to recognise a redelivery.
RECENT_IDS: Final = 256
#: ``CommandAck.detail`` is at most this long.
MAX_DETAIL: Final = 1024
#: How long stopping the dispatcher waits for running commands once cancelled.
STOP_TIMEOUT_S: Final = 5.0


class DeviceControl(Protocol):
    """What commands need of the scheduler (:class:`edge.scheduler.Scheduler` is one)."""

    def set_interval(self, device: str, interval_s: float) -> float: ...

    async def poll_now(self, device: str) -> list[Reading]: ...

    async def execute(self, device: str, action: str, params: Mapping[str, MetricValue]) -> str: ...


#: Publishes an ack; False when it could not be sent (no connection). :meth:`edge.publisher.Publisher.publish_ack`.
AckSender = Callable[[CommandAck], Awaitable[bool]]
#: Rereads and applies the config; returns what changed as (detail, counts). Raises :class:`ConfigError`.
Reloader = Callable[[], Awaitable[tuple[str, dict[str, int]]]]
#: Publishes a fresh birth of the current session and returns once the broker has it, saying what was published
#: (:meth:`edge.publisher.Publisher.rebirth`). Raises (:class:`edge.errors.UplinkError`) when it cannot.
Rebirther = Callable[[], Awaitable[str]]


class CommandRefused(Exception):
    """A command that cannot be run as given; ``status`` says how it is answered."""

    def __init__(self, status: AckStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class CommandStats:
    """Counts since the agent started (published as the agent's self-metrics)."""

    ok: int = 0
    error: int = 0
    timeout: int = 0
    unsupported: int = 0
    #: Payloads that could not be answered: no command id could be recovered from them.
    unanswerable: int = 0
    #: Redelivered ids, not run again.
    duplicates: int = 0
    #: Acks that could not be published (no connection when the command finished).
    acks_lost: int = 0

    @property
    def handled(self) -> int:
        return self.ok + self.error + self.timeout + self.unsupported

    def count(self, status: AckStatus) -> None:
        setattr(self, status.value, getattr(self, status.value) + 1)


class CommandDispatcher:
    """``async with CommandDispatcher(...) as commands:`` then give ``commands.handle`` to the publisher."""

    def __init__(
        self,
        gateway: str,
        devices: DeviceControl,
        send_ack: AckSender,
        *,
        reload: Reloader | None = None,
        max_running: int = DEFAULT_MAX_RUNNING,
        on_devices_changed: Callable[[], None] | None = None,
        rebirth: Rebirther | None = None,
    ) -> None:
        self.gateway = check_id(gateway, "gateway")
        self.stats = CommandStats()
        self._devices = devices
        self._send_ack = send_ack
        self._reload = reload
        self._rebirth = rebirth
        #: Called after every ``set_interval`` and ``reload_config``, whatever their outcome (a reload may fail
        #: half-way): the agent announces the devices served in a new birth if they changed.
        self._on_devices_changed = on_devices_changed
        self._max_running = max_running
        self._tasks: set[asyncio.Task[None]] = set()
        #: id -> the ack sent for it (None while it runs).
        self._recent: OrderedDict[str, CommandAck | None] = OrderedDict()
        self._reload_lock = asyncio.Lock()
        self._closed = False

    def figures(self) -> dict[str, MetricValue]:
        """For the agent's self-metrics."""
        st = self.stats
        return {
            "commands_handled": st.handled,
            "commands_ok": st.ok,
            "commands_error": st.error,
            "commands_timeout": st.timeout,
            "commands_unsupported": st.unsupported,
            "commands_unanswerable": st.unanswerable,
            "commands_duplicate": st.duplicates,
            "command_acks_lost": st.acks_lost,
        }

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True
        tasks, self._tasks = set(self._tasks), set()
        await cancel_and_wait(tasks, STOP_TIMEOUT_S)

    # ------------------------------------------------------------------------------------------- intake

    async def handle(self, payload: bytes) -> None:
        """Take one raw payload from ``.../cmd``; returns at once (the command runs in its own task)."""
        try:
            command = decode(payload, Command)
        except ContractError as exc:
            self._refuse_malformed(payload, str(exc))
            return
        if command.id in self._recent:
            self.stats.duplicates += 1
            earlier = self._recent[command.id]
            log.info("command %s received again: %s", command.id, "answered again" if earlier else "still running")
            if earlier is not None:
                self._spawn(self._send(earlier), f"edge-cmd-{command.id}-again")
            return
        # Refused for now (not remembered: the hub may send the same id again later, and it is run then).
        if self._closed:
            ack = self._ack(command, AckStatus.ERROR, "the agent is shutting down")
            self._spawn(self._finish(command, ack), f"edge-cmd-{command.id}")
        elif len(self._tasks) >= self._max_running:
            detail = f"too many commands in progress ({len(self._tasks)}); try again later"
            self._spawn(self._finish(command, self._ack(command, AckStatus.ERROR, detail)), f"edge-cmd-{command.id}")
        else:
            self._remember(command.id, None)
            self._spawn(self._run_and_answer(command), f"edge-cmd-{command.id}")

    def _refuse_malformed(self, payload: bytes, problem: str) -> None:
        ids = _recover_ids(payload)
        if ids is None:
            self.stats.unanswerable += 1
            level = logging.WARNING if self.stats.unanswerable == 1 else logging.DEBUG
            log.log(level, "unanswerable command (%d bytes, no valid id): %s", len(payload), problem)
            return
        command_id, device = ids
        log.warning("command %s refused: %s", command_id, problem)
        ack = CommandAck(
            id=command_id, device=device or self.gateway, status=AckStatus.ERROR, ts=now_ms(), detail=_cut(problem)
        )
        self.stats.count(AckStatus.ERROR)
        self._spawn(self._send(ack), f"edge-cmd-{command_id}")

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _remember(self, command_id: str, ack: CommandAck | None) -> None:
        self._recent[command_id] = ack
        self._recent.move_to_end(command_id)
        while len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)

    # ------------------------------------------------------------------------------------------- running

    async def _run_and_answer(self, command: Command) -> None:
        await self._finish(command, await self.run(command))

    async def _finish(self, command: Command, ack: CommandAck) -> None:
        self.stats.count(ack.status)
        if command.id in self._recent:
            self._recent[command.id] = ack
        await self._send(ack)

    async def _send(self, ack: CommandAck) -> None:
        try:
            sent = await self._send_ack(ack)
        except Exception:
            log.exception("sending the ack of command %s failed", ack.id)
            sent = False
        if not sent:
            self.stats.acks_lost += 1
            log.warning("the ack of command %s (%s) could not be sent: no broker connection", ack.id, ack.status)

    async def run(self, command: Command) -> CommandAck:
        """Run one command and say how it went. Never raises (but for a cancellation)."""
        log.info("command %s: %s on %s %s", command.id, command.action, command.device, dict(command.params))
        try:
            if command.action == RELOAD_CONFIG:
                detail, counts = await self._reload_config(command)
                result: dict[str, MetricValue] = dict(counts)
            elif command.action == REBIRTH:
                async with asyncio.timeout(command.timeout_s):
                    detail, result = await self._publish_rebirth(command), {}
            else:
                async with asyncio.timeout(command.timeout_s):
                    detail, result = await self._device_action(command)
        except Exception as exc:  # noqa: BLE001 - every failure is an ack; _failure logs unexpected ones in full
            status, detail = self._failure(command, exc)
            return self._ack(command, status, detail)
        finally:
            if command.action in (SET_INTERVAL, RELOAD_CONFIG) and self._on_devices_changed is not None:
                try:
                    self._on_devices_changed()
                except Exception:
                    log.exception("announcing the devices after command %s failed", command.id)
        return self._ack(command, AckStatus.OK, detail, result)

    def _failure(self, command: Command, exc: Exception) -> tuple[AckStatus, str]:
        """How a command that raised ``exc`` is answered."""
        status, detail = AckStatus.ERROR, str(exc) or type(exc).__name__
        if isinstance(exc, CommandRefused):
            status, detail = exc.status, exc.detail
        elif isinstance(exc, UnknownDevice):
            detail = f"{exc} (this gateway serves {len(exc.known)} devices)"
        elif isinstance(exc, ActionNotSupported):
            status, detail = AckStatus.UNSUPPORTED, f"device {command.device!r} does not support {command.action!r}"
        elif isinstance(exc, PollFailed):
            status, detail = (AckStatus.TIMEOUT if exc.timed_out else AckStatus.ERROR), exc.reason
        elif isinstance(exc, TimeoutError):
            status, detail = AckStatus.TIMEOUT, f"no answer from {command.device!r} within {command.timeout_s:g} s"
        elif not isinstance(exc, DeviceError | ConfigError | UplinkError | ValueError):
            log.error(
                "command %s (%s on %s) failed unexpectedly",
                command.id,
                command.action,
                command.device,
                exc_info=exc,
            )
            detail = f"unexpected error: {type(exc).__name__}: {exc}"
        return status, detail

    async def _device_action(self, command: Command) -> tuple[str, dict[str, MetricValue]]:
        if command.device == self.gateway:
            raise CommandRefused(
                AckStatus.ERROR,
                f"{command.action!r} is addressed to the gateway id {self.gateway!r}; "
                f"the gateway itself only takes {RELOAD_CONFIG!r} and {REBIRTH!r}",
            )
        if command.action == SET_INTERVAL:
            interval_s = _interval_param(command.params)
            before = self._devices.set_interval(command.device, interval_s)
            return (
                f"poll interval {interval_s:g} s (was {before:g} s)",
                {"interval_s": interval_s, "previous_interval_s": before},
            )
        if command.action == READ_NOW:
            _no_params(command)
            readings = await self._devices.poll_now(command.device)
            merged: dict[str, MetricValue] = {}
            for reading in readings:
                merged.update(reading.metrics)
            if len(merged) > MAX_METRICS_PER_READING:
                merged = dict(list(merged.items())[:MAX_METRICS_PER_READING])
            return f"{len(readings)} reading{'' if len(readings) == 1 else 's'} taken and queued", merged
        detail = await self._devices.execute(command.device, command.action, command.params)
        return detail, {}

    async def _reload_config(self, command: Command) -> tuple[str, dict[str, int]]:
        if command.device != self.gateway:
            raise CommandRefused(
                AckStatus.ERROR,
                f"{RELOAD_CONFIG!r} is addressed to the gateway id {self.gateway!r}, not to a device",
            )
        _no_params(command)
        if self._reload is None:
            raise CommandRefused(AckStatus.UNSUPPORTED, "this agent was not started from a config file")
        async with self._reload_lock:
            return await self._reload()

    async def _publish_rebirth(self, command: Command) -> str:
        if command.device != self.gateway:
            raise CommandRefused(
                AckStatus.ERROR, f"{REBIRTH!r} is addressed to the gateway id {self.gateway!r}, not to a device"
            )
        _no_params(command)
        if self._rebirth is None:
            raise CommandRefused(AckStatus.UNSUPPORTED, "this agent cannot publish a birth on request")
        return await self._rebirth()

    def _ack(
        self, command: Command, status: AckStatus, detail: str, result: dict[str, MetricValue] | None = None
    ) -> CommandAck:
        if status is not AckStatus.OK:
            log.warning("command %s (%s on %s): %s: %s", command.id, command.action, command.device, status, detail)
        return CommandAck(
            id=command.id, device=command.device, status=status, ts=now_ms(), detail=_cut(detail), result=result or {}
        )


def _interval_param(params: Mapping[str, MetricValue]) -> float:
    unknown = sorted(set(params) - {"interval_s"})
    if unknown:
        raise CommandRefused(AckStatus.ERROR, f"params: unknown {', '.join(unknown)} (set_interval takes interval_s)")
    value = params.get("interval_s")
    if value is None:
        raise CommandRefused(AckStatus.ERROR, "params.interval_s is required (seconds, a number)")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CommandRefused(AckStatus.ERROR, f"params.interval_s must be a number of seconds, not {value!r}")
    if not MIN_INTERVAL_S <= value <= MAX_INTERVAL_S:
        raise CommandRefused(
            AckStatus.ERROR, f"params.interval_s must be {MIN_INTERVAL_S:g}..{MAX_INTERVAL_S:g} s, not {value:g}"
        )
    return float(value)


def _no_params(command: Command) -> None:
    if command.params:
        raise CommandRefused(
            AckStatus.ERROR, f"{command.action} takes no params (got {', '.join(sorted(command.params))})"
        )


def _recover_ids(payload: bytes) -> tuple[str, str | None] | None:
    """The command id (and device id, if valid) of a payload that broke the contract, or None."""
    try:
        data: Any = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None
    if not isinstance(data, dict):
        return None
    command_id, device = data.get("id"), data.get("device")
    if not isinstance(command_id, str) or not _valid_id(command_id):
        return None
    return command_id, device if isinstance(device, str) and _valid_id(device) else None


def _valid_id(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        check_id(value, "id")
    except ContractError:
        return False
    return True


def _cut(text: str) -> str:
    return clean_text(text, MAX_DETAIL)
