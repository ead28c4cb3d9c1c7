"""Several Modbus units on one link (one serial port, one gateway connection), against the Modbus simulator
over real sockets on 127.0.0.1.

RTU units reach the simulator's RTU-over-TCP framing through pyserial's ``socket://`` URL, which stands for the
serial port (one port: one link). Connections are counted by the simulator's server (``sim.connections``), and
requests served at once by its ``traffic`` counter. No broker or database: plain tests, like
``test_modbus_against_sim.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal

import pytest

from devices.drivers import build_driver
from devices.drivers.modbus import ModbusDriver
from devices.drivers.modbus.link import RTU_QUIET_S, links_of_running_loop
from devices.errors import DeviceConfigError, DeviceError, DeviceUnavailable
from devices.sim.modbus import ModbusSimulator

pytest.importorskip("serial")

PROFILES = ["xy-md02", "pm-sensor-rs485", "water-level-rs485"]
TIMEOUT_S = 0.5
Transport = Literal["rtu", "tcp"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unit_driver(sim_port: int, transport: Transport, unit_id: int, profile: str, **options: Any) -> ModbusDriver:
    opts: dict[str, Any]
    if transport == "rtu":
        opts = {"port": f"socket://127.0.0.1:{sim_port}", "baudrate": 19200}
    else:
        opts = {"host": "127.0.0.1", "port": sim_port, "share_connection": True}
    opts |= {"unit_id": unit_id, "timeout_s": TIMEOUT_S, "busy_pause_s": 0.01, **options}
    driver = build_driver(f"modbus_{transport}", opts, profile)
    assert isinstance(driver, ModbusDriver)
    return driver


def drivers_for(sim: ModbusSimulator, transport: Transport, **options: Any) -> list[ModbusDriver]:
    return [unit_driver(sim.port, transport, uid, u.profile.id, **options) for uid, u in sim.units.items()]


def expected(sim: ModbusSimulator, unit_id: int) -> dict[str, Any]:
    return {r.name: sim.value(unit_id, r.name) for r in sim.units[unit_id].profile.registers}


async def poll_all(drivers: Sequence[ModbusDriver]) -> list[dict[str, Any] | BaseException]:
    """Poll every driver at once; each result is the metrics read or the exception raised."""
    results = await asyncio.gather(*(d.poll() for d in drivers), return_exceptions=True)
    return [r if isinstance(r, BaseException) else dict(r[0].metrics) for r in results]


async def close_all(drivers: Sequence[ModbusDriver]) -> None:
    for driver in drivers:
        await driver.close()


async def eventually(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture(params=["rtu", "tcp"])
def transport(request: pytest.FixtureRequest) -> Transport:
    value: Transport = request.param
    return value


@pytest.fixture
async def sim(transport: Transport) -> AsyncIterator[ModbusSimulator]:
    # update_interval_s: values move only when a test ticks, so every reading can be compared exactly.
    async with ModbusSimulator(PROFILES, framer="rtu" if transport == "rtu" else "socket", update_interval_s=3600) as s:
        yield s


async def test_units_on_one_transport_read_correctly_over_one_connection(
    sim: ModbusSimulator, transport: Transport
) -> None:
    drivers = drivers_for(sim, transport)
    try:
        for _ in range(5):
            sim.tick()
            results = await poll_all(drivers)
            for unit_id, result in zip(sim.units, results, strict=True):
                assert result == expected(sim, unit_id), unit_id
            assert sim.connections == 1
        links = {id(d.link) for d in drivers}
        assert len(links) == 1
        link = drivers[0].link
        assert link is not None
        assert link.connects == 1
        assert link.users == 3
    finally:
        await close_all(drivers)


async def test_tcp_units_without_share_connection_each_have_their_own() -> None:
    """The control of the count above: the simulator does see one connection per unit when they do not share."""
    async with ModbusSimulator(PROFILES, update_interval_s=3600) as sim:
        drivers = [
            unit_driver(sim.port, "tcp", uid, u.profile.id, share_connection=False) for uid, u in sim.units.items()
        ]
        try:
            results = await poll_all(drivers)
            assert results == [expected(sim, uid) for uid in sim.units]
            assert sim.connections == 3
            assert links_of_running_loop() == {}
        finally:
            await close_all(drivers)


async def test_concurrent_polls_never_overlap_on_the_wire(sim: ModbusSimulator, transport: Transport) -> None:
    for unit_id in sim.units:
        sim.set_delay(unit_id, 0.01)  # each answer takes a while, so overlapping requests would be seen
    drivers = drivers_for(sim, transport)
    try:
        for _ in range(10):
            sim.tick()
            # Each unit polled twice at once too: six polls in flight on one link.
            results = await poll_all([*drivers, *drivers])
            for unit_id, result in zip([*sim.units, *sim.units], results, strict=True):
                assert result == expected(sim, unit_id), unit_id
        assert sim.traffic.served >= 60
        assert sim.traffic.max_in_flight == 1
    finally:
        await close_all(drivers)


async def test_overlap_is_seen_when_units_do_not_share() -> None:
    """The control of the test above: without a shared link the simulator does serve requests at once."""
    async with ModbusSimulator(PROFILES, update_interval_s=3600) as sim:
        for unit_id in sim.units:
            sim.set_delay(unit_id, 0.05)
        drivers = [
            unit_driver(sim.port, "tcp", uid, u.profile.id, share_connection=False) for uid, u in sim.units.items()
        ]
        try:
            await poll_all(drivers)
            assert sim.traffic.max_in_flight > 1
        finally:
            await close_all(drivers)


async def test_an_offline_unit_fails_alone_and_comes_back(sim: ModbusSimulator, transport: Transport) -> None:
    drivers = drivers_for(sim, transport)
    try:
        assert all(isinstance(r, dict) for r in await poll_all(drivers))
        sim.set_offline(2)
        for _ in range(3):
            sim.tick()
            started = time.monotonic()
            results = await poll_all(drivers)
            elapsed = time.monotonic() - started
            assert isinstance(results[1], DeviceUnavailable), results[1]
            assert "no answer" in str(results[1])
            assert results[0] == expected(sim, 1)
            assert results[2] == expected(sim, 3)
            # One timeout per round, plus the RTU quiet time before the next request on the line.
            assert elapsed < TIMEOUT_S + RTU_QUIET_S + 0.5, elapsed
        sim.set_offline(2, False)
        sim.tick()
        assert await poll_all(drivers) == [expected(sim, uid) for uid in sim.units]
        # The timeouts did not cost the other units their connection.
        link = drivers[0].link
        assert link is not None
        assert link.connects == 1
        assert sim.connections == 1
    finally:
        await close_all(drivers)


async def test_busy_retries_leave_the_link_to_other_units(sim: ModbusSimulator, transport: Transport) -> None:
    drivers = drivers_for(sim, transport)
    slow = unit_driver(sim.port, transport, 1, PROFILES[0], busy_pause_s=1.0, retries_busy=1)
    try:
        await poll_all(drivers)
        sim.set_busy(1, 1)
        busy_poll = asyncio.create_task(slow.poll())
        await asyncio.sleep(0.1)  # the busy answer has come; unit 1 waits 0.5..1 s before it retries
        started = time.monotonic()
        results = await poll_all(drivers[1:])
        assert time.monotonic() - started < 0.4, "the other units waited for unit 1's busy pause"
        assert results == [expected(sim, 2), expected(sim, 3)]
        assert not busy_poll.done()
        (reading,) = await busy_poll
        assert dict(reading.metrics) == expected(sim, 1)
    finally:
        await close_all([*drivers, slow])


async def test_every_unit_reconnects_after_the_simulator_restarts(transport: Transport) -> None:
    port = free_port()
    framer: Literal["rtu", "socket"] = "rtu" if transport == "rtu" else "socket"
    async with ModbusSimulator(PROFILES, port=port, framer=framer, update_interval_s=3600) as sim:
        drivers = drivers_for(sim, transport)
        assert await poll_all(drivers) == [expected(sim, uid) for uid in sim.units]
    try:
        # The connection is broken: every unit fails (none waits out a timeout for it), none hangs.
        started = time.monotonic()
        results = await poll_all(drivers)
        assert all(isinstance(r, DeviceUnavailable) for r in results), results
        assert time.monotonic() - started < TIMEOUT_S
        async with ModbusSimulator(PROFILES, port=port, framer=framer, update_interval_s=3600) as again:
            assert await poll_all(drivers) == [expected(again, uid) for uid in again.units]
            assert again.connections == 1
    finally:
        await close_all(drivers)


async def test_a_connection_broken_mid_request_fails_the_request_at_once(transport: Transport) -> None:
    port = free_port()
    framer: Literal["rtu", "socket"] = "rtu" if transport == "rtu" else "socket"
    async with ModbusSimulator(PROFILES, port=port, framer=framer, update_interval_s=3600) as sim:
        drivers = drivers_for(sim, transport, timeout_s=5.0)
        await poll_all(drivers)
        sim.set_delay(2, 3.0)
        in_flight = asyncio.create_task(drivers[1].poll())
        await asyncio.sleep(0.2)
        started = time.monotonic()
    try:
        with pytest.raises(DeviceUnavailable):
            await in_flight
        assert time.monotonic() - started < 2.0, "the request waited for its timeout on a dead connection"
    finally:
        await close_all(drivers)


async def test_closing_one_unit_keeps_the_link_closing_the_last_closes_it(
    sim: ModbusSimulator, transport: Transport
) -> None:
    drivers = drivers_for(sim, transport)
    await poll_all(drivers)
    link = drivers[0].link
    assert link is not None
    assert sim.connections == 1
    await drivers[0].close()
    await drivers[1].close()
    assert drivers[0].link is None
    assert not drivers[0].connected
    assert drivers[2].connected  # through the same link
    assert link.users == 1
    assert await poll_all(drivers[2:]) == [expected(sim, 3)]
    assert sim.connections == 1
    assert link.connects == 1
    await drivers[2].close()
    assert not link.connected
    assert links_of_running_loop() == {}
    await eventually(lambda: sim.connections == 0)
    # A closed unit that polls again opens a new link.
    assert await poll_all(drivers[:1]) == [expected(sim, 1)]
    assert drivers[0].link is not link
    await close_all(drivers)


async def test_a_connect_failure_is_not_retried_by_every_waiting_unit() -> None:
    """Units queued behind a connect attempt that fails fail at once, not one connect timeout each."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # never accepted: connecting hangs (or is refused) once the backlog is full
        port = int(listener.getsockname()[1])
        fillers = []
        try:
            for _ in range(8):
                filler = socket.socket()
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
                fillers.append(filler)
            drivers = [unit_driver(port, "tcp", uid, "xy-md02", timeout_s=0.3) for uid in range(1, 6)]
            started = time.monotonic()
            results = await poll_all(drivers)
            elapsed = time.monotonic() - started
            await close_all(drivers)
        finally:
            for filler in fillers:
                filler.close()
    assert all(isinstance(r, DeviceUnavailable) for r in results), results
    assert elapsed < 0.3 * 2 + 0.3, elapsed


