"""Modbus links: the units on one transport share one pymodbus client, one transaction at a time.

A :class:`ModbusLink` owns one client for one transport (:class:`LinkKey`): a serial port for ``modbus_rtu``
(always shared: RS-485 is one half-duplex line, and pyserial opens a port exclusively), or a ``host:port`` for
``modbus_tcp`` units that set ``share_connection`` (an RTU gateway that takes one to four TCP connections). An
``asyncio.Lock`` makes every request an exclusive transaction, request and answer; a unit's busy retries and
the pauses between its requests happen outside it, so the other units get their turns. The link connects on
its first user's request and closes when its last user closes.

Failure semantics (a late answer must never be taken for another request's answer):

- a timeout fails that unit's request only. On TCP the connection is kept: pymodbus numbers each request and
  its framer skips an answer whose transaction id is not the one awaited (``FramerBase.handleFrame``), and a
  late answer with no request waiting is dropped. Should unparsed bytes be left in the receive buffer (half a
  late frame), the stream may be out of step, so the connection is dropped instead. On RTU (no transaction id)
  the next request first waits until the line has been silent for :data:`RTU_QUIET_S`, and pymodbus empties its
  receive buffer when it sends; answers from another unit id are skipped by the framer, and an answer with the
  wrong function code is refused. A unit with a connection of its own (``share_connection: false``) drops it,
  as this driver always did.
- a broken connection (reset, EOF) fails the request in flight at once and drops the client; the next request
  of any unit reconnects, with that unit's ``timeout_s``. Units that were waiting while a connect attempt
  failed fail at once instead of each trying again.
- every request is cut at its own unit's ``timeout_s``; the client's own timeout is only a backstop
  (:data:`CLIENT_TIMEOUT_S`), so one unit's timeout never applies to another.

Where links live: drivers are built by ``devices.drivers.build_driver(name, options, profile)`` from their
config and profile alone, and the edge knows nothing of Modbus transports, so there is nobody to pass a shared
link in. Units meet by transport key in a pool kept here, one per running event loop (a link's lock and
transport are bound to the loop it was made in; tests run many loops). The pools are held weakly by loop; a
link leaves its pool when its last unit closes.

Serial settings: units on one port must agree on baudrate, parity, stopbits and bytesize. Drivers built
together (a config being loaded, ``ioc edge check``: no Modbus driver used in between, see :func:`note_use`)
are checked against each other when built (:func:`claim_serial_port`, :class:`DeviceConfigError`). A unit
asking for an open link with other settings is refused when it connects (:class:`DeviceUnavailable`: as during
a reload that changes the settings of a line unit by unit, it clears once the old units have closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from devices.errors import DeviceConfigError, DeviceResponseError, DeviceUnavailable

log = logging.getLogger(__name__)

#: The pymodbus client's own request timeout: a backstop only, above the largest ``timeout_s`` allowed (60 s).
#: Each request is cut at its unit's ``timeout_s`` first, so pymodbus' own no-answer counting (which closes
#: the connection after a few timeouts in a row, whichever units they were for) never comes into play.
CLIENT_TIMEOUT_S: Final = 90.0
#: RTU: after a request was cut short, the line must be silent this long before the next request is sent
#: (well above the 3.5 character times that end a frame, even at 1200 baud: 32 ms).
RTU_QUIET_S: Final = 0.25
#: RTU: if the line is still not silent after this long, the client is dropped and reopened.
RTU_QUIET_MAX_S: Final = 2.0

#: Function code of each table's read request (a response echoes it; 0x80 is set on exception responses).
FUNCTION_CODES: Final[dict[str, int]] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


class ModbusClient(Protocol):
    """The part of pymodbus' async clients a link uses."""

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


@dataclass(frozen=True, slots=True)
class ClientHooks:
    """Callbacks a client factory passes to pymodbus (``trace_connect``, ``trace_packet``)."""

    on_connection: Callable[[bool], None]
    on_packet: Callable[[bool, bytes], bytes]


#: Makes a new, unconnected client for a link (``timeout`` should be :data:`CLIENT_TIMEOUT_S`).
ClientFactory = Callable[[ClientHooks], ModbusClient]


