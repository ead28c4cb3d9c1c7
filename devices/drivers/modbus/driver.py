"""The Modbus driver: one connection to one unit, polled by a plan made at load time.

Built from a profile and an instance config (:mod:`devices.drivers.modbus.config`). At construction the
profile's registers are merged into read requests (:func:`~devices.drivers.modbus.plan.plan_reads`) and each
register gets its precomputed decoder (:mod:`~devices.drivers.modbus.codec`); the plan is logged once. A poll
then runs the requests in order and calls the decoders: no string parsing, no type dispatch.

Errors are translated here and nowhere else (pymodbus never leaks out):

- cannot connect, no answer within ``timeout_s``, broken connection -> :class:`DeviceUnavailable`; the
  connection is dropped and the next poll reconnects (a late answer could otherwise be taken for the next one);
- exception code 6 (slave device busy) -> retried up to ``retries_busy`` times with a short, growing pause,
  then :class:`DeviceBusy`;
- any other exception code, or an answer of the wrong length -> :class:`DeviceResponseError`.

pymodbus' own retries and automatic reconnects are switched off, so the timeout stated is the timeout applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from devices.driver import MetricValue, Reading, now_ms
from devices.drivers.modbus.codec import Decoder, codec_for
from devices.drivers.modbus.config import ModbusCommonConfig
from devices.drivers.modbus.plan import ReadRequest, plan_reads
from devices.errors import DeviceBusy, DeviceConfigError, DeviceResponseError, DeviceUnavailable
from devices.profile import BIT_TABLES, Profile

log = logging.getLogger(__name__)

#: Added to ``timeout_s`` for the outer guard around each pymodbus call, so pymodbus' own timeout normally
#: fires first and the guard only catches a call that hangs for another reason.
TIMEOUT_MARGIN_S: Final = 0.5
#: Upper bound of the pause between two busy retries.
BUSY_PAUSE_CAP_S: Final = 2.0

#: Modbus exception codes by number (Modbus Application Protocol v1.1b3, section 7).
EXCEPTION_NAMES: Final[dict[int, str]] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "slave device failure",
    5: "acknowledge",
    6: "slave device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusClient(Protocol):
    """The part of pymodbus' async clients this driver uses."""

    @property
    def connected(self) -> bool: ...

    async def connect(self) -> bool: ...

    def close(self) -> None: ...

    def read_coils(self, address: int, *, count: int = ..., device_id: int = ...) -> Awaitable[ModbusPDU]: ...

    def read_discrete_inputs(self, address: int, *, count: int = ..., device_id: int = ...) -> Awaitable[ModbusPDU]: ...

    def read_holding_registers(
        self, address: int, *, count: int = ..., device_id: int = ...
    ) -> Awaitable[ModbusPDU]: ...

    def read_input_registers(self, address: int, *, count: int = ..., device_id: int = ...) -> Awaitable[ModbusPDU]: ...


ClientFactory = Callable[[], ModbusClient]
_Reader = Callable[..., Awaitable[ModbusPDU]]


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    offset: int
    decode: Decoder


@dataclass(frozen=True, slots=True)
class _Step:
    """One planned request with the decoders of the values it carries."""

    request: ReadRequest
    fields: tuple[_Field, ...]
    is_bits: bool


def _readers(client: ModbusClient) -> dict[str, _Reader]:
    return {
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
    }


