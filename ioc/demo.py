"""``ioc demo``: the whole system on a simulated city, on this machine.

It starts the local stack (Mosquitto with authentication and per-gateway accounts, InfluxDB), then, as child
processes exactly as they run in production: the hub (``ioc hub``), the simulated city (``ioc sim city``: per
site Modbus sensors, one or two NTCIP signs and ONVIF/RTSP cameras, and each gateway's edge config) and one
edge agent per site (``ioc edge run``, each with its own broker account), so stopping one agent is a real
gateway failure. Readings of all three device kinds reach InfluxDB within seconds. The endpoints and the
secrets (broker passwords, the hub's admin API token) are written to ``{state_dir}/demo.json``, readable by its
owner only (0600); the terminal shows the endpoints and where the secrets are, never the secrets themselves
(a terminal is scrolled back, shared on screen and kept in logs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from devices.profile import load_profile
from devices.sim.city import GATEWAY, city_inventory, site_name
from hub.auth import create_token
from ioc.stack import LocalStack, StackEndpoints, ensure_packages
from ioc.stack.process import die_with_parent

log = logging.getLogger("ioc.demo")

#: How long a child has to say it is ready (simulator port, hub API up).
CHILD_READY_TIMEOUT_S = 30.0


#: Sites of the demo city by default (``--sites``).
DEFAULT_SITES = 3


def city_sites(count: int = DEFAULT_SITES) -> list[tuple[str, str]]:
    """(site, gateway) of the demo city's sites, in order: what the broker needs accounts for."""
    return [(site_name(i)[0], GATEWAY) for i in range(1, count + 1)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=None, help="stop by itself after SECONDS")
    parser.add_argument("--state-dir", type=Path, default=Path(".ioc"), help="where configs, data, logs go")
    parser.add_argument("--sites", type=int, default=DEFAULT_SITES, help=f"sites in the city (default {DEFAULT_SITES})")


