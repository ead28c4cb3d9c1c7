"""The shared Modbus link: late answers, per-unit timeouts, serial settings checked at build, one pool per loop.

The late-answer cases need a device that answers when the test says, so a small scripted Modbus server is
written here (raw frames over a real socket on 127.0.0.1): the simulator answers at once or not at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from pymodbus.framer import FramerRTU

from devices.drivers import build_driver
from devices.drivers.modbus import ModbusDriver
from devices.drivers.modbus.link import (
    RTU_QUIET_S,
    LinkKey,
    ModbusLink,
    SerialSettings,
    links_of_running_loop,
    note_use,
)
from devices.errors import DeviceConfigError, DeviceResponseError, DeviceUnavailable
from devices.profile import Profile

ONE_REGISTER = Profile.model_validate(
    {
        "id": "one-register",
        "kind": "test_device",
        "manufacturer": "test",
        "model": "one holding register",
        "source": "tests/unit/devices/test_modbus_link.py",
        "driver": "modbus",
        "registers": [{"name": "v", "address": 0, "table": "holding", "type": "uint16"}],
    }
)


@dataclass
class Answer:
    """How the scripted server answers one request: after ``delay_s``, with ``value`` in every register (as an
    answer of ``function_code``)."""

    delay_s: float
    value: int
    function_code: int = 3


@dataclass
class ScriptedServer:
    """Answers the n-th request it receives as ``script[n]`` says (the last entry repeats), over TCP framing
    (MBAP header, transaction id echoed) or RTU framing (unit id, CRC). Counts the connections it accepted."""

    framing: Literal["tcp", "rtu"]
    script: Sequence[Answer]
    port: int = 0
    received: int = 0
    connections: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                if self.framing == "tcp":
                    header = await reader.readexactly(7)
                    body = await reader.readexactly(int.from_bytes(header[4:6], "big") - 1)
                    tid, unit, count = header[0:2], header[6], int.from_bytes(body[3:5], "big")
                else:
                    frame = await reader.readexactly(8)  # unit, fc 3, address, count, CRC
                    tid, unit, count = b"", frame[0], int.from_bytes(frame[4:6], "big")
                answer = self.script[min(self.received, len(self.script) - 1)]
                self.received += 1
                task = asyncio.create_task(self._answer(writer, answer, tid, unit, count))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, answer: Answer, tid: bytes, unit: int, count: int) -> None:
        await asyncio.sleep(answer.delay_s)
        pdu = bytes([answer.function_code, 2 * count]) + answer.value.to_bytes(2, "big") * count
        if self.framing == "tcp":
            frame = tid + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes([unit]) + pdu
        else:
            body = bytes([unit]) + pdu
            frame = body + FramerRTU.compute_CRC(body).to_bytes(2, "big")
        if not writer.is_closing():
            writer.write(frame)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ScriptedServer]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = int(server.sockets[0].getsockname()[1])
        try:
            yield self
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


def driver(server: ScriptedServer, unit_id: int = 1, **options: Any) -> ModbusDriver:
    if server.framing == "tcp":
        opts: dict[str, Any] = {"host": "127.0.0.1", "port": server.port, "share_connection": True}
    else:
        pytest.importorskip("serial")
        opts = {"port": f"socket://127.0.0.1:{server.port}"}
    built = build_driver(f"modbus_{server.framing}", {**opts, "unit_id": unit_id, **options}, "xy-md02")
    assert isinstance(built, ModbusDriver)
    return ModbusDriver(built.config, ONE_REGISTER, built.link_spec, built.where)


async def value(d: ModbusDriver) -> Any:
    (reading,) = await d.poll()
    return reading.metrics["v"]


async def test_tcp_a_late_answer_is_skipped_by_its_transaction_id_and_the_connection_kept() -> None:
    # Request 0 is answered 0.2 s after its timeout, while request 1 waits for its own answer (due at 0.8 s).
    script = [Answer(delay_s=0.7, value=111), Answer(delay_s=0.3, value=222)]
    async with ScriptedServer("tcp", script).running() as server:
        d = driver(server, timeout_s=0.5)
        try:
            with pytest.raises(DeviceUnavailable, match="no answer"):
                await d.poll()
            assert await value(d) == 222
            assert server.connections == 1
            assert d.link is not None
            assert d.link.connects == 1
        finally:
            await d.close()


async def test_tcp_unit_with_its_own_connection_drops_it_after_a_timeout() -> None:
    script = [Answer(delay_s=0.5, value=111), Answer(delay_s=0.0, value=222)]
    async with ScriptedServer("tcp", script).running() as server:
        d = driver(server, timeout_s=0.3, share_connection=False)
        try:
            with pytest.raises(DeviceUnavailable):
                await d.poll()
            assert not d.connected
            assert await value(d) == 222
            assert server.connections == 2
        finally:
            await d.close()


async def test_rtu_a_late_answer_within_the_quiet_time_is_not_taken_for_the_next_request() -> None:
    # RTU frames carry no transaction id: the late answer (same unit, same function, same length) would pass
    # for request 1's if request 1 went out before the line had been quiet for RTU_QUIET_S.
    late = 0.5 + RTU_QUIET_S / 2
    script = [Answer(delay_s=late, value=111), Answer(delay_s=0.25, value=222)]
    async with ScriptedServer("rtu", script).running() as server:
        d = driver(server, timeout_s=0.5)
        try:
            with pytest.raises(DeviceUnavailable, match="no answer"):
                await d.poll()
            started = time.monotonic()
            assert await value(d) == 222
            # The next request waited for the late answer and then for RTU_QUIET_S of silence.
            assert time.monotonic() - started >= RTU_QUIET_S
            assert server.connections == 1
        finally:
            await d.close()


async def test_rtu_an_answer_of_another_function_code_is_refused() -> None:
    # An input-register answer (fc 4) of the same length, as a late answer to another request could be.
    script = [Answer(delay_s=0.0, value=111, function_code=4), Answer(delay_s=0.0, value=222)]
    async with ScriptedServer("rtu", script).running() as server:
        d = driver(server, timeout_s=0.5)
        try:
            with pytest.raises(DeviceResponseError, match="answer of function code 4"):
                await d.poll()
            assert await value(d) == 222
        finally:
            await d.close()


async def test_each_unit_keeps_its_own_timeout_on_a_shared_link() -> None:
    async with ScriptedServer("tcp", [Answer(delay_s=0.4, value=7)]).running() as server:
        quick = driver(server, unit_id=1, timeout_s=0.2)
        patient = driver(server, unit_id=2, timeout_s=2.0)
        try:
            started = time.monotonic()
            with pytest.raises(DeviceUnavailable, match=r"within 0\.2 s"):
                await quick.poll()
            assert time.monotonic() - started < 1.0  # its own 0.2 s, not the link's other unit's 2 s
            assert await value(patient) == 7
            assert quick.link is patient.link
        finally:
            await quick.close()
            await patient.close()


async def test_a_fresh_connection_waits_the_longest_pause_after_connect_of_its_units() -> None:
    async with ScriptedServer("tcp", [Answer(delay_s=0.0, value=1)]).running() as server:
        eager = driver(server, unit_id=1, timeout_s=1.0)
        careful = driver(server, unit_id=2, timeout_s=1.0, pause_after_connect_s=0.5)
        try:
            started = time.monotonic()
            assert await value(eager) == 1  # alone on a fresh link: no pause
            assert time.monotonic() - started < 0.3
            await eager.close()
            # Both on the link when it connects (eager's poll connects it): the longer pause applies.
            started = time.monotonic()
            assert list(await asyncio.gather(value(eager), value(careful))) == [1, 1]
            assert time.monotonic() - started >= 0.5
            assert server.connections == 2
        finally:
            await eager.close()
            await careful.close()


def test_serial_settings_name_what_differs() -> None:
    a = SerialSettings(9600, "N", 1, 8)
    assert a.differences(a) == []
    assert SerialSettings(19200, "E", 2, 8).differences(a) == [
        "baudrate 19200 (not 9600)",
        "parity E (not N)",
        "stopbits 2 (not 1)",
    ]


def test_settings_are_compared_among_drivers_built_together_only() -> None:
    pytest.importorskip("serial")
    port = "/dev/ttyTEST-link-unit-0"
    note_use()
    first = build_driver("modbus_rtu", {"port": port, "unit_id": 1}, "xy-md02")
    with pytest.raises(DeviceConfigError, match=r"unit 2: serial settings differ from .* unit 1"):
        build_driver("modbus_rtu", {"port": port, "unit_id": 2, "bytesize": 7}, "xy-md02")
    # Once a Modbus driver has been used, drivers built before are left over (a discarded plan, the unchanged
    # devices of a reloaded config): a new config may give the line other settings.
    note_use()
    build_driver("modbus_rtu", {"port": port, "unit_id": 2, "bytesize": 7}, "xy-md02")
    del first


def test_each_event_loop_has_its_own_links() -> None:
    key = LinkKey("tcp", "127.0.0.1:1502")

    async def shared_links() -> dict[LinkKey, ModbusLink]:
        d = build_driver("modbus_tcp", {"host": "127.0.0.1", "port": 1502, "share_connection": True}, "xy-md02")
        assert isinstance(d, ModbusDriver)
        with pytest.raises(DeviceUnavailable):
            await d.open()  # nothing listens there; the link exists all the same until the unit closes
        links = links_of_running_loop()
        await d.close()
        assert links_of_running_loop() == {}
        return links

    first = asyncio.run(shared_links())
    second = asyncio.run(shared_links())
    assert list(first) == list(second) == [key]
    assert first[key] is not second[key]