@dataclass(frozen=True, slots=True)
class LinkKey:
    """What units share: a serial port (``rtu``), or a host and port (``tcp``)."""

    kind: Literal["tcp", "rtu"]
    address: str

    def __str__(self) -> str:
        return f"{self.kind} {self.address}"


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """The line settings every unit on one serial port must share."""

    baudrate: int
    parity: str
    stopbits: int
    bytesize: int

    def differences(self, other: SerialSettings) -> list[str]:
        """``"baudrate 19200 (not 9600)"`` for each setting that differs from ``other``'s."""
        return [
            f"{name} {getattr(self, name)} (not {getattr(other, name)})"
            for name in ("baudrate", "parity", "stopbits", "bytesize")
            if getattr(self, name) != getattr(other, name)
        ]


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """How a driver reaches its unit: the transport, how to make its client, whether it is shared."""

    key: LinkKey
    factory: ClientFactory
    shared: bool
    serial: SerialSettings | None = None

    @property
    def rtu(self) -> bool:
        return self.key.kind == "rtu"


@dataclass(frozen=True, slots=True, eq=False)
class LinkUser:
    """One unit on a link: what the link needs of its driver."""

    where: str
    unit_id: int
    timeout_s: float
    pause_after_connect_s: float


class ModbusLink:
    """One pymodbus client for one transport; each request an exclusive transaction. See the module docstring."""

    def __init__(self, spec: LinkSpec, owner: str, pool: dict[LinkKey, ModbusLink] | None) -> None:
        self.spec = spec
        self.key = spec.key
        #: The unit that made the link (named when another unit's serial settings differ).
        self.owner = owner
        #: Connections made so far.
        self.connects = 0
        self._pool = pool
        self._loop = weakref.ref(asyncio.get_running_loop())
        self._lock = asyncio.Lock()
        self._users: list[LinkUser] = []
        self._client: ModbusClient | None = None
        self._generation = 0
        self._in_flight = False
        self._failed_at: float | None = None
        self._last_rx = 0.0
        self._quiet_from: float | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def users(self) -> int:
        return len(self._users)

    def bound_to_running_loop(self) -> bool:
        return self._loop() is asyncio.get_running_loop()

    def attach(self, user: LinkUser) -> None:
        if user not in self._users:
            self._users.append(user)

    def detach(self, user: LinkUser) -> None:
        """``user`` is done with the link; the last user's going closes it."""
        with contextlib.suppress(ValueError):
            self._users.remove(user)
        if self._users:
            return
        if self._client is not None and self.spec.shared:
            log.info("modbus link %s: closed (no unit left)", self.key)
        self._drop()
        if self._pool is not None and self._pool.get(self.key) is self:
            del self._pool[self.key]

    async def open(self, user: LinkUser) -> None:
        """Connect if not connected (for ``Driver.open``)."""
        asked_at = time.monotonic()
        async with self._lock:
            await self._ready(user, asked_at)

    async def request(self, user: LinkUser, table: str, address: int, count: int) -> ModbusPDU:
        """One read as an exclusive transaction on the link. Raises :class:`DeviceUnavailable` (no connection,
        no answer within ``user.timeout_s``) or :class:`DeviceResponseError` (an answer that is not one)."""
        asked_at = time.monotonic()
        what = f"{table} {address}+{count}"
        async with self._lock:
            client = await self._ready(user, asked_at)
            read = _reader(client, table)
            self._in_flight = True
            try:
                async with asyncio.timeout(user.timeout_s):
                    response = await read(address, count=count, device_id=user.unit_id)
            except TimeoutError as exc:
                self._cut_short(client)
                raise DeviceUnavailable(f"{user.where}: no answer to {what} within {user.timeout_s:g} s") from exc
            except (ConnectionException, ModbusIOException, OSError) as exc:
                # ModbusIOException is how pymodbus reports answers it could not match to the request.
                self._drop()
                raise DeviceUnavailable(f"{user.where}: no valid answer to {what}") from exc
            except ModbusException as exc:
                raise DeviceResponseError(f"{user.where}: {what}: {exc}") from exc
            except asyncio.CancelledError:
                # Cancelled mid-request (the caller's poll timeout): the answer may still come.
                self._cut_short(client)
                raise
            finally:
                self._in_flight = False
            function_code = int(response.function_code) & 0x7F
            if function_code != FUNCTION_CODES[table]:
                self._cut_short(client)
                raise DeviceResponseError(f"{user.where}: {what}: answer of function code {function_code}")
        return response

    async def _ready(self, user: LinkUser, asked_at: float) -> ModbusClient:
        """The connected client, after the quiet time a cut-short RTU request left; connects if needed."""
        if self._client is not None and not self._client.connected:
            log.debug("modbus link %s: connection lost", self.key)
            self._drop()
        if self._client is not None and self._quiet_from is not None:
            await self._wait_for_silence()
        if self._client is None:
            failed_at = self._failed_at
            if failed_at is not None and failed_at >= asked_at:
                # Another unit tried while this one waited for the lock: do not queue one more connect timeout.
                raise DeviceUnavailable(
                    f"{user.where}: cannot connect to {self.key.address} "
                    f"(failed {time.monotonic() - failed_at:.1f} s ago)"
                )
            await self._connect(user)
        assert self._client is not None
        return self._client

    async def _connect(self, user: LinkUser) -> None:
        self._generation += 1
        client = self.spec.factory(ClientHooks(self._hook_connection(self._generation), self._on_packet))
        try:
            async with asyncio.timeout(user.timeout_s):
                ok = await client.connect()
        except TimeoutError:
            ok = False
        except (OSError, ModbusException) as exc:
            log.debug("%s: connect failed: %s", user.where, exc)
            ok = False
        except asyncio.CancelledError:
            _close(client)
            raise
        if not ok:
            _close(client)
            self._failed_at = time.monotonic()
            raise DeviceUnavailable(f"{user.where}: cannot connect within {user.timeout_s:g} s")
        self._client = client
        self._failed_at = None
        self._quiet_from = None
        self.connects += 1
        if self.spec.shared:
            log.info("modbus link %s: connected (%d units)", self.key, len(self._users))
        # Gateways that drop early requests: the link waits the longest quiet time any of its units asks for.
        pause = max((u.pause_after_connect_s for u in self._users), default=user.pause_after_connect_s)
        if pause:
            await asyncio.sleep(pause)

    def _hook_connection(self, generation: int) -> Callable[[bool], None]:
        def on_connection(connected: bool) -> None:
            if connected or generation != self._generation or not self._in_flight or self._client is None:
                return
            # The connection broke with a request in flight: pymodbus would wait out the whole timeout for an
            # answer that cannot come now; fail the request it is waiting on instead.
            waiting = getattr(getattr(self._client, "ctx", None), "response_future", None)
            if isinstance(waiting, asyncio.Future) and not waiting.done():
                waiting.set_exception(ConnectionException(f"connection to {self.key.address} lost"))

        return on_connection

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._last_rx = time.monotonic()
        return data

    def _cut_short(self, client: ModbusClient) -> None:
        """A request got no (usable) answer in time; its answer may still come. See the module docstring."""
        if self.spec.rtu:
            self._quiet_from = time.monotonic()
        elif not self.spec.shared or _unparsed_bytes(client):
            self._drop()

    async def _wait_for_silence(self) -> None:
        assert self._quiet_from is not None
        started = time.monotonic()
        while True:
            now = time.monotonic()
            silent_for = now - max(self._quiet_from, self._last_rx)
            if silent_for >= RTU_QUIET_S:
                break
            if now - started >= RTU_QUIET_MAX_S:
                log.warning("modbus link %s: line not silent after %g s, reopening", self.key, RTU_QUIET_MAX_S)
                self._drop()
                break
            await asyncio.sleep(RTU_QUIET_S - silent_for)
        # What came meanwhile is thrown away by pymodbus when the next request is sent (it empties its buffer).
        self._quiet_from = None

    def _drop(self) -> None:
        client, self._client = self._client, None
        self._quiet_from = None
        if client is not None:
            _close(client)

    def __repr__(self) -> str:
        return f"ModbusLink({self.key}, {len(self._users)} units, {'connected' if self.connected else 'idle'})"