def main(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if not 1 <= args.sites <= 100:
        print(f"ioc demo: --sites must be 1..100, not {args.sites}", file=sys.stderr)
        return 2
    try:
        run_demo(args.state_dir.resolve(), args.duration, stop, sites=args.sites)
    except DemoError as exc:
        print(f"ioc demo: {exc}", file=sys.stderr)
        return 1
    return 0


class DemoError(RuntimeError):
    """The demo could not start; the message says which part and where its log is."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Children:
    """The demo's child processes; stops all of them (SIGTERM, then SIGKILL) whatever happens.

    An *essential* child (the hub, the simulated city) that dies ends the demo. An edge agent is not essential:
    on real hardware a gateway that stops is something the system must show (its will sets the site offline),
    so the demo says so once and keeps running.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.essential: set[str] = set()
        self.reported: set[str] = set()
        self._logs: list[IO[bytes]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, *, essential: bool = True
    ) -> subprocess.Popen[bytes]:
        log_file = (self.log_dir / f"{name}.log").open("wb")
        self._logs.append(log_file)
        proc = subprocess.Popen(  # noqa: S603 - argv is built here from our own executable
            argv,
            stdout=subprocess.PIPE if name.startswith("sim-") else log_file,
            stderr=log_file,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            # If the demo itself is killed (-9), the kernel stops its children too.
            preexec_fn=die_with_parent(os.getpid()),  # noqa: PLW1509 - only prctl + getppid, no locks
        )
        self.procs[name] = proc
        if essential:
            self.essential.add(name)
        return proc

    def check_alive(self) -> list[str]:
        """Raise :class:`DemoError` if an essential child died; return the other children that died since the
        last call (each reported once)."""
        newly_dead: list[str] = []
        for name, proc in self.procs.items():
            if proc.poll() is None:
                continue
            if name in self.essential:
                raise DemoError(f"{name} exited with {proc.returncode}; see {self.log_dir / (name + '.log')}")
            if name not in self.reported:
                self.reported.add(name)
                newly_dead.append(name)
        return newly_dead

    def stop_all(self, timeout_s: float = 10.0) -> None:
        """SIGTERM to every child, SIGKILL to those still running after ``timeout_s``; then close every pipe
        and log file this object opened (a pipe left open is a ResourceWarning, and an fd per child)."""
        try:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            for name, proc in self.procs.items():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in time; killing it", name)
                    proc.kill()
                    proc.wait()
        finally:
            for proc in self.procs.values():
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    if stream is not None:
                        stream.close()
            for f in self._logs:
                f.close()


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


def device_kinds(site: dict[str, Any]) -> dict[str, str]:
    """Device id -> kind (the InfluxDB measurement) of one site of ``ioc sim city``'s JSON line."""
    return {d["id"]: load_profile(d["profile"]).kind for d in site["devices"]}


#: The hub's example alert rules, shipped with the package.
EXAMPLE_RULES = Path(__file__).resolve().parents[1] / "hub" / "alerts" / "example-rules.yaml"


def write_demo_rules(path: Path) -> Path:
    """The example rules without their webhooks (they point at a receiver the demo does not run); ``path``."""
    doc = yaml.safe_load(EXAMPLE_RULES.read_text(encoding="utf-8"))
    doc.pop("webhooks", None)
    write_private(path, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only, atomically (readers never see half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    # Created 0600 (not chmod-ed after writing, which leaves the secrets readable under the umask meanwhile).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    tmp.replace(path)


def wait_for_hub(url: str, children: Children) -> None:
    deadline = time.monotonic() + CHILD_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        children.check_alive()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/v1/health", timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise DemoError(f"the hub's API did not answer at {url} within {CHILD_READY_TIMEOUT_S:.0f} s")


@dataclass(frozen=True)
class RunningDemo:
    doc: dict[str, Any]
    children: Children


@contextlib.contextmanager
def demo_city(state_dir: Path, sites: int = DEFAULT_SITES) -> Iterator[RunningDemo]:
    """Start everything; yield the endpoints document; stop everything on exit."""
    ensure_packages()
    state_dir.mkdir(parents=True, exist_ok=True)
    log_dir = state_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    gateways = city_sites(sites)
    stack = LocalStack(state_dir / "stack", gateways=gateways)
    with stack as ep:
        children = Children(log_dir)
        try:
            hub_port = free_port()
            # Issue 6: the hub's database (registry, health, alerts, API tokens) in the state dir, and an admin
            # API token created in it for demo.json ("hub_token"; send it as "Authorization: Bearer <token>").
            hub_db = f"sqlite:///{state_dir / 'hub.db'}"
            hub_token = create_token(hub_db, "admin", name="demo")
            # The city's sites with their ward and coordinates, as the technicians' inventory file the hub
            # loads at start: ward-limited tokens and the boards' ward filters then have wards to work on.
            inventory = state_dir / "inventory.yaml"
            write_private(inventory, yaml.safe_dump(city_inventory(sites), sort_keys=False, allow_unicode=True))
            # The example alert rules (hub/alerts/example-rules.yaml) without its webhooks, which point nowhere
            # here; an IOC_HUB_ALERTS__RULES_FILE of the caller's wins.
            rules = os.environ.get("IOC_HUB_ALERTS__RULES_FILE") or str(write_demo_rules(state_dir / "rules.yaml"))
            children.start(
                "hub",
                ioc_argv("hub"),
                env={
                    # Host, port and the hub's three broker accounts (intake, observer, commands).
                    **ep.hub_mqtt_env(),
                    "IOC_HUB_MQTT__CLIENT_ID": "ioc-hub-demo",
                    "IOC_HUB_INFLUX__URL": ep.influx_url,
                    "IOC_HUB_INFLUX__DATABASE": ep.influx_db,
                    "IOC_HUB_HTTP__PORT": str(hub_port),
                    "IOC_HUB_REGISTRY__URL": hub_db,
                    "IOC_HUB_REGISTRY__INVENTORY_FILE": str(inventory),
                    "IOC_HUB_ALERTS__RULES_FILE": rules,
                },
            )
            hub_url = f"http://127.0.0.1:{hub_port}"
            city_argv = ioc_argv(
                "sim",
                "city",
                "--sites",
                str(sites),
                "--out",
                str(state_dir / "city"),
                "--broker-host",
                ep.mqtt_host,
                "--broker-port",
                str(ep.mqtt_port),
            )
            city = read_sim_port(children.start("sim-city", city_argv), "sim-city")
            for site in city["sites"]:
                config_path = state_dir / f"edge-{site['site']}-{site['gateway']}.yaml"
                config = edge_config(Path(site["config"]), ep)
                write_private(config_path, yaml.safe_dump(config, sort_keys=False))
                children.start(f"edge-{site['site']}", ioc_argv("edge", "run", str(config_path)), essential=False)
            wait_for_hub(hub_url, children)
            doc = {
                "hub_url": hub_url,
                "hub_token": hub_token,
                "mqtt": {
                    "host": ep.mqtt_host,
                    "port": ep.mqtt_port,
                    "accounts": {
                        name: {"username": u, "password": p}
                        for name in ("hub", "hub-observe", "hub-cmd", "admin")
                        for (u, p) in [ep.credentials(name)]
                    },
                },
                "influxdb": {"url": ep.influx_url, "database": ep.influx_db},
                "sites": [
                    {
                        "site": s["site"],
                        "gateway": s["gateway"],
                        "district": s["district"],
                        "name": s["name"],
                        "ward_name": s["ward_name"],
                        "lat": s["lat"],
                        "lon": s["lon"],
                        "devices": device_kinds(s),
                    }
                    for s in city["sites"]
                ],
                "rtsp": {k: v for k, v in city["rtsp"].items() if k in ("available", "reason")},
                "logs": str(log_dir),
                # Which process is which: stop an edge agent to see a gateway fail (kill -9 for its will).
                "processes": {name: proc.pid for name, proc in children.procs.items()},
            }
            pids = [*stack.pids.values(), *(p.pid for p in children.procs.values())]
            write_private(state_dir / "pids", "\n".join(map(str, pids)) + "\n")
            write_private(state_dir / "demo.json", json.dumps(doc, indent=2) + "\n")
            yield RunningDemo(doc, children)
        finally:
            children.stop_all()


def hub_summary(hub_url: str) -> str:
    """One line of the hub's own counters, for the operator watching the demo's terminal."""
    try:
        stats = httpx.get(f"{hub_url}/api/v1/ingest/stats", timeout=2.0).json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"hub stats unavailable ({exc})"
    keys = ("readings", "lines_written", "dead_letters_total", "seq_gaps")
    return "hub: " + ", ".join(f"{k}={stats[k]}" for k in keys if k in stats)


def without_secrets(doc: dict[str, Any], where: Path) -> dict[str, Any]:
    """``demo.json``'s document as the terminal shows it: each secret replaced by where to find it."""
    pointer = f"(in {where})"
    shown = {**doc, "hub_token": pointer}
    mqtt = doc["mqtt"]
    shown["mqtt"] = {
        **mqtt,
        "accounts": {name: {**account, "password": pointer} for name, account in mqtt["accounts"].items()},
    }
    return shown


def run_demo(state_dir: Path, duration: float | None, stop: threading.Event, sites: int = DEFAULT_SITES) -> None:
    with demo_city(state_dir, sites) as running:
        doc = running.doc
        secrets_file = state_dir / "demo.json"
        print(json.dumps(without_secrets(doc, secrets_file), indent=2))
        kinds = [kind for site in doc["sites"] for kind in site["devices"].values()]
        signs, cameras = kinds.count("sign"), kinds.count("camera")
        streams = "with streams" if doc["rtsp"]["available"] else f"without streams ({doc['rtsp'].get('reason')})"
        print(
            f"\nDemo running: {len(doc['sites'])} sites, {len(kinds) - signs - cameras} Modbus sensors, "
            f"{signs} NTCIP signs, {cameras} cameras {streams}.\n"
            f"  operator     {doc['hub_url']}/  (paste the admin token hub_token from {secrets_file})\n"
            f"  hub API      {doc['hub_url']}/api/v1/openapi.json  (calls: Authorization: Bearer <hub_token>)\n"
            f"  InfluxDB     {doc['influxdb']['url']}  database {doc['influxdb']['database']}\n"
            f"  secrets      {secrets_file}  (owner only: the API token and the broker passwords)\n"
            "Stop with Ctrl-C" + (f" (or it stops by itself after {duration:.0f} s)." if duration else "."),
            flush=True,
        )
        deadline = None if duration is None else time.monotonic() + duration
        next_summary = time.monotonic() + 10
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            stop.wait(0.5)
            # The hub or the city dying is a failure of the demo, not something to hide (DemoError); an agent
            # dying is a gateway failure the system itself shows, so the demo only says it.
            for name in running.children.check_alive():
                proc = running.children.procs[name]
                print(
                    f"{name} exited with {proc.returncode}: that gateway is down (the hub marks it offline); "
                    "the demo goes on",
                    flush=True,
                )
            if time.monotonic() >= next_summary:
                print(hub_summary(doc["hub_url"]), flush=True)
                next_summary += 10
    print("Demo stopped.", flush=True)
