"""``ioc sim``: device simulators for tests, demos and bench work without hardware.

``ioc sim modbus --profile ID [--profile ID ...] [--host 127.0.0.1] [--port N] [--duration S]`` serves one
Modbus TCP unit per profile (unit ids 1..n, in order). As soon as it listens it prints one JSON line on stdout,
``{"host": ..., "port": ..., "units": [{"unit_id": 1, "profile": ...}, ...]}``, then serves until SIGINT,
SIGTERM or ``--duration`` seconds. Logs go to stderr; stdout carries only that line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys

from devices.errors import DeviceConfigError
from devices.profile import available_profiles
from devices.sim.modbus import ModbusSimulator

log = logging.getLogger("devices.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="simulator", required=True, metavar="SIMULATOR")
    modbus = sub.add_parser(
        "modbus",
        help="serve simulated Modbus TCP devices, one unit per profile",
        description="Serve one Modbus TCP unit per --profile (unit ids 1..n in order). Prints one JSON line with "
        "the bound host, port and units as soon as it listens.",
    )
    modbus.add_argument(
        "--profile",
        dest="profiles",
        action="append",
        required=True,
        metavar="ID",
        help=f"profile id or YAML path; repeat for more units (shipped: {', '.join(available_profiles())})",
    )
    modbus.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    modbus.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default 0)")
    modbus.add_argument("--duration", type=float, default=None, metavar="S", help="stop by itself after S seconds")
    modbus.add_argument("--update-interval", type=float, default=1.0, metavar="S", help="value updates (default 1 s)")
    modbus.add_argument("--seed", type=int, default=None, help="seed of the random walks (repeatable runs)")


def main(args: argparse.Namespace) -> int:
    if args.simulator != "modbus":  # argparse only offers modbus today
        log.error("unknown simulator %r", args.simulator)
        return 2
    try:
        return asyncio.run(_serve_modbus(args))
    except DeviceConfigError as exc:
        # A bad profile or option is the operator's to fix: the message names it, a traceback would not help.
        sys.stderr.write(f"ioc sim modbus: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"ioc sim modbus: {exc}\n")
        return 1


async def _serve_modbus(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise DeviceConfigError(f"--port must be 0..65535, not {args.port}")
    sim = ModbusSimulator(
        args.profiles,
        host=args.host,
        port=args.port,
        update_interval_s=args.update_interval,
        seed=args.seed,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with sim:
            # The parent (ioc demo, a test) reads this line to learn the port: write it at once, and only it.
            sys.stdout.write(json.dumps(sim.describe()) + "\n")
            sys.stdout.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=args.duration)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("Modbus simulator stopped")
    return 0
