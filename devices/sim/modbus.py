"""A Modbus TCP simulator: profiles served as units over a real socket, values moving, faults on demand.

``async with ModbusSimulator(["xy-md02", "eastron-sdm630"]) as sim:`` listens on 127.0.0.1 (port 0 picks a
free port: ``sim.port``) and serves one unit per profile, unit ids 1..n in order. Every register of a profile
exists; its value follows the profile's ``sim`` hints (random walk, counter or constant), updated every
``update_interval_s``, and is encoded with the driver's own codecs (:mod:`devices.drivers.modbus.codec`), so
byte and word order are exercised end to end. Addresses between a unit's registers read as 0 (a merged read
across a hole succeeds); addresses outside them answer exception 2, as a real device would.

Fault knobs, per unit: :meth:`set_offline` (requests are swallowed: the client times out), :meth:`set_busy`
(the next ``n`` requests answer exception 6), :meth:`set_value` (pin a value until :meth:`unpin`),
:meth:`set_delay` (answers come that much later: a slow device). What a test may count: :attr:`connections`
(client connections open now), :attr:`traffic` (requests being answered now, and the most at once so far).

It uses pymodbus' SimDevice datastore; the device ``action`` hook (documented to run before every request
with the live registers, "modify inline") is where the current image is copied in and faults are injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Literal, cast

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from common.tasks import cancel_and_wait
from devices.driver import MetricValue
from devices.drivers.modbus.codec import RegisterCodec, codec_for
from devices.errors import DeviceConfigError
from devices.profile import BIT_TABLES, Profile, RegisterSpec, SimHints, load_profile

log = logging.getLogger(__name__)

#: Table addressed by each function code the server may receive.
_FC_TABLE: Final[dict[int, str]] = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete",
    3: "holding",
    6: "holding",
    16: "holding",
    22: "holding",
    23: "holding",
    4: "input",
}
#: Order of the four blocks of a SimDevice with separate tables.
_BLOCK_ORDER: Final = ("coil", "discrete", "holding", "input")
#: How long closing the listener may take.
SHUTDOWN_TIMEOUT_S: Final = 5.0


@dataclass
class _RegisterImage:
    base: int
    words: list[int]


@dataclass
class _BitImage:
    base: int  # a multiple of 16: pymodbus packs bits 16 to a register, bit 0 first
    bits: list[bool]

    def packed(self) -> list[int]:
        words: list[int] = []
        for start in range(0, len(self.bits), 16):
            word = 0
            for i, bit in enumerate(self.bits[start : start + 16]):
                if bit:
                    word |= 1 << i
            words.append(word)
        return words


@dataclass
class _Point:
    """One register's simulated value: the walk state and whether a test pinned it."""

    spec: RegisterSpec
    codec: RegisterCodec
    hints: SimHints
    value: float | bool
    pinned: bool = False
    step: float = 0.0
    lo: float | None = None
    hi: float | None = None


def _initial(spec: RegisterSpec, hints: SimHints) -> float | bool:
    if spec.type == "bool":
        return bool(hints.typical)
    if hints.typical is not None:
        return hints.typical
    if hints.min is not None and hints.max is not None:
        return (hints.min + hints.max) / 2
    return hints.min if hints.min is not None else (hints.max if hints.max is not None else spec.offset)


@dataclass
class Traffic:
    """Requests being served at once, over all units of a simulator (one client connection that serialises its
    requests never has more than one)."""

    in_flight: int = 0
    max_in_flight: int = 0
    served: int = 0


