"""What the fault suite's cases share: real processes under the demo's supervisor, and an exact count of loss.

- :func:`fault_stack`: a Mosquitto and an InfluxDB of the module's own (cases kill and stop them), with broker
  accounts for :data:`GATEWAYS`; each case takes gateways of its own (:func:`gateways_for`) and a database of its
  own, so no case sees another's retained births or points.
- :class:`Fleet`: the hub (``ioc hub``) and edge agents (``fault_agent.py``: ``ioc edge run`` with the counting
  driver) as children of :class:`ioc.demo_processes.Children`, restarted by :class:`ioc.supervisor.Supervisor`
  with production's unit policies (hub and agent: ``RestartSec=5``; InfluxDB and Mosquitto: Debian's units,
  100 ms), exactly as ``ioc demo`` restarts them, and polled as the demo polls it: on the main thread, between
  the case's waits. What it says is kept for the case to wait on (:meth:`Fleet.wait_said`).
- :func:`ledger`: what is in InfluxDB per device against what the agents sampled. Every reading of the counting
  driver carries ``seq`` (0, 1, ... per device and process) and ``run`` (the process's pid), so per device and run
  the stored ``seq`` must be exactly 0..n-1 (a hole is a lost reading, named), and their sum the readings the
  agents queued (their final ``stats:`` line, logged after their drain on SIGTERM). With the hub's
  ``seq_gaps_by_gateway`` (``GET /api/v1/ingest/stats``: data messages the hub never saw within a session) that
  is the loss, counted exactly.
- :class:`LinkRelay`: :class:`ops_support.Relay` (tests/integration/hub/ops_support.py) on a thread's loop, so a
  synchronous case can cut an agent's link to the broker.
- :class:`AgentClock`: an agent's own wall clock moved with libfaketime (LD_PRELOAD; the offset is read from a
  file the case rewrites), its monotonic clock left alone.
- :func:`small_tmpfs`: a tmpfs of a given size (root only; the case is skipped with the reason otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import httpx
import pytest
import yaml

from ioc.demo_processes import Children, DemoRestarts, ioc_argv
from ioc.stack import LocalStack, StackEndpoints, StackError, create_database, ensure_packages, influx_query
from ioc.stack.packages import find_binary, find_lib_file
from ioc.supervisor import Supervisor

# The hub tests' support module, imported top-level as they import it (its folder on the path).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "hub"))

from ops_support import Relay

log = logging.getLogger(__name__)

ROOT: Final = Path(__file__).resolve().parents[2]
AGENT_SCRIPT: Final = Path(__file__).with_name("fault_agent.py")
SITE: Final = "faults"
#: Broker accounts of every fault stack; a case takes two of its own (:func:`gateways_for`).
GATEWAYS: Final = tuple((SITE, f"gw-{i}") for i in range(1, 13))
#: The kind of profile xy-md02, which the counting devices name.
KIND: Final = "weather"
STATS_LINE: Final = re.compile(r" stats: (\w+=.*?) outbox=(\d+)")
#: The hub answers its health call with MQTT connected within this (a restart included).
HUB_READY_S: Final = 40.0
HTTP_TIMEOUT_S: Final = 5.0


# ------------------------------------------------------------------------------------------------ the stack


@contextlib.contextmanager
def fault_stack(state_dir: Path) -> Iterator[LocalStack]:
    """A local stack of a module's own (its cases kill and stop its services)."""
    ensure_packages()
    stack = LocalStack(state_dir, gateways=GATEWAYS)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def module_stack(name: str) -> object:
    """The fixture ``faults_stack`` of a test module: :func:`fault_stack` once per module, in a temporary folder
    named ``name``. A module takes it with ``faults_stack = module_stack("...")``."""

    @pytest.fixture(scope="module")
    def faults_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
        with fault_stack(tmp_path_factory.mktemp(name) / "stack") as stack:
            yield stack

    return faults_stack


def endpoints(stack: LocalStack) -> StackEndpoints:
    assert stack.endpoints is not None, "the fault stack is not running"
    return stack.endpoints


def gateways_for(index: int) -> list[str]:
    """The two gateway ids of the module's ``index``-th case (0-based): each case its own."""
    return [GATEWAYS[2 * index][1], GATEWAYS[2 * index + 1][1]]


def new_database(stack: LocalStack) -> str:
    name = f"faults_{secrets.token_hex(4)}"
    create_database(endpoints(stack).influx_url, name)
    return name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------------ hub and agents


