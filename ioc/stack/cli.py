"""``ioc stack``: install the stack's Debian packages (``ensure``) or run a local stack by hand (``up``)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from ioc.stack.errors import StackError
from ioc.stack.packages import PACKAGES, ensure_packages, found_binaries, missing_packages
from ioc.stack.runner import DEFAULT_READY_TIMEOUT_S, LocalStack

log = logging.getLogger(__name__)

#: How often ``ioc stack up`` checks that its children are still alive.
_WATCH_INTERVAL_S = 0.5


def _gateway(value: str) -> tuple[str, str]:
    site, sep, gateway = value.partition(".")
    if not sep or not site or not gateway:
        raise argparse.ArgumentTypeError(f"expected SITE.GATEWAY, got {value!r}")
    return site, gateway


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="stack_command", required=True, metavar="STACK_COMMAND")
    sub.add_parser(
        "ensure",
        help="install mosquitto, mosquitto-clients and influxdb when missing (as root), else say how",
        description="Check for the Debian packages the local stack runs; install the missing ones when root.",
    )
    up = sub.add_parser(
        "up",
        help="start Mosquitto and InfluxDB on free loopback ports, print the endpoints, run until Ctrl-C",
        description="Start a local stack, print its endpoints and accounts as JSON, stop it on Ctrl-C/SIGTERM.",
    )
    up.add_argument("--state-dir", type=Path, default=Path(".ioc/stack"), help="configs, data and logs (.ioc/stack)")
    up.add_argument("--duration", type=float, default=None, metavar="S", help="stop by itself after S seconds")
    up.add_argument(
        "--gateway",
        type=_gateway,
        action="append",
        default=[],
        metavar="SITE.GATEWAY",
        help="create a broker account for this gateway (repeatable)",
    )
    up.add_argument("--influx-db", default="ioc", help="database to create (ioc)")
    up.add_argument(
        "--ready-timeout",
        type=float,
        default=DEFAULT_READY_TIMEOUT_S,
        metavar="S",
        help=f"seconds each service has to become ready ({DEFAULT_READY_TIMEOUT_S:.0f})",
    )


def main(args: argparse.Namespace) -> int:
    try:
        if args.stack_command == "ensure":
            return _ensure()
        return _up(args)
    except StackError as exc:
        sys.stderr.write(f"ioc stack: {exc}\n")
        return 1


def _ensure() -> int:
    missing_before = missing_packages()
    ensure_packages()
    for name, path in found_binaries().items():
        sys.stdout.write(f"{name:18} {path}\n")
    installed = [p.name for p in PACKAGES if p.name in missing_before]
    sys.stdout.write(f"installed: {', '.join(installed)}\n" if installed else "all packages were already installed\n")
    return 0


def _up(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        ensure_packages()
        stack = LocalStack(
            args.state_dir, gateways=args.gateway, influx_db=args.influx_db, ready_timeout=args.ready_timeout
        )
        with stack as endpoints:
            sys.stdout.write(json.dumps(endpoints.to_json(), indent=2) + "\n")
            sys.stdout.flush()
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                stop.wait(
                    _WATCH_INTERVAL_S if deadline is None else min(_WATCH_INTERVAL_S, deadline - time.monotonic())
                )
                stack.check_alive()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
