"""``ioc demo``: the whole system on a simulated city, on this machine.

It starts the local stack (Mosquitto with authentication and per-gateway accounts, InfluxDB), then, as child
processes exactly as they run in production: the hub (``ioc hub``), the simulated city (``ioc sim city``: per
site Modbus sensors, one or two NTCIP signs and ONVIF/RTSP cameras, and each gateway's edge config) and one
edge agent per site (``ioc edge run``, each with its own broker account), so stopping one agent is a real
gateway failure. Readings of all three device kinds reach InfluxDB within seconds.

It supervises them as production's systemd units do (:mod:`ioc.supervisor`): a process that fails (a crash,
``kill -9``) is started again after its unit's ``RestartSec``, within its unit's start budget; one stopped
cleanly (``kill``, SIGTERM) stays down. The terminal says what died, how, and when it came back, and
``demo.json`` always names the processes running now. The demo stops only on Ctrl-C (SIGINT, SIGTERM) or after
``--duration``.

The endpoints and the secrets (broker passwords, the hub's admin API token) are written to
``{state_dir}/demo.json``, readable by its owner only (0600); the terminal shows the endpoints and where the
secrets are, never the secrets themselves (a terminal is scrolled back, shared on screen and kept in logs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from devices.profile import load_profile
from devices.sim.city import GATEWAY, city_inventory, site_name
from hub.auth import create_token
from ioc.demo_processes import (
    CHILD_READY_TIMEOUT_S,
    Children,
    DemoError,
    DemoRestarts,
    hub_answers,
    ioc_argv,
    read_sim_port,
    write_edge_configs,
    write_private,
)
from ioc.stack import LocalStack, ensure_packages
from ioc.supervisor import Supervisor

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
        failed = run_demo(args.state_dir.resolve(), args.duration, stop, sites=args.sites)
    except DemoError as exc:
        print(f"ioc demo: {exc}", file=sys.stderr)
        return 1
    if failed:
        # Exit 1 although the rest ran on: `make demo DURATION=...` must not pass with a part that stayed down.
        down = "; ".join(f"{name} ({why})" for name, why in failed.items())
        print(f"ioc demo: left down after failing: {down}; see {args.state_dir / 'logs'}", file=sys.stderr)
        return 1
    return 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def wait_for_hub(url: str, children: Children) -> None:
    deadline = time.monotonic() + CHILD_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        children.check_started()
        if hub_answers(url):
            return
        time.sleep(0.2)
    raise DemoError(f"the hub's API did not answer at {url} within {CHILD_READY_TIMEOUT_S:.0f} s")


def print_event(message: str) -> None:
    """One line of what happened to the demo's processes, stamped with the local time, to the terminal."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


@dataclass
class RunningDemo:
    """The running demo: ``demo.json``'s document, the children, and the supervisor that restarts them."""

    doc: dict[str, Any]
    children: Children
    supervisor: Supervisor
    stack: LocalStack
    state_dir: Path

    def pids(self) -> dict[str, int]:
        """Name -> pid of every process of the demo (the last one started under that name)."""
        return {**self.stack.pids, **{name: proc.pid for name, proc in self.children.procs.items()}}

    def write_state(self) -> None:
        """``demo.json`` and ``pids`` as they are now: the pids of the running processes, and which are down
        and why (after a restart, a pid in them is the new process's)."""
        running = {name: pid for name, pid in self.pids().items() if self.supervisor.running(name)}
        self.doc["processes"] = running
        self.doc["down"] = self.supervisor.down()
        write_private(self.state_dir / "pids", "".join(f"{pid}\n" for pid in running.values()))
        write_private(self.state_dir / "demo.json", json.dumps(self.doc, indent=2) + "\n")


@contextlib.contextmanager
def demo_city(
    state_dir: Path, sites: int = DEFAULT_SITES, say: Callable[[str], None] = print_event
) -> Iterator[RunningDemo]:
    """Start everything; yield the running demo; stop everything on exit. What happens to the processes
    meanwhile (died, restarted, given up on) goes to ``say`` as :meth:`RunningDemo.supervisor`'s ``poll``
    finds it."""
    ensure_packages()
    state_dir.mkdir(parents=True, exist_ok=True)
    log_dir = state_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    gateways = city_sites(sites)
    stack = LocalStack(state_dir / "stack", gateways=gateways)
    with stack as ep:
        children = Children(log_dir)
        restarts = DemoRestarts(state_dir, stack, ep, children, say)
        try:
            hub_port = free_port()
            # The hub's database (registry, health, alerts, API tokens) in the state dir, and an admin
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
                    # A fixed client id: a restarted hub takes its persistent session back, with what the
                    # broker kept for it meanwhile.
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
            for name, config_path in write_edge_configs(state_dir, city, ep).items():
                children.start(name, ioc_argv("edge", "run", str(config_path)))
            wait_for_hub(hub_url, children)
            supervisor = restarts.supervisor = Supervisor(restarts.supervised(hub_url), say)
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
                # Which process is which (refreshed on every restart): kill one (kill -9) to see it restarted
                # as its systemd unit would; stop an agent (kill, SIGTERM) to see its gateway go offline.
                "processes": {},
                "down": {},
            }
            running = RunningDemo(doc, children, supervisor, stack, state_dir)
            running.write_state()
            yield running
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


#: How often the demo looks at its processes (sooner when a restart is due).
POLL_INTERVAL_S = 0.5


def run_demo(
    state_dir: Path, duration: float | None, stop: threading.Event, sites: int = DEFAULT_SITES
) -> dict[str, str]:
    """Run the demo until ``stop`` is set or ``duration`` seconds have passed, restarting what fails as systemd
    would (:mod:`ioc.supervisor`); the processes it gave up on or would not restart, with why."""
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
            f'  processes    "processes" in {secrets_file}: kill -9 one and it is restarted as its systemd unit '
            "would; stop one (kill) and it stays down\n"
            "Stop with Ctrl-C" + (f" (or it stops by itself after {duration:.0f} s)." if duration else "."),
            flush=True,
        )
        supervisor = running.supervisor
        deadline = None if duration is None else time.monotonic() + duration
        next_summary = time.monotonic() + 10
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            due = supervisor.next_due()
            stop.wait(POLL_INTERVAL_S if due is None else min(POLL_INTERVAL_S, max(0.0, due - time.monotonic())))
            if supervisor.poll():
                running.write_state()
            if time.monotonic() >= next_summary:
                print(hub_summary(doc["hub_url"]), flush=True)
                next_summary += 10
        failed = supervisor.failed()
    print("Demo stopped.", flush=True)
    return failed