def test_units_on_one_serial_port_with_different_settings_are_refused_when_built() -> None:
    port = "/dev/ttyTEST-shared-link-0"
    first = build_driver("modbus_rtu", {"port": port, "unit_id": 1, "baudrate": 9600}, "xy-md02")
    with pytest.raises(DeviceConfigError) as refused:
        build_driver("modbus_rtu", {"port": port, "unit_id": 2, "baudrate": 19200, "parity": "E"}, "xy-md02")
    message = str(refused.value)
    assert f"modbus_rtu {port} unit 2" in message
    assert f"modbus_rtu {port} unit 1" in message
    assert "baudrate 19200 (not 9600)" in message
    assert "parity E (not N)" in message
    # Same settings: fine; another port: fine.
    build_driver("modbus_rtu", {"port": port, "unit_id": 3, "baudrate": 9600}, "xy-md02")
    build_driver("modbus_rtu", {"port": port + "b", "unit_id": 2, "baudrate": 19200}, "xy-md02")
    del first


async def test_a_unit_with_other_settings_than_the_open_link_is_unavailable() -> None:
    """Not built together (as in a reload that changes a line unit by unit): refused when it connects, naming
    the unit that holds the port; it works once that unit has closed."""
    async with ModbusSimulator(PROFILES[:2], framer="rtu", update_interval_s=3600) as sim:
        first = unit_driver(sim.port, "rtu", 1, PROFILES[0])
        await first.open()
        other = unit_driver(sim.port, "rtu", 2, PROFILES[1], baudrate=9600)
        with pytest.raises(DeviceUnavailable) as refused:
            await other.poll()
        message = str(refused.value)
        assert f"modbus_rtu socket://127.0.0.1:{sim.port} unit 2" in message
        assert f"open with other settings by modbus_rtu socket://127.0.0.1:{sim.port} unit 1" in message
        assert "baudrate 9600 (not 19200)" in message
        await first.close()
        (reading,) = await other.poll()
        assert dict(reading.metrics) == expected(sim, 2)
        await other.close()


async def test_errors_of_one_unit_do_not_leak_into_the_next_round(sim: ModbusSimulator, transport: Transport) -> None:
    """Offline, busy beyond retries and back, many rounds: every reading that arrives is the right one."""
    drivers = drivers_for(sim, transport, retries_busy=0)
    try:
        failures: dict[int, int] = {1: 0, 2: 0, 3: 0}
        for round_ in range(12):
            sim.tick()
            sim.set_offline(2, round_ % 3 == 0)
            sim.set_busy(3, 1 if round_ % 4 == 1 else 0)
            results = await poll_all(drivers)
            for unit_id, result in zip(sim.units, results, strict=True):
                if isinstance(result, DeviceError):
                    failures[unit_id] += 1
                else:
                    assert result == expected(sim, unit_id), (round_, unit_id)
        assert failures == {1: 0, 2: 4, 3: 3}
    finally:
        await close_all(drivers)