def hub_env(ep: StackEndpoints, database: str, folder: Path, port: int, **extra: str) -> dict[str, str]:
    """``ioc hub``'s environment: a persistent broker session (a client id of the case's own, kept across
    restarts, as a deployed hub's is), the spill and the registry in ``folder`` (they outlive a killed hub, as on
    a host's disk), its API on ``port``."""
    return {
        **ep.hub_mqtt_env(),
        "IOC_HUB_MQTT__CLIENT_ID": f"hub-faults-{secrets.token_hex(3)}",
        # Outlives any restart in a case; the broker then forgets the session instead of queueing for it.
        "IOC_HUB_MQTT__SESSION_EXPIRY_S": "600",
        "IOC_HUB_INFLUX__URL": ep.influx_url,
        "IOC_HUB_INFLUX__DATABASE": database,
        "IOC_HUB_INFLUX__TIMEOUT_S": "3",
        "IOC_HUB_INFLUX__RETRY_MAX_S": "2",
        "IOC_HUB_HTTP__HOST": "127.0.0.1",
        "IOC_HUB_HTTP__PORT": str(port),
        "IOC_HUB_SPILL__DIR": str(folder / "spill"),
        "IOC_HUB_DEAD_LETTERS__PATH": str(folder / "dead-letters.sqlite"),
        "IOC_HUB_REGISTRY__URL": f"sqlite:///{folder / 'registry.db'}",
        "IOC_HUB_METRICS__INTERVAL_S": "0",
        "IOC_HUB_AQI__ENABLED": "false",
        **extra,
    }