class ModbusDriver:
    """Polls one Modbus unit (over TCP or RTU, depending on the client factory) as its profile describes."""

    def __init__(
        self,
        config: ModbusCommonConfig,
        profile: Profile,
        client_factory: ClientFactory,
        where: str,
    ) -> None:
        if profile.driver != "modbus":
            raise DeviceConfigError(f"profile {profile.id!r} is for driver {profile.driver!r}, not modbus")
        self.config = config
        self.profile = profile
        self.where = where
        self._client_factory = client_factory
        self._client: ModbusClient | None = None
        self._readers: dict[str, _Reader] = {}
        self._call_timeout_s = config.timeout_s + TIMEOUT_MARGIN_S
        self._steps = tuple(
            _Step(
                request=req,
                fields=tuple(_Field(r.name, r.address - req.address, codec_for(r).decode) for r in req.registers),
                is_bits=req.table in BIT_TABLES,
            )
            for req in plan_reads(profile.registers, max_gap=config.max_gap)
        )
        log.info(
            "%s: profile %s, %d metrics in %d requests per poll",
            where,
            profile.id,
            len(profile.registers),
            len(self._steps),
        )
        for line in self.describe_plan():
            log.info("%s:   %s", where, line)

    def describe_plan(self) -> list[str]:
        """One line per request of a poll."""
        return [step.request.describe() for step in self._steps]

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def open(self) -> None:
        """Connect. Raises :class:`DeviceUnavailable` if the device cannot be reached within ``timeout_s``."""
        if not self.connected:
            await self._connect()

    async def poll(self) -> list[Reading]:
        """Run the plan once; reconnects first if the last poll lost the connection."""
        if not self.connected:
            self._drop()
            await self._connect()
        ts_ms = now_ms()
        metrics: dict[str, MetricValue] = {}
        pause = self.config.pause_between_requests_s
        for index, step in enumerate(self._steps):
            if index and pause:
                await asyncio.sleep(pause)
            data = await self._read(step)
            for field in step.fields:
                value = field.decode(data, field.offset)
                if value is not None:
                    metrics[field.name] = value
        if not metrics:
            raise DeviceResponseError(f"{self.where}: no value in the answers is a number")
        return [Reading(ts_ms=ts_ms, metrics=metrics)]

    async def close(self) -> None:
        """Drop the connection. Never raises."""
        self._drop()

    async def _connect(self) -> None:
        client = self._client_factory()
        try:
            async with asyncio.timeout(self._call_timeout_s):
                ok = await client.connect()
        except TimeoutError:
            ok = False
        except (OSError, ModbusException) as exc:
            log.debug("%s: connect failed: %s", self.where, exc)
            ok = False
        if not ok:
            with contextlib.suppress(OSError, ModbusException):
                client.close()
            raise DeviceUnavailable(f"{self.where}: cannot connect within {self.config.timeout_s:g} s")
        self._client = client
        self._readers = _readers(client)
        if self.config.pause_after_connect_s:
            await asyncio.sleep(self.config.pause_after_connect_s)

    def _drop(self) -> None:
        client, self._client = self._client, None
        self._readers = {}
        if client is not None:
            with contextlib.suppress(OSError, ModbusException):
                client.close()

    async def _read(self, step: _Step) -> Sequence[int]:
        """One request, retried while the device says it is busy (bounded, growing pause with jitter)."""
        attempt = 0
        while True:
            try:
                return await self._read_once(step)
            except DeviceBusy:
                if attempt >= self.config.retries_busy:
                    raise
                pause = min(BUSY_PAUSE_CAP_S, self.config.busy_pause_s * 2**attempt)
                attempt += 1
                log.debug("%s: busy, retry %d in %.2f s", self.where, attempt, pause)
                await asyncio.sleep(pause * random.uniform(0.5, 1.0))

    async def _read_once(self, step: _Step) -> Sequence[int]:
        req = step.request
        reader = self._readers.get(req.table)
        if reader is None:  # the connection was dropped by an earlier request of this poll
            raise DeviceUnavailable(f"{self.where}: not connected")
        try:
            async with asyncio.timeout(self._call_timeout_s):
                response = await reader(req.address, count=req.count, device_id=self.config.unit_id)
        except TimeoutError as exc:
            self._drop()
            raise DeviceUnavailable(
                f"{self.where}: no answer to {req.table} {req.address}+{req.count} within {self.config.timeout_s:g} s"
            ) from exc
        except (ConnectionException, ModbusIOException, OSError) as exc:
            # ModbusIOException is how pymodbus reports "no response within timeout" (and answers it could not
            # match to the request): either way the link is not trustworthy until reconnected.
            self._drop()
            raise DeviceUnavailable(f"{self.where}: no valid answer to {req.table} {req.address}+{req.count}") from exc
        except ModbusException as exc:
            raise DeviceResponseError(f"{self.where}: {req.table} {req.address}+{req.count}: {exc}") from exc
        except asyncio.CancelledError:
            # Cancelled mid-request (the caller's poll timeout): the answer may still come and be mistaken
            # for the next request's, so start afresh.
            self._drop()
            raise
        return self._check(step, response)

    def _check(self, step: _Step, response: ModbusPDU) -> Sequence[int]:
        req = step.request
        if response.isError():
            code = int(response.exception_code)
            name = EXCEPTION_NAMES.get(code, "unknown")
            if code == ExcCodes.DEVICE_BUSY:
                raise DeviceBusy(f"{self.where}: {req.table} {req.address}+{req.count}: exception {code} ({name})")
            raise DeviceResponseError(f"{self.where}: {req.table} {req.address}+{req.count}: exception {code} ({name})")
        if step.is_bits:
            bits = response.bits
            # Bits come padded to whole bytes; fewer than asked is a short frame.
            if len(bits) < req.count:
                raise DeviceResponseError(
                    f"{self.where}: {req.table} {req.address}+{req.count}: {len(bits)} bits in the answer"
                )
            return bits
        registers = response.registers
        if len(registers) != req.count:
            raise DeviceResponseError(
                f"{self.where}: {req.table} {req.address}+{req.count}: {len(registers)} registers in the answer"
            )
        return registers

    def __repr__(self) -> str:
        return f"ModbusDriver({self.where}, profile={self.profile.id})"
