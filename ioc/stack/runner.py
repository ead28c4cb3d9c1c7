"""``LocalStack``: Mosquitto and InfluxDB as child processes on free loopback ports, all state in one folder.

::

    with LocalStack(Path(".ioc/stack"), gateways=[("site-a", "gw-1")]) as ep:
        user, password = ep.credentials("site-a.gw-1")

The runner never touches system services: it starts its own two processes with generated configs and stops
exactly those. Several stacks can run at once, each in its own state folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import socket
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from ioc.stack import influxdb, mosquitto
from ioc.stack.errors import StackError
from ioc.stack.process import DEFAULT_STOP_TIMEOUT_S, ChildProcess

log = logging.getLogger(__name__)

#: How long each service has to become ready (Mosquitto accepts an MQTT login, InfluxDB answers /ping).
DEFAULT_READY_TIMEOUT_S = 30.0
#: The stack listens on loopback only.
HOST = "127.0.0.1"
#: Attempts with fresh ports when another process took a port between our pick and the child's bind.
_START_ATTEMPTS = 3

#: The services a stack runs, by the name :meth:`LocalStack.stop_service` and :meth:`LocalStack.start_service` take.
Service = Literal["mosquitto", "influxd"]
#: What a gateway's second account adds to the gateway's account name (``site-b.gw-2.second``); no gateway account
#: can end so (site and gateway ids hold no dot).
SECOND_ACCOUNT_SUFFIX = ".second"


def second_gateway_account(site: str, gateway: str) -> mosquitto.Account:
    """A second account with the ACL of the gateway ``site``/``gateway``, bound to a client id of its own
    (``second-{site}-{gateway}``, outside the agents' ``ioc-edge-`` ids), with a fresh random password."""
    name = mosquitto.gateway_account(site, gateway) + SECOND_ACCOUNT_SUFFIX
    return mosquitto.Account(
        name, secrets.token_urlsafe(24), mosquitto.gateway_acl(site, gateway), f"second-{site}-{gateway}"
    )


@dataclass(frozen=True)
class StackEndpoints:
    """Where a running stack listens and the accounts it was started with."""

    mqtt_host: str
    mqtt_port: int
    influx_url: str
    influx_db: str
    state_dir: Path
    #: account name -> (username, password); kept out of repr so passwords do not end up in logs.
    accounts: Mapping[str, tuple[str, str]] = field(repr=False, hash=False)
    #: account name -> the only client id it may connect with (gateways: the agent's own; a gateway's second
    #: account: ``second-{site}-{gateway}``); others take any.
    client_ids: Mapping[str, str] = field(default_factory=dict, hash=False)

    def credentials(self, account: str) -> tuple[str, str]:
        """(username, password) of ``account``: "hub" (the hub's intake), "hub-observe", "hub-cmd", "admin",
        "{site}.{gateway}" or "{site}.{gateway}.second"."""
        try:
            return self.accounts[account]
        except KeyError:
            raise KeyError(
                f"no broker account {account!r} in this stack; it has: {', '.join(sorted(self.accounts))}"
            ) from None

    def client_id(self, account: str, default: str) -> str:
        """The client id ``account`` must connect with, or ``default`` for an account bound to none."""
        self.credentials(account)
        return self.client_ids.get(account, default)

    def second_account(self, account: str) -> str:
        """The name of the second account of the gateway account ``account`` (``LocalStack``'s
        ``second_accounts``): its ACL, another client id. :class:`KeyError`, naming the accounts there are, when the
        stack was started without one."""
        name = account + SECOND_ACCOUNT_SUFFIX
        self.credentials(name)
        return name

    def hub_accounts(self) -> dict[str, str]:
        """The hub's three accounts as ``MqttSettings`` fields: ``username``/``password`` (intake),
        ``observer_username``/``observer_password``, ``command_username``/``command_password``."""
        out: dict[str, str] = {}
        for prefix, account in (("", "hub"), ("observer_", "hub-observe"), ("command_", "hub-cmd")):
            out[f"{prefix}username"], out[f"{prefix}password"] = self.credentials(account)
        return out

    def hub_mqtt_env(self) -> dict[str, str]:
        """The hub's broker settings for this stack as ``IOC_HUB_MQTT__*`` variables: host, port and its three
        accounts (intake, observer, commands)."""
        env = {"IOC_HUB_MQTT__HOST": self.mqtt_host, "IOC_HUB_MQTT__PORT": str(self.mqtt_port)}
        env.update({f"IOC_HUB_MQTT__{key.upper()}": value for key, value in self.hub_accounts().items()})
        return env

    def to_json(self) -> dict[str, Any]:
        """The endpoints and every account's password, as written to ``credentials.json`` and demo files."""
        return {
            "mqtt": {
                "host": self.mqtt_host,
                "port": self.mqtt_port,
                "accounts": {
                    name: {
                        "username": u,
                        "password": p,
                        **({"client_id": c} if (c := self.client_ids.get(name)) else {}),
                    }
                    for name, (u, p) in self.accounts.items()
                },
            },
            "influxdb": {"url": self.influx_url, "database": self.influx_db},
            "state_dir": str(self.state_dir),
        }


def free_ports(count: int, host: str = HOST) -> list[int]:
    """``count`` distinct ports the kernel considers free on ``host`` right now."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def _port_taken(proc: ChildProcess) -> bool:
    return not proc.running() and "address already in use" in proc.log_tail().lower()


class LocalStack:
    """A sync context manager running Mosquitto and InfluxDB under ``state_dir``; yields :class:`StackEndpoints`.

    ``state_dir`` holds the generated configs, ``credentials.json`` (0600), both services' data and their logs
    (``mosquitto.log``, ``influxd.log``). Passwords are new on every start. Each service has ``ready_timeout``
    seconds (default :data:`DEFAULT_READY_TIMEOUT_S`) to become ready; on exit each gets ``stop_timeout`` seconds
    (default 10) after SIGTERM before SIGKILL. Only one stack at a time may use a given ``state_dir``.
    Each gateway's account connects only with the gateway's own client id (:mod:`ioc.stack.mosquitto`), as in
    production, so a second connection on it takes over the first (MQTT 5 section 3.1.4). For a test that needs
    two connections on one gateway's topics at once, ``second_accounts`` lists gateways (of ``gateways``) that
    also get a second account, ``{site}.{gateway}.second`` (:meth:`StackEndpoints.second_account`): the same ACL,
    bound to a client id of its own. The demo and ``ioc stack up`` make none.
    """

    def __init__(
        self,
        state_dir: Path,
        gateways: Sequence[tuple[str, str]] = (),
        influx_db: str = "ioc",
        *,
        ready_timeout: float = DEFAULT_READY_TIMEOUT_S,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT_S,
        second_accounts: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.gateways = tuple(gateways)
        self.second_accounts = tuple(second_accounts)
        unknown = sorted(set(self.second_accounts) - set(self.gateways))
        if unknown:
            raise StackError(f"second accounts for gateways the stack does not have: {unknown}")
        self.influx_db = influx_db
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._children: list[ChildProcess] = []
        self._pids: dict[str, int] = {}
        self._lock: IO[str] | None = None
        self._running: dict[str, ChildProcess] = {}
        self._confs: dict[str, tuple[Path, int | str]] = {}
        self.endpoints: StackEndpoints | None = None

    @property
    def pids(self) -> dict[str, int]:
        """name -> pid of the children this stack started (also after they stopped)."""
        return dict(self._pids)

    def __enter__(self) -> StackEndpoints:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> StackEndpoints:
        """Start both services and wait until they are ready. On any failure, stop what was started and raise."""
        if self.endpoints is not None:
            raise StackError(f"the stack in {self.state_dir} is already running")
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._take_lock()
        try:
            accounts = mosquitto.build_accounts(self.gateways)
            accounts.update((a.username, a) for a in (second_gateway_account(*gw) for gw in self.second_accounts))
            mqtt_port = self._start_mosquitto(accounts)
            influx_url = self._start_influxdb()
            influxdb.create_database(influx_url, self.influx_db)
            ep = StackEndpoints(
                mqtt_host=HOST,
                mqtt_port=mqtt_port,
                influx_url=influx_url,
                influx_db=self.influx_db,
                state_dir=self.state_dir,
                accounts=types.MappingProxyType({n: (a.username, a.password) for n, a in accounts.items()}),
                client_ids=types.MappingProxyType({n: a.client_id for n, a in accounts.items() if a.client_id}),
            )
            self._write_credentials(ep)
        except OSError as exc:
            self.stop()
            raise StackError(f"cannot write the stack's files under {self.state_dir}: {exc}") from exc
        except BaseException:
            self.stop()
            raise
        self.endpoints = ep
        log.info(
            "local stack up in %s: mqtt %s:%d, influxdb %s (db %s), pids %s",
            self.state_dir,
            HOST,
            mqtt_port,
            influx_url,
            self.influx_db,
            self.pids,
        )
        return ep

    def check_alive(self) -> None:
        """:class:`StackError` (with the log's tail) if a child of this running stack has exited."""
        for child in self._children:
            if not child.running():
                raise child.failure("exited while the stack was running")

    def stop(self) -> None:
        """Stop the children this stack started (SIGTERM, then SIGKILL). Idempotent."""
        children, self._children = self._children, []
        self._running.clear()
        errors = []
        for child in reversed(children):
            try:
                child.stop(self.stop_timeout)
            except Exception as exc:  # noqa: BLE001 - stop the others too, report below
                errors.append(f"{child.name}: {exc}")
        self.endpoints = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if children:
            log.info("local stack in %s stopped", self.state_dir)
        if errors:
            raise StackError("could not stop the local stack cleanly: " + "; ".join(errors))

    # ------------------------------------------------------------------------------------ outages (tests)

    def stop_service(self, name: Service, *, kill: bool = False) -> None:
        """Stop one service of the running stack, as an outage: SIGTERM (a clean stop, Mosquitto saves its
        persistence) or, with ``kill``, SIGKILL (a crash). Its data and config stay; :meth:`start_service`
        brings it back on the same port."""
        child = self._running.pop(name, None)
        if child is None:
            raise StackError(f"{name} is not running in the stack in {self.state_dir}")
        self._children.remove(child)
        if kill:
            child.kill()
        else:
            child.stop(self.stop_timeout)
        log.info("%s of the stack in %s %s", name, self.state_dir, "killed" if kill else "stopped")

    def start_service(self, name: Service) -> None:
        """Start again a service stopped by :meth:`stop_service`, with the same config, port and data."""
        if self.endpoints is None:
            raise StackError(f"the stack in {self.state_dir} is not running")
        if name in self._running:
            raise StackError(f"{name} is already running in the stack in {self.state_dir}")
        conf, _ = self._confs[name]
        if name == "mosquitto":
            proc = mosquitto.start(conf, self.state_dir / "mosquitto.log")
            self._track(proc)
            user, password = self.endpoints.credentials("admin")
            mosquitto.wait_ready(
                proc,
                self.endpoints.mqtt_host,
                self.endpoints.mqtt_port,
                username=user,
                password=password,
                timeout=self.ready_timeout,
            )
        else:
            proc = influxdb.start(conf, self.state_dir / "influxd.log")
            self._track(proc)
            influxdb.wait_ready(proc, self.endpoints.influx_url, self.ready_timeout)
        log.info("%s of the stack in %s started again (pid %d)", name, self.state_dir, proc.pid)

    def exit_status(self, name: Service) -> int | None:
        """The exit status of service ``name`` if it has exited by itself since it was started (a crash, a kill
        from outside), else None while it runs: what a supervisor polls."""
        child = self._running.get(name)
        if child is None:
            raise StackError(f"{name} was not started (or was stopped) in the stack in {self.state_dir}")
        return child.returncode

    def restart_service(self, name: Service) -> int:
        """Start again a service that exited by itself, with the same config, port and data, and wait until it
        is ready; its new pid. :class:`StackError` (with the log's tail) if it does not come up; a later call
        tries again."""
        child = self._running.get(name)
        if child is not None:
            if child.running():
                raise StackError(f"{name} (pid {child.pid}) is still running in the stack in {self.state_dir}")
            self.stop_service(name)  # reaps it and closes its log file
        try:
            self.start_service(name)
        except StackError:
            # A start that failed leaves nothing running (a child that never became ready is stopped).
            if name in self._running:
                self.stop_service(name)
            raise
        return self._pids[name]

    # ------------------------------------------------------------------------------------------- internals

    def _track(self, proc: ChildProcess) -> None:
        self._children.append(proc)
        self._pids[proc.name] = proc.pid
        self._running[proc.name] = proc

    def _take_lock(self) -> None:
        lock = (self.state_dir / "stack.lock").open("w", encoding="utf-8")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            raise StackError(f"{self.state_dir} is in use by another running LocalStack") from exc
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _start_mosquitto(self, accounts: dict[str, mosquitto.Account]) -> int:
        admin = accounts["admin"]
        for attempt in range(1, _START_ATTEMPTS + 1):
            (port,) = free_ports(1)
            conf = mosquitto.write_config(self.state_dir, HOST, port, accounts)
            proc = mosquitto.start(conf, self.state_dir / "mosquitto.log")
            self._track(proc)
            self._confs[proc.name] = (conf, port)
            try:
                mosquitto.wait_ready(
                    proc, HOST, port, username=admin.username, password=admin.password, timeout=self.ready_timeout
                )
            except StackError:
                if attempt < _START_ATTEMPTS and _port_taken(proc):
                    log.info("port %d was taken before mosquitto bound it; trying another", port)
                    self._children.remove(proc)
                    del self._running[proc.name]
                    proc.stop(self.stop_timeout)
                    continue
                raise
            return port
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_influxdb(self) -> str:
        for attempt in range(1, _START_ATTEMPTS + 1):
            http_port, rpc_port = free_ports(2)
            conf = influxdb.write_config(self.state_dir, HOST, http_port, rpc_port)
            proc = influxdb.start(conf, self.state_dir / "influxd.log")
            self._track(proc)
            self._confs[proc.name] = (conf, http_port)
            url = f"http://{HOST}:{http_port}"
            try:
                influxdb.wait_ready(proc, url, self.ready_timeout)
            except StackError:
                if attempt < _START_ATTEMPTS and _port_taken(proc):
                    log.info("port %d or %d was taken before influxd bound it; trying others", http_port, rpc_port)
                    self._children.remove(proc)
                    del self._running[proc.name]
                    proc.stop(self.stop_timeout)
                    continue
                raise
            return url
        raise AssertionError("unreachable")  # pragma: no cover

    def _write_credentials(self, ep: StackEndpoints) -> None:
        path = self.state_dir / "credentials.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(ep.to_json(), f, indent=2)
        path.chmod(0o600)