@dataclass
class SimulatedUnit:
    """One unit of the simulator: a profile's register image and its fault state."""

    unit_id: int
    profile: Profile
    rng: random.Random
    offline: bool = False
    busy_remaining: int = 0
    requests: int = 0
    delay_s: float = 0.0
    traffic: Traffic = field(default_factory=Traffic)
    _points: dict[str, _Point] = field(default_factory=dict)
    _registers: dict[str, _RegisterImage] = field(default_factory=dict)
    _bits: dict[str, _BitImage] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for table in _BLOCK_ORDER:
            regs = [r for r in self.profile.registers if r.table == table]
            if not regs:
                continue
            start = min(r.address for r in regs)
            end = max(r.address + r.width for r in regs)
            if table in BIT_TABLES:
                base = start - start % 16
                length = end - base
                self._bits[table] = _BitImage(base, [False] * (length + (-length) % 16))
            else:
                self._registers[table] = _RegisterImage(start, [0] * (end - start))
        for spec in self.profile.registers:
            hints = spec.sim or SimHints(mode="constant")
            point = _Point(spec, codec_for(spec), hints, _initial(spec, hints), lo=hints.min, hi=hints.max)
            if spec.type != "bool":
                if hints.step is not None:
                    point.step = hints.step
                elif hints.min is not None and hints.max is not None:
                    point.step = (hints.max - hints.min) / 50
                for bound in (hints.min, hints.max):
                    if bound is not None:
                        self._check_encodable(spec, point.codec, bound)
            self._points[spec.name] = point
            self._write(point)

    def _check_encodable(self, spec: RegisterSpec, codec: RegisterCodec, value: float) -> None:
        try:
            codec.encode(value)
        except ValueError as exc:
            raise DeviceConfigError(
                f"profile {self.profile.id!r} register {spec.name!r} field 'sim': {value} cannot be encoded ({exc})"
            ) from None

    def _write(self, point: _Point) -> None:
        spec = point.spec
        encoded = point.codec.encode(point.value)
        if spec.is_bit:
            image = self._bits[spec.table]
            image.bits[spec.address - image.base] = bool(encoded[0])
        else:
            words = self._registers[spec.table]
            at = spec.address - words.base
            words.words[at : at + spec.width] = [int(w) for w in encoded]

    def read(self, name: str) -> MetricValue:
        """The value a client reads now (decoded from the register image, so quantised like on the wire)."""
        spec = self._point(name).spec
        if spec.is_bit:
            bits = self._bits[spec.table]
            return bits.bits[spec.address - bits.base]
        words = self._registers[spec.table]
        value = self._points[name].codec.decode(words.words, spec.address - words.base)
        if value is None:
            raise ValueError(f"register {name!r} holds a non-finite float")
        return value

    def set_value(self, name: str, value: MetricValue) -> None:
        point = self._point(name)
        if point.spec.type == "bool":
            if not isinstance(value, bool):
                raise TypeError(f"register {name!r} is a bool; got {value!r}")
            point.value = value
        else:
            if isinstance(value, (bool, str)):
                raise TypeError(f"register {name!r} is numeric; got {value!r}")
            point.codec.encode(value)  # raises ValueError before anything changes
            point.value = float(value)
        point.pinned = True
        self._write(point)

    def unpin(self, name: str) -> None:
        self._point(name).pinned = False

    def _point(self, name: str) -> _Point:
        try:
            return self._points[name]
        except KeyError:
            raise KeyError(f"unit {self.unit_id} ({self.profile.id}) has no register {name!r}") from None

    def tick(self) -> None:
        """Move every unpinned value one step."""
        for point in self._points.values():
            if point.pinned or point.hints.mode == "constant":
                continue
            if isinstance(point.value, bool):
                if point.hints.flip_probability and self.rng.random() < point.hints.flip_probability:
                    point.value = not point.value
                    self._write(point)
                continue
            if point.step <= 0:
                continue
            previous, point.value = point.value, self._next(point, point.value)
            try:
                self._write(point)
            except ValueError:
                # Unbounded hints went past what the register type holds: a counter rolls over (as meters do),
                # a walk turns back.
                point.value = (point.lo or 0.0) if point.hints.mode == "counter" else previous
                self._write(point)

    def _next(self, point: _Point, value: float) -> float:
        if point.hints.mode == "counter":
            value += self.rng.uniform(0, point.step)
            if point.hi is not None and value > point.hi:
                value = point.lo if point.lo is not None else 0.0
            return value
        value += self.rng.uniform(-point.step, point.step)
        # Reflect at the bounds so values do not pile up on them.
        if point.hi is not None and value > point.hi:
            value = max(2 * point.hi - value, point.lo if point.lo is not None else -math.inf)
        if point.lo is not None and value < point.lo:
            value = min(2 * point.lo - value, point.hi if point.hi is not None else math.inf)
        return value

    def sim_device(self) -> SimDevice:
        blocks: list[list[SimData]] = []
        for table in _BLOCK_ORDER:
            if table in self._bits:
                bits = self._bits[table]
                blocks.append([SimData(address=bits.base, values=list(bits.bits), datatype=DataType.BITS)])
            elif table in self._registers:
                regs = self._registers[table]
                blocks.append([SimData(address=regs.base, values=list(regs.words), datatype=DataType.REGISTERS)])
            elif table in BIT_TABLES:
                # pymodbus needs a block per table; bit blocks must be BITS. The action answers exception 2.
                blocks.append([SimData(address=0, values=[False] * 16, datatype=DataType.BITS)])
            else:
                blocks.append([SimData(address=0, datatype=DataType.INVALID)])
        coils, discrete, holding, inputs = blocks
        return SimDevice(
            id=self.unit_id,
            simdata=(coils, discrete, holding, inputs),
            action=self.action,
        )

    async def action(
        self,
        function_code: int,
        _start_address: int,
        _address: int,
        _count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Runs before pymodbus serves a request for this unit: inject faults, then expose the current values."""
        self.requests += 1
        traffic = self.traffic
        traffic.in_flight += 1
        traffic.max_in_flight = max(traffic.max_in_flight, traffic.in_flight)
        try:
            if self.delay_s and not self.offline:
                await asyncio.sleep(self.delay_s)
            return self._serve(function_code, current_registers, set_values)
        finally:
            traffic.in_flight -= 1
            traffic.served += 1

    def _serve(
        self,
        function_code: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self.offline:
            # With ignore_missing_devices=True the server sends nothing for NoSuchIdException: the client sees
            # a timeout, exactly like a powered-off device on an RS485 line behind a gateway.
            raise NoSuchIdException(f"unit {self.unit_id} is offline")
        if self.busy_remaining > 0:
            self.busy_remaining -= 1
            return ExcCodes.DEVICE_BUSY
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # the simulated devices are read-only
        table = _FC_TABLE.get(function_code, "")
        if table in self._bits:
            packed = self._bits[table].packed()
            current_registers[: len(packed)] = packed
        elif table in self._registers:
            words = self._registers[table].words
            current_registers[: len(words)] = words
        else:
            return ExcCodes.ILLEGAL_ADDRESS  # the profile has nothing in this table
        return None


class ModbusSimulator:
    """Serves one unit per profile (unit ids 1..n) over Modbus TCP; an async context manager."""

    def __init__(
        self,
        profiles: Sequence[Profile | str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        update_interval_s: float = 1.0,
        seed: int | None = None,
        framer: Literal["socket", "rtu"] = "socket",
    ) -> None:
        """``framer="rtu"`` sends RTU frames (with CRC) over the TCP socket, like a transparent serial server;
        the ``modbus_rtu`` driver reaches it with the pyserial URL ``socket://host:port``."""
        if not profiles:
            raise DeviceConfigError("the simulator needs at least one profile")
        if len(profiles) > 247:
            raise DeviceConfigError("at most 247 units per simulator (Modbus unit ids 1..247)")
        if update_interval_s <= 0:
            raise ValueError("update_interval_s must be > 0")
        rng = random.Random(seed)
        loaded = [p if isinstance(p, Profile) else load_profile(p) for p in profiles]
        #: Requests being answered now and the most at once so far, over all units.
        self.traffic = Traffic()
        self.host = host
        self.requested_port = port
        self.update_interval_s = update_interval_s
        self.framer = FramerType.RTU if framer == "rtu" else FramerType.SOCKET
        self.units: dict[int, SimulatedUnit] = {
            i + 1: SimulatedUnit(i + 1, profile, rng, traffic=self.traffic) for i, profile in enumerate(loaded)
        }
        self._server: ModbusTcpServer | None = None
        self._updater: asyncio.Task[None] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``)."""
        if self._port is None:
            raise RuntimeError("the simulator is not running")
        return self._port

    @property
    def connections(self) -> int:
        """Client connections open now (counted by the pymodbus server)."""
        if self._server is None:
            return 0
        return len(self._server.active_connections)

    def describe(self) -> dict[str, object]:
        """What the CLI prints: where it listens and which profile each unit id serves."""
        return {
            "host": self.host,
            "port": self.port,
            "units": [{"unit_id": uid, "profile": u.profile.id} for uid, u in self.units.items()],
        }

    async def __aenter__(self) -> ModbusSimulator:
        server = ModbusTcpServer(
            [unit.sim_device() for unit in self.units.values()],
            address=(self.host, self.requested_port),
            framer=self.framer,
            ignore_missing_devices=True,
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise OSError(f"the Modbus simulator cannot listen on {self.host}:{self.requested_port}") from exc
        self._server = server
        listener = cast(asyncio.Server, server.transport)
        self._port = int(listener.sockets[0].getsockname()[1])
        self._updater = asyncio.create_task(self._update_loop(), name=f"modbus-sim-{self._port}")
        log.info(
            "Modbus simulator on %s:%d: %s",
            self.host,
            self._port,
            ", ".join(f"unit {uid}={u.profile.id}" for uid, u in self.units.items()),
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop updating and close the listener and every client connection."""
        updater, self._updater = self._updater, None
        if updater is not None:
            await cancel_and_wait([updater])
        server, self._server = self._server, None
        if server is not None:
            listener = cast(asyncio.Server | None, server.transport)
            await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated
            if listener is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(listener.wait_closed(), SHUTDOWN_TIMEOUT_S)
        self._port = None
        if updater is not None and updater.done() and not updater.cancelled():
            updater.result()  # an update loop that crashed is a bug of the simulator: raised once it is closed

    async def _update_loop(self) -> None:
        while True:
            await asyncio.sleep(self.update_interval_s)
            self.tick()

    def tick(self) -> None:
        """Move every unit's values one step (the update loop calls this every ``update_interval_s``)."""
        for unit in self.units.values():
            unit.tick()

    def unit(self, unit_id: int) -> SimulatedUnit:
        try:
            return self.units[unit_id]
        except KeyError:
            raise KeyError(f"the simulator has no unit {unit_id} (units: {sorted(self.units)})") from None

    def set_offline(self, unit_id: int, offline: bool = True) -> None:
        """An offline unit swallows every request (the client times out); ``False`` brings it back."""
        self.unit(unit_id).offline = offline

    def set_busy(self, unit_id: int, n: int) -> None:
        """The unit's next ``n`` requests answer exception 6 (slave device busy)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        self.unit(unit_id).busy_remaining = n

    def set_delay(self, unit_id: int, seconds: float) -> None:
        """The unit answers ``seconds`` late (0: at once). Keep it below the client's timeout: pymodbus' server
        stamps an answer with the last request received on its connection, so a later request would get it."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self.unit(unit_id).delay_s = seconds

    def set_value(self, unit_id: int, name: str, value: MetricValue) -> None:
        """Pin a register to ``value`` (engineering units) until :meth:`unpin`."""
        self.unit(unit_id).set_value(name, value)

    def unpin(self, unit_id: int, name: str) -> None:
        self.unit(unit_id).unpin(name)

    def value(self, unit_id: int, name: str) -> MetricValue:
        """The value a client would read now."""
        return self.unit(unit_id).read(name)
