"""Sessions when the agent process is killed (``kill -9``) and started again, against the real Mosquitto.

- A killed agent's Last Will (``online: false``, its session id) is published and becomes the retained state;
  the restarted agent's birth (a new session id) replaces it, and nothing older overwrites it afterwards.
- The hard case: the broker does not notice the death (a half-open connection, as after a power cut of the
  gateway or a dead uplink). The restarted agent connects with the same client id, the broker takes the old
  session over and publishes its will *before* the new birth, so the retained state ends as the new birth; the
  old connection's keepalive expiry later adds nothing.

The agent runs as ``ioc edge run`` (``edge_counter_agent.py``: the CLI plus a counting test driver).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml
from edge_support import admin_client, retained_state

from ioc.stack import StackEndpoints
from wire.v1 import State, decode

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITE, GATEWAY = "site-b", "gw-2"  # the session stack has this account; other edge tests use site-a/gw-1
ROOT = f"ioc/v1/{SITE}/{GATEWAY}"
REPO = Path(__file__).parents[3]
AGENT = Path(__file__).with_name("edge_counter_agent.py")
KEEPALIVE_S = 5


class States:
    """Every state message the broker delivers live (not retained), in arrival order."""

    def __init__(self) -> None:
        self.live: list[State] = []
        self._changed = asyncio.Event()

    async def collect(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.retain:
                continue
            assert isinstance(message.payload, bytes)
            if message.payload:
                self.live.append(decode(message.payload, State))
                self._changed.set()

    async def wait_for(self, predicate: Callable[[list[State]], Any], within_s: float = 30.0) -> Any:
        async with asyncio.timeout(within_s):
            while not (result := predicate(self.live)):
                self._changed.clear()
                await self._changed.wait()
            return result


@contextlib.asynccontextmanager
async def watching(stack: StackEndpoints) -> AsyncIterator[States]:
    async with admin_client(stack, "watch") as client:
        states = States()
        await client.subscribe(f"{ROOT}/state", qos=1)
        task = asyncio.create_task(states.collect(client))
        try:
            yield states
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def write_config(tmp_path: Path, stack: StackEndpoints, port: int) -> Path:
    user, _ = stack.credentials(f"{SITE}.{GATEWAY}")
    config: dict[str, Any] = {
        "site": SITE,
        "gateway": GATEWAY,
        "broker": {
            "host": "127.0.0.1",
            "port": port,
            "username": user,
            "keepalive_s": KEEPALIVE_S,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
        },
        "publish": {"max_delay_ms": 100},
        "devices": [{"id": "c-1", "driver": "counter", "profile": "xy-md02", "interval_s": 0.2}],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


async def start_agent(stack: StackEndpoints, config: Path, log: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("IOC_EDGE_")}
    env["IOC_EDGE_BROKER__PASSWORD"] = stack.credentials(f"{SITE}.{GATEWAY}")[1]
    env["PYTHONPATH"] = str(REPO)
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, str(AGENT), str(config), cwd=REPO, env=env, stdout=out, stderr=out
        )


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> int:
    if proc.returncode is None:
        proc.send_signal(sig)
    async with asyncio.timeout(30):
        return await proc.wait()


def birth_not_in(known: set[str]) -> Callable[[list[State]], State | None]:
    return lambda states: next((s for s in states if s.online and s.session not in known), None)


def will_of(session: str) -> Callable[[list[State]], State | None]:
    return lambda states: next((s for s in states if not s.online and s.session == session), None)


class HalfOpenRelay:
    """TCP relay to the broker. When the agent's side dies, the broker's side is left open and silent: the
    broker sees a live connection until its keepalive expires (a half-open connection)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._server: asyncio.Server | None = None
        self._upstream: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> HalfOpenRelay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._upstream:
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._upstream.append(up_writer)
        for src, dst, close_after in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pipe(src, dst, close_after))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, close_after: bool) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        if close_after:
            dst.close()


@pytest.mark.timeout(120)
async def test_a_killed_agent_is_declared_offline_by_its_will_and_a_restart_wins(
    stack: StackEndpoints, tmp_path: Path
) -> None:
    config = write_config(tmp_path, stack, stack.mqtt_port)
    log = tmp_path / "agent.log"
    async with watching(stack) as states:
        first = await start_agent(stack, config, log)
        try:
            birth: State = await states.wait_for(birth_not_in(set()))
            assert await retained_state(stack, ROOT) == birth
            first.send_signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
            will: State = await states.wait_for(will_of(birth.session), within_s=10)
            assert (will.online, will.reason, will.ts) == (False, "connection lost", None)
            assert await retained_state(stack, ROOT) == will

            second = await start_agent(stack, config, log)
            try:
                reborn: State = await states.wait_for(birth_not_in({birth.session}))
                assert reborn.session != birth.session
                await asyncio.sleep(1.5 * KEEPALIVE_S + 2)  # longer than any keepalive of the old connection
                assert await retained_state(stack, ROOT) == reborn
                assert [s.session for s in states.live if not s.online] == [birth.session]
            finally:
                assert await stop(second) == 0, log.read_text()
        finally:
            if first.returncode is None:
                first.kill()
                await first.wait()
    death = await retained_state(stack, ROOT)
    assert (death.online, death.session, death.reason) == (False, reborn.session, "shutdown")


@pytest.mark.timeout(120)
async def test_after_a_half_open_death_the_old_will_comes_before_the_new_birth(
    stack: StackEndpoints, tmp_path: Path
) -> None:
    log = tmp_path / "agent.log"
    async with HalfOpenRelay(stack.mqtt_host, stack.mqtt_port) as relay, watching(stack) as states:
        first = await start_agent(stack, write_config(tmp_path, stack, relay.port), log)
        try:
            birth: State = await states.wait_for(birth_not_in(set()))
            first.send_signal(signal.SIGKILL)
            await first.wait()
            await asyncio.sleep(1.0)
            assert will_of(birth.session)(states.live) is None, "the broker saw the death: not half-open"
            assert await retained_state(stack, ROOT) == birth  # the broker still believes the old session

            # The restarted agent connects directly; the broker takes the old session over.
            second = await start_agent(stack, write_config(tmp_path, stack, stack.mqtt_port), log)
            try:
                reborn: State = await states.wait_for(birth_not_in({birth.session}))
                sessions = [(s.online, s.session) for s in states.live]
                assert sessions.index((False, birth.session)) < sessions.index((True, reborn.session))
                await asyncio.sleep(1.5 * KEEPALIVE_S + 2)  # the old connection's keepalive would have expired
                assert await retained_state(stack, ROOT) == reborn
                assert [s for s in states.live if not s.online and s.session == reborn.session] == []
                assert [s.session for s in states.live if not s.online] == [birth.session]
            finally:
                assert await stop(second) == 0, log.read_text()
        finally:
            if first.returncode is None:
                first.kill()
                await first.wait()