def agent_config(
    folder: Path,
    ep: StackEndpoints,
    gateway: str,
    *,
    devices: int,
    interval_s: float,
    port: int | None = None,
    keepalive_s: int = 30,
    replay_rate: float = 2000.0,
    max_batch: int = 100,
) -> Path:
    """The edge config of ``gateway`` (site :data:`SITE`): ``devices`` counting devices ``{gateway}-c{i}`` polled
    every ``interval_s``, its outbox in ``folder``, the broker at ``port`` (a relay's) or the stack's. No
    self-metrics: every reading through the outbox is a counted one."""
    user, _ = ep.credentials(f"{SITE}.{gateway}")
    config: dict[str, Any] = {
        "site": SITE,
        "gateway": gateway,
        "broker": {
            "host": ep.mqtt_host,
            "port": port or ep.mqtt_port,
            "username": user,
            "keepalive_s": keepalive_s,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
            "connect_timeout_s": 2,
            "publish_timeout_s": 5,
        },
        "publish": {
            "max_batch": max_batch,
            "max_delay_ms": 200,
            "replay_rate": replay_rate,
            "drain_timeout_s": 30,
            "outbox_path": f"{gateway}.outbox.sqlite",
        },
        "self_metrics": {"enabled": False},
        "devices": [
            {"id": f"{gateway}-c{i}", "driver": "counter", "profile": "xy-md02", "interval_s": interval_s}
            for i in range(devices)
        ],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{gateway}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def agent_name(gateway: str) -> str:
    """The agent's name under the supervisor: ``edge-...`` gets ioc-edge.service's policy."""
    return f"edge-{gateway}"


def final_counters(log_path: Path) -> dict[str, int]:
    """The counters of the agent's last ``stats:`` line (logged on its way out, after its drain) and ``outbox``."""
    found = STATS_LINE.findall(log_path.read_text(errors="replace"))
    assert found, f"no stats line in {log_path}"
    pairs, outbox = found[-1]
    counters = {key: int(value) for key, value in (item.split("=") for item in pairs.split())}
    counters["outbox"] = int(outbox)
    return counters


class Fleet:
    """The case's hub and agents as the demo runs them (:class:`~ioc.demo_processes.Children`), optionally under
    the demo's supervisor (:meth:`supervise`). ``with Fleet(...) as fleet:`` stops everything on the way out."""

    def __init__(self, stack: LocalStack, folder: Path) -> None:
        self.stack = stack
        self.ep = endpoints(stack)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.children = Children(folder)
        self.hub_url = ""
        self.said: list[str] = []
        self._supervisor: Supervisor | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -------------------------------------------------------------------------------------- processes

    def start_hub(self, env: dict[str, str]) -> None:
        self.hub_url = f"http://127.0.0.1:{env['IOC_HUB_HTTP__PORT']}"
        self.children.start("hub", ioc_argv("hub"), env)
        self.wait_hub_ready()

    def start_counting(self, database: str, gateways: list[str], *, devices: int, interval_s: float) -> list[str]:
        """The hub writing to ``database``, then per gateway an agent of ``devices`` counting devices sampled every
        ``interval_s`` (:func:`agent_config`, the stack's broker); the agents' names."""
        self.start_hub(hub_env(self.ep, database, self.folder, free_port()))
        return [
            self.start_agent(gw, agent_config(self.folder, self.ep, gw, devices=devices, interval_s=interval_s))
            for gw in gateways
        ]

    def wait_hub_ready(self, timeout_s: float = HUB_READY_S) -> None:
        """Until the hub's health call says ``ok`` (MQTT connected, InfluxDB reachable)."""
        last = "no answer"

        def ready() -> bool:
            nonlocal last
            try:
                health = httpx.get(f"{self.hub_url}/api/v1/health", timeout=1.0).json()
            except (httpx.HTTPError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                return False
            last = str(health)
            return bool(health.get("status") == "ok")

        self.wait(ready, timeout_s, lambda: f"the hub ready ({last}); log:\n{self.log_tail('hub')}")

    def start_agent(
        self,
        gateway: str,
        config: Path,
        extra_env: dict[str, str] | None = None,
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> str:
        """Start ``gateway``'s agent on ``config`` (its command through ``wrap``, e.g. into a network namespace);
        its name under the supervisor."""
        name = agent_name(gateway)
        env = {
            "IOC_EDGE_BROKER__PASSWORD": self.ep.credentials(f"{SITE}.{gateway}")[1],
            "PYTHONPATH": str(ROOT),
            **(extra_env or {}),
        }
        argv = [sys.executable, str(AGENT_SCRIPT), str(config)]
        self.children.start(name, wrap(argv) if wrap is not None else argv, env)
        return name

    def pid(self, name: str) -> int:
        if name in ("mosquitto", "influxd"):
            return self.stack.pids[name]
        return self.children.procs[name].pid

    def signal(self, name: str, sig: signal.Signals) -> int:
        """Send ``sig`` to ``name``'s current process; its pid."""
        pid = self.pid(name)
        os.kill(pid, sig)
        return pid

    def wait_logged(self, name: str, pattern: str, timeout_s: float, after: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` in ``name``'s log past character ``after``."""
        found: list[re.Match[str]] = []

        def seen() -> bool:
            match = re.compile(pattern).search(self.log_text(name), after)
            if match:
                found.append(match)
            return bool(match)

        self.wait(seen, timeout_s, lambda: f"{pattern!r} in {name}'s log:\n{self.log_tail(name)}")
        return found[0]

    def stop_agent(self, name: str) -> dict[str, int]:
        """SIGTERM (the agent sends what it holds, then logs its final counters); exit status 0; the counters."""
        self.children.stop([name], timeout_s=60)
        status = self.children.procs[name].returncode
        assert status == 0, f"{name} exited with {status}:\n{self.log_tail(name)}"
        return final_counters(self.children.log_path(name))

    def log_text(self, name: str) -> str:
        return self.children.log_path(name).read_text(errors="replace")

    def log_tail(self, name: str, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_text(name).splitlines()[-lines:])
        return ""

    # -------------------------------------------------------------------------------------- supervision

    def supervise(self, *names: str) -> None:
        """Put ``names`` (children, ``mosquitto``, ``influxd``) under the demo's supervisor. It is polled on this
        thread, as the demo polls it, by every wait of the fleet (:meth:`wait`, :meth:`sleep`, :meth:`wait_said`):
        a child started from another thread would be killed when that thread ends (the children ask for
        ``PR_SET_PDEATHSIG``, which prctl(2) ties to the thread that forked them)."""
        assert self._supervisor is None, "already supervising"
        restarts = DemoRestarts(self.folder, self.stack, self.ep, self.children, self._say)
        processes = [p for p in restarts.supervised(self.hub_url) if p.name in names]
        assert sorted(p.name for p in processes) == sorted(names), f"not all of {names} can be supervised"
        self._supervisor = restarts.supervisor = Supervisor(processes, self._say)

    def tick(self) -> None:
        """One poll of the supervisor (restarts that are due), if there is one."""
        if self._supervisor is not None:
            self._supervisor.poll()

    def sleep(self, seconds: float) -> None:
        """Sleep, polling the supervisor."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.tick()
            time.sleep(min(0.1, left))

    def wait(self, check: Callable[[], bool], timeout_s: float, what: Callable[[], str] | str) -> None:
        """:func:`wait_for`, polling the supervisor."""
        wait_for(check, timeout_s, what, poll_s=0.1, tick=self.tick)

    def _say(self, text: str) -> None:
        log.info("supervisor: %s", text)
        self.said.append(f"{time.monotonic():.3f} {text}")

    def wait_said(self, pattern: str, timeout_s: float) -> re.Match[str]:
        """The supervisor's line matching ``pattern`` (a regex), once it said it."""
        found: list[re.Match[str]] = []

        def said() -> bool:
            found.extend(m for line in self.said if (m := re.search(pattern, line)))
            return bool(found)

        self.wait(said, timeout_s, lambda: f"the supervisor saying {pattern!r}; it said: {self.said}")
        return found[0]

    def close(self) -> None:
        self.children.stop_all(timeout_s=30)


# ------------------------------------------------------------------------------------------------ waiting


def wait_for(
    check: Callable[[], bool],
    timeout_s: float,
    what: Callable[[], str] | str,
    poll_s: float = 0.2,
    tick: Callable[[], None] | None = None,
) -> None:
    """Until ``check()``; the case fails, saying ``what``, after ``timeout_s``. ``tick`` is called between checks."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s:.0f} s: {what() if callable(what) else what}")
        if tick is not None:
            tick()
        time.sleep(poll_s)


# ------------------------------------------------------------------------------------------------ counting


def hub_stats(url: str) -> dict[str, Any]:
    """``GET /api/v1/ingest/stats`` of the hub at ``url``."""
    response = httpx.get(f"{url}/api/v1/ingest/stats", timeout=HTTP_TIMEOUT_S)
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


def stored_seqs(ep: StackEndpoints, database: str, devices: Sequence[str]) -> dict[tuple[str, int], list[int]]:
    """(device, run) -> the ``seq`` of each point stored, in time order."""
    out: dict[tuple[str, int], list[int]] = {}
    for device in devices:
        rows = influx_query(
            ep.influx_url, database, f"SELECT seq, run FROM {KIND} WHERE device = '{device}'", timeout=30
        )
        for row in rows:
            out.setdefault((device, int(row["run"])), []).append(int(row["seq"]))
    return out


def stored_count(ep: StackEndpoints, database: str, run: int | None = None) -> int:
    """Counted points in ``database`` (of one agent process, ``run``, if given)."""
    where = "" if run is None else f' WHERE "run" = {int(run)}'
    rows = influx_query(ep.influx_url, database, f'SELECT count("seq") FROM {KIND}{where}', timeout=30)
    return int(rows[0]["count"]) if rows else 0


@dataclass
class Ledger:
    """Loss, counted: readings sampled against points stored, per device and agent process (run)."""

    sampled: int
    stored: int
    #: (device, run) -> points stored.
    per_device: dict[tuple[str, int], int]
    #: (device, run) -> the ``seq`` stored, in time order.
    per_seq: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    #: (device, run) -> the ``seq`` below the run's highest stored one that are not stored: lost readings.
    holes: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    #: (device, run) -> ``seq`` stored more than once (under two timestamps).
    doubles: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.sampled - self.stored

    def summary(self) -> str:
        devices = {device for device, _ in self.per_device}
        hole_count = sum(len(v) for v in self.holes.values())
        return (
            f"sampled {self.sampled}, stored {self.stored}, lost {self.lost} "
            f"({hole_count} holes over {len(self.holes)} device runs); {len(devices)} devices, "
            f"{len(self.per_device)} device runs, {min(self.per_device.values(), default=0)}-"
            f"{max(self.per_device.values(), default=0)} points each"
        )


def ledger(ep: StackEndpoints, database: str, devices: Sequence[str], sampled: int) -> Ledger:
    series = stored_seqs(ep, database, devices)
    book = Ledger(sampled=sampled, stored=sum(len(s) for s in series.values()), per_device={}, per_seq=series)
    for key, seqs in series.items():
        book.per_device[key] = len(seqs)
        unique = set(seqs)
        if len(unique) != len(seqs):
            book.doubles[key] = sorted({s for s in seqs if seqs.count(s) > 1})
        missing = sorted(set(range(max(unique) + 1)) - unique)
        if missing:
            book.holes[key] = missing
    return book


def wait_stored(
    ep: StackEndpoints, database: str, expected: int, timeout_s: float, tick: Callable[[], None] | None = None
) -> int:
    """Until InfluxDB holds ``expected`` counted points (never more: that is failed at once); then 2 s more, for a
    late write that would make it more. The count."""
    seen = -1

    def done() -> bool:
        nonlocal seen
        try:
            seen = stored_count(ep, database)
        except StackError:
            return False
        assert seen <= expected, f"more points than readings sampled: {seen} > {expected}"
        return seen == expected

    with contextlib.suppress(pytest.fail.Exception):
        wait_for(done, timeout_s, "", poll_s=0.5, tick=tick)
    time.sleep(2)
    return stored_count(ep, database)


def alerts(url: str, token: str) -> list[dict[str, Any]]:
    """Every alert the hub holds (open and resolved), newest first."""
    response = httpx.get(
        f"{url}/api/v1/alerts",
        params={"limit": 1000},
        headers={"Authorization": f"Bearer {token}"},
        timeout=HTTP_TIMEOUT_S,
    )
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# ------------------------------------------------------------------------------------------------ the link


class LinkRelay:
    """:class:`ops_support.Relay` between an agent and the broker, run on a loop of its own thread:
    :meth:`down` aborts its connections and refuses new ones (the link is cut), :meth:`up` relays again."""

    def __init__(self, ep: StackEndpoints) -> None:
        self._relay = Relay(ep.mqtt_host, ep.mqtt_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-relay", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._relay.__aenter__(), self._loop).result(5)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _close(self) -> None:
        await self._relay.__aexit__(None, None, None)
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.gather(*pending, return_exceptions=True)

    @property
    def port(self) -> int:
        return int(self._relay.port)

    def down(self) -> None:
        def cut() -> None:
            self._relay.accepting = False
            self._relay.cut()

        self._loop.call_soon_threadsafe(cut)

    def up(self) -> None:
        def restore() -> None:
            self._relay.accepting = True

        self._loop.call_soon_threadsafe(restore)


# ------------------------------------------------------------------------------------------------ the clock

#: Debian's libfaketime (package ``libfaketime``), under the multiarch library directory.
LIBFAKETIME: Final = "faketime/libfaketime.so.1"


def libfaketime() -> Path:
    """The path of libfaketime; installed with apt-get when missing and root (as ``ioc stack ensure`` installs the
    stack's packages), else the case is skipped with the reason."""
    found = find_lib_file(LIBFAKETIME)
    if found is None and os.geteuid() == 0 and (apt_get := find_binary("apt-get")) is not None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = [str(apt_get), "install", "-y", "--no-install-recommends", "libfaketime"]
        done = subprocess.run(install, env=env, capture_output=True, timeout=300, check=False)
        if done.returncode != 0:
            subprocess.run([str(apt_get), "update"], env=env, capture_output=True, timeout=300, check=False)
            subprocess.run(install, env=env, capture_output=True, timeout=300, check=False)
        found = find_lib_file(LIBFAKETIME)
    if found is None:
        pytest.skip(f"libfaketime is not installed (Debian package libfaketime, {LIBFAKETIME}) and cannot be here")
    return found


class AgentClock:
    """An agent process's wall clock, offset from the machine's by what :meth:`set_offset` last wrote: libfaketime
    preloaded, reading its offset from a file at most once a second (``FAKETIME_CACHE_DURATION``). The monotonic
    clocks are not faked (``DONT_FAKE_MONOTONIC``): only the time of day jumps, as when NTP or a person steps it."""

    def __init__(self, folder: Path) -> None:
        self.library = libfaketime()
        self.file = folder / "faketime.rc"
        self.set_offset(0)

    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": str(self.library),
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            "FAKETIME_CACHE_DURATION": "1",
            "DONT_FAKE_MONOTONIC": "1",
        }

    def set_offset(self, seconds: int) -> None:
        """The agent's clock runs ``seconds`` ahead of the machine's (behind, when negative) from now on."""
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(f"{seconds:+d}\n", encoding="ascii")
        tmp.replace(self.file)


# ------------------------------------------------------------------------------------------------ the disk


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``8m``) mounted at ``path`` for the block; skipped, with the reason, where mounting
    is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    mount = find_binary("mount")
    if mount is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(
        [str(mount), "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        umount = find_binary("umount")
        assert umount is not None
        subprocess.run([str(umount), "-l", str(path)], capture_output=True, timeout=30, check=False)
