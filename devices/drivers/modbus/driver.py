"""The Modbus driver: one unit, polled by a plan made at load time, over a link it may share with other units.

Built from a profile and an instance config (:mod:`devices.drivers.modbus.config`). At construction the
profile's registers are merged into read requests (:func:`~devices.drivers.modbus.plan.plan_reads`) and each
register gets its precomputed decoder (:mod:`~devices.drivers.modbus.codec`); the plan is logged once. A poll
then runs the requests in order and calls the decoders: no string parsing, no type dispatch.

The connection is a :class:`~devices.drivers.modbus.link.ModbusLink`: the units on one serial port (and the
``modbus_tcp`` units of one host and port that set ``share_connection``) share one client, one request at a
time. Errors are translated here and in :mod:`~devices.drivers.modbus.link`, nowhere else (pymodbus never
leaks out):

- cannot connect, no answer within ``timeout_s``, broken connection -> :class:`DeviceUnavailable`; the next
  poll reconnects if the connection is gone (what happens to a connection after a timeout: see ``link.py``);
- exception code 6 (slave device busy) -> retried up to ``retries_busy`` times with a short, growing pause,
  then :class:`DeviceBusy` (the link is free for other units during the pauses);
- any other exception code, or an answer of the wrong length -> :class:`DeviceResponseError`.

pymodbus' own retries and automatic reconnects are switched off, so the timeout stated is the timeout applied.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU

from devices.driver import MetricValue, Reading, now_ms
from devices.drivers.modbus.codec import Decoder, codec_for
from devices.drivers.modbus.config import ModbusCommonConfig
from devices.drivers.modbus.link import LinkSpec, LinkUser, ModbusLink, SerialClaim, link_for, note_use
from devices.drivers.modbus.plan import ReadRequest, plan_reads
from devices.errors import DeviceBusy, DeviceConfigError, DeviceResponseError
from devices.profile import BIT_TABLES, Profile

log = logging.getLogger(__name__)

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


class ModbusDriver:
    """Polls one Modbus unit (over TCP or RTU, as ``link`` says) as its profile describes."""

    def __init__(
        self,
        config: ModbusCommonConfig,
        profile: Profile,
        link: LinkSpec,
        where: str,
        *,
        serial_claim: SerialClaim | None = None,
    ) -> None:
        if profile.driver != "modbus":
            raise DeviceConfigError(f"profile {profile.id!r} is for driver {profile.driver!r}, not modbus")
        self.config = config
        self.profile = profile
        self.where = where
        self.link_spec = link
        self.user = LinkUser(where, config.unit_id, config.timeout_s, config.pause_after_connect_s)
        self._link: ModbusLink | None = None
        self._serial_claim = serial_claim
        self._steps = tuple(
            _Step(
                request=req,
                fields=tuple(_Field(r.name, r.address - req.address, codec_for(r).decode) for r in req.registers),
                is_bits=req.table in BIT_TABLES,
            )
            for req in plan_reads(profile.registers, max_gap=config.max_gap)
        )
        log.info(
            "%s: profile %s, %d metrics in %d requests per poll%s",
            where,
            profile.id,
            len(profile.registers),
            len(self._steps),
            f", on the shared link {link.key}" if link.shared else "",
        )
        for line in self.describe_plan():
            log.info("%s:   %s", where, line)

    def describe_plan(self) -> list[str]:
        """One line per request of a poll."""
        return [step.request.describe() for step in self._steps]

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.connected

    @property
    def link(self) -> ModbusLink | None:
        """The link in use (``None`` before the first open or poll and after close)."""
        return self._link

    async def open(self) -> None:
        """Connect. Raises :class:`DeviceUnavailable` if the device cannot be reached within ``timeout_s``."""
        await self._join().open(self.user)

    async def poll(self) -> list[Reading]:
        """Run the plan once; the link reconnects first if the connection was lost."""
        link = self._join()
        ts_ms = now_ms()
        metrics: dict[str, MetricValue] = {}
        pause = self.config.pause_between_requests_s
        for index, step in enumerate(self._steps):
            if index and pause:
                await asyncio.sleep(pause)
            data = await self._read(link, step)
            for field in step.fields:
                value = field.decode(data, field.offset)
                if value is not None:
                    metrics[field.name] = value
        if not metrics:
            raise DeviceResponseError(f"{self.where}: no value in the answers is a number")
        return [Reading(ts_ms=ts_ms, metrics=metrics)]

    async def close(self) -> None:
        """Leave the link (closing it if no other unit uses it). Never raises."""
        note_use()
        self._release_claim()
        link, self._link = self._link, None
        if link is not None:
            link.detach(self.user)

    def _join(self) -> ModbusLink:
        """The link, joined on first use (or again in a new event loop, as tests do)."""
        note_use()
        link = self._link
        if link is not None and not link.bound_to_running_loop():
            link.detach(self.user)
            link = self._link = None
        if link is None:
            self._release_claim()
            link = self._link = link_for(self.link_spec, self.user)
        return link

    def _release_claim(self) -> None:
        if self._serial_claim is not None:
            self._serial_claim.release()
            self._serial_claim = None

    async def _read(self, link: ModbusLink, step: _Step) -> Sequence[int]:
        """One request, retried while the device says it is busy (bounded, growing pause with jitter)."""
        attempt = 0
        req = step.request
        while True:
            try:
                response = await link.request(self.user, req.table, req.address, req.count)
                return self._check(step, response)
            except DeviceBusy:
                if attempt >= self.config.retries_busy:
                    raise
                pause = min(BUSY_PAUSE_CAP_S, self.config.busy_pause_s * 2**attempt)
                attempt += 1
                log.debug("%s: busy, retry %d in %.2f s", self.where, attempt, pause)
                await asyncio.sleep(pause * random.uniform(0.5, 1.0))

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
