"""``ioc demo``'s processes: the children it starts (hub, simulated city, edge agents), how each one and the
stack's Mosquitto and InfluxDB are started again after a failure, and the files the children read (edge configs
with their broker accounts, written owner-only).

What is restarted when, and how often, is :mod:`ioc.supervisor`'s (production's systemd units); this module only
knows how.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from common.child_process import die_with_parent
from ioc.stack import LocalStack, StackEndpoints, StackError
from ioc.stack.runner import Service
from ioc.supervisor import StartFailed, Supervised, Supervisor, policy_for

log = logging.getLogger("ioc.demo")

#: How long a child has to say it is ready (simulator port, hub API up).
CHILD_READY_TIMEOUT_S = 30.0


class DemoError(RuntimeError):
    """The demo could not start (or a child could not be started again); the message says which part and where
    its log is."""


class Children:
    """The demo's child processes: started, started again after a failure (the command and environment of the
    first start, the log appended to), and stopped (SIGTERM, then SIGKILL) whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._specs: dict[str, tuple[list[str], dict[str, str]]] = {}
        self._logs: dict[str, IO[bytes]] = {}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``name``; ``env`` is added to this process's environment as it is now (a restart gets the same,
        whatever the environment is by then). A simulator's stdout is a pipe: it prints its port there."""
        self._specs[name] = (argv, {**os.environ, **(env or {})})
        return self._spawn(name, "wb")

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """Start ``name`` again, after it exited, as it was first started; its log is appended to."""
        old = self.procs[name]
        if old.poll() is None:
            raise DemoError(f"{name} (pid {old.pid}) is still running")
        _close_pipes(old)
        self._logs.pop(name).close()
        return self._spawn(name, "ab")

    def _spawn(self, name: str, mode: str) -> subprocess.Popen[bytes]:
        argv, env = self._specs[name]
        log_file = self.log_path(name).open(mode)
        self._logs[name] = log_file
        proc = subprocess.Popen(  # noqa: S603 - argv is built here from our own executable
            argv,
            stdout=subprocess.PIPE if name.startswith("sim-") else log_file,
            stderr=log_file,
            env=env,
            start_new_session=True,
            # If the demo itself is killed (-9), the kernel stops its children too.
            preexec_fn=die_with_parent(os.getpid()),  # noqa: PLW1509 - only prctl + getppid, no locks
        )
        self.procs[name] = proc
        return proc

    def check_started(self) -> None:
        """:class:`DemoError` if a child exited while the demo was starting: a broken install or config, which
        restarting would only hide."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise DemoError(f"{name} exited with {proc.returncode} while starting; see {self.log_path(name)}")

    def stop(self, names: Iterable[str], timeout_s: float = 10.0) -> None:
        """SIGTERM to ``names``, SIGKILL to those still running after ``timeout_s``; each is reaped."""
        procs = [(name, self.procs[name]) for name in names]
        for _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for name, proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", name)
                proc.kill()
                proc.wait()

    def stop_all(self, timeout_s: float = 10.0) -> None:
        """Stop every child (:meth:`stop`); then close every pipe and log file this object opened (a pipe left
        open is a ResourceWarning, and an fd per child)."""
        try:
            self.stop(list(self.procs), timeout_s)
        finally:
            for proc in self.procs.values():
                _close_pipes(proc)
            for f in self._logs.values():
                f.close()


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def ioc_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "ioc.cli", *args]


def read_sim_port(proc: subprocess.Popen[bytes], name: str) -> dict[str, Any]:
    """The simulator prints one JSON line with its bound port as soon as it listens."""
    assert proc.stdout is not None
    result: list[bytes] = []
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(CHILD_READY_TIMEOUT_S)
    if not result or not result[0].strip():
        raise DemoError(f"{name} did not report its port within {CHILD_READY_TIMEOUT_S:.0f} s")
    info: dict[str, Any] = json.loads(result[0])
    return info


def edge_config(path: Path, ep: StackEndpoints) -> dict[str, Any]:
    """The city's edge config of one gateway with its broker account filled in (the city writes no secret)."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    user, password = ep.credentials(f"{doc['site']}.{doc['gateway']}")
    doc["broker"] = {
        **doc["broker"],
        "host": ep.mqtt_host,
        "port": ep.mqtt_port,
        "username": user,
        "password": password,
    }
    return doc


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only, atomically (readers never see half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    # Created 0600 (not chmod-ed after writing, which leaves the secrets readable under the umask meanwhile).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    tmp.replace(path)


def hub_answers(url: str) -> bool:
    """The hub's API answers its health call."""
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/api/v1/health", timeout=1.0).status_code == 200
    return False


def write_edge_configs(state_dir: Path, city: dict[str, Any], ep: StackEndpoints) -> dict[str, Path]:
    """Each site's edge config (the city's, with the broker account filled in) in ``state_dir``, 0600;
    agent name (``edge-<site>``) -> its config."""
    paths = {}
    for site in city["sites"]:
        path = state_dir / f"edge-{site['site']}-{site['gateway']}.yaml"
        write_private(path, yaml.safe_dump(edge_config(Path(site["config"]), ep), sort_keys=False))
        paths[f"edge-{site['site']}"] = path
    return paths


class DemoRestarts:
    """How each of the demo's processes is started again (what :class:`~ioc.supervisor.Supervisor` calls)."""

    def __init__(
        self, state_dir: Path, stack: LocalStack, ep: StackEndpoints, children: Children, say: Callable[[str], None]
    ) -> None:
        self.state_dir = state_dir
        self.stack = stack
        self.ep = ep
        self.children = children
        self.say = say
        #: Set once every process is started: which agents run, when the city comes back.
        self.supervisor: Supervisor | None = None

    def supervised(self, hub_url: str) -> list[Supervised]:
        services: tuple[Service, ...] = ("mosquitto", "influxd")
        out = [self._service(name) for name in services]
        for name in self.children.procs:
            if name == "hub":
                out.append(self._child(name, ready=lambda: hub_answers(hub_url)))
            elif name == "sim-city":
                out.append(self._child(name, restart=self._restart_city))
            else:
                out.append(self._child(name))
        return out

    def _service(self, name: Service) -> Supervised:
        def restart() -> int:
            try:
                return self.stack.restart_service(name)
            except StackError as exc:
                raise StartFailed(str(exc)) from exc

        return Supervised(
            name,
            policy_for(name),
            exit_status=lambda: self.stack.exit_status(name),
            pid=lambda: self.stack.pids[name],
            restart=restart,
            log_path=self.stack.state_dir / f"{name}.log",
        )

    def _child(
        self, name: str, restart: Callable[[], int] | None = None, ready: Callable[[], bool] | None = None
    ) -> Supervised:
        def restart_child() -> int:
            try:
                return self.children.restart(name).pid
            except OSError as exc:
                raise StartFailed(f"{exc}; see {self.children.log_path(name)}") from exc

        # Looked up on each call: a restart puts a new process under the name.
        def exit_status() -> int | None:
            return self.children.procs[name].poll()

        return Supervised(
            name,
            policy_for(name),
            exit_status=exit_status,
            pid=lambda: self.children.procs[name].pid,
            restart=restart or restart_child,
            log_path=self.children.log_path(name),
            ready=ready,
        )

    def _restart_city(self) -> int:
        """The simulated city again. Its simulators listen on new ports, so each site's edge config is written
        anew and the running agents are restarted to read it (as a changed config restarts ioc-edge.service)."""
        try:
            proc = self.children.restart("sim-city")
            city = read_sim_port(proc, "sim-city")
        except (DemoError, OSError, ValueError) as exc:
            self.children.stop(["sim-city"])  # one that never reported its port
            raise StartFailed(f"{exc}; see {self.children.log_path('sim-city')}") from exc
        configs = write_edge_configs(self.state_dir, city, self.ep)
        assert self.supervisor is not None
        agents = [name for name in configs if self.supervisor.running(name)]
        self.children.stop(agents)
        for name in agents:
            try:
                pid = self.children.restart(name).pid
            except OSError as exc:  # left stopped; the supervisor reports it as such
                self.say(f"{name} could not be restarted for the simulators' new ports: {exc}")
            else:
                self.say(f"{name} restarted (pid {pid}) for the simulators' new ports")
        return proc.pid