def _reader(client: ModbusClient, table: str) -> Callable[..., Awaitable[ModbusPDU]]:
    if table == "coil":
        return client.read_coils
    if table == "discrete":
        return client.read_discrete_inputs
    if table == "holding":
        return client.read_holding_registers
    return client.read_input_registers


def _unparsed_bytes(client: ModbusClient) -> bool:
    """Whether pymodbus holds received bytes it could not make a frame of (``ModbusProtocol.recv_buffer``)."""
    buffer: Any = getattr(getattr(client, "ctx", None), "recv_buffer", b"")
    return bool(buffer)


def _close(client: ModbusClient) -> None:
    with contextlib.suppress(OSError, ModbusException, RuntimeError):
        client.close()


# ---------------------------------------------------------------------------------------------------- pool

_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[LinkKey, ModbusLink]] = weakref.WeakKeyDictionary()


def link_for(spec: LinkSpec, user: LinkUser) -> ModbusLink:
    """The link ``user`` polls through, made if needed, with ``user`` attached; a shared one from this loop's
    pool. Raises :class:`DeviceUnavailable` if the serial port is open with other settings."""
    if not spec.shared:
        own = ModbusLink(spec, user.where, None)
        own.attach(user)
        return own
    loop = asyncio.get_running_loop()
    pool = _POOLS.setdefault(loop, {})
    link: ModbusLink | None = pool.get(spec.key)
    if link is None:
        link = pool[spec.key] = ModbusLink(spec, user.where, pool)
    elif spec.serial is not None and link.spec.serial is not None and spec.serial != link.spec.serial:
        raise DeviceUnavailable(
            f"{user.where}: serial port {spec.key.address} is open with other settings by {link.owner}: "
            + ", ".join(spec.serial.differences(link.spec.serial))
        )
    link.attach(user)
    return link


def links_of_running_loop() -> dict[LinkKey, ModbusLink]:
    """The shared links of the running loop (a copy; for tests and diagnostics)."""
    return dict(_POOLS.get(asyncio.get_running_loop(), {}))


# ---------------------------------------------------------------------------------------- serial claims


@dataclass(eq=False)
class SerialClaim:
    """A built ``modbus_rtu`` driver's serial settings, compared with drivers built with it until it is used."""

    port: str
    settings: SerialSettings
    where: str
    epoch: int
    released: bool = field(default=False)

    def release(self) -> None:
        """The driver is in use (or closed): from now on its link answers for it."""
        if not self.released:
            self.released = True
            _CLAIMS.discard(self)


_CLAIMS: weakref.WeakSet[SerialClaim] = weakref.WeakSet()
_claims_lock = threading.Lock()  # configs are loaded in worker threads too (the edge's reload)
_epoch = 0


def note_use() -> None:
    """A Modbus driver opened, polled or closed: drivers built before now and never used since are left over
    (a discarded plan, or the unchanged devices of a reloaded config) and no longer count as built together."""
    global _epoch  # noqa: PLW0603  # a process-wide counter, by design (see the module docstring)
    _epoch += 1


def claim_serial_port(port: str, settings: SerialSettings, where: str) -> SerialClaim:
    """Register a ``modbus_rtu`` driver being built; :class:`DeviceConfigError` naming both units if one built
    with it (and not used since) has other settings on the same port."""
    with _claims_lock:
        for other in list(_CLAIMS):
            if other.port == port and other.epoch == _epoch and not other.released and other.settings != settings:
                raise DeviceConfigError(
                    f"{where}: serial settings differ from {other.where} on the same port: "
                    + ", ".join(settings.differences(other.settings))
                    + " (units on one serial port share one line: give them the same baudrate, parity, "
                    "stopbits and bytesize)"
                )
        claim = SerialClaim(port, settings, where, _epoch)
        _CLAIMS.add(claim)
        return claim
