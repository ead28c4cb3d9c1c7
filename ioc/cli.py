"""The ``ioc`` console script: one command, one subcommand per component.

Each component owns its own arguments (``<package>/cli.py`` with ``add_arguments`` and ``main``); this module
only mounts them and imports a component when its subcommand runs, so a site box that installed only the
``edge`` extra never imports FastAPI, and ``ioc --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from ioc import __version__


class _ComponentCli(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def main(self, args: argparse.Namespace) -> int: ...


#: subcommand -> (module, help, extra that provides it)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "hub": ("hub.cli", "run the central hub (MQTT -> InfluxDB, API)", "hub"),
    "edge": ("edge.cli", "run or check an edge agent", "edge"),
    "sim": (
        "devices.cli",
        "run device simulators: Modbus sensors, an NTCIP sign, ONVIF/RTSP cameras, or a whole simulated city",
        "edge",
    ),
    "stack": ("ioc.stack.cli", "the local Mosquitto + InfluxDB stack (ensure packages, start)", "hub"),
    "demo": ("ioc.demo", "run the whole system on a simulated city", "dev"),
    "dashboards": ("dashboards.cli", "Grafana boards as code: build provisioning files or push them", "hub"),
    "bench": ("benchmarks.bench_cli", "load benchmark of the hub: simulated gateways -> stored readings/s", "dev"),
}


def _load(module: str, extra: str) -> _ComponentCli:
    try:
        return cast(_ComponentCli, importlib.import_module(module))
    except ModuleNotFoundError as exc:
        raise SystemExit(
            f"ioc: this subcommand needs the '{extra}' extra ({exc.name} is not installed): "
            f"pip install 'ioc-backbone[{extra}]'"
        ) from exc


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ioc", description="IOC telemetry backbone")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Only the chosen subcommand's module is imported; the others just get their help line.
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_text, extra) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(module, extra).add_arguments(sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(args_list).parse_args(args_list)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pymodbus logs every timeout at ERROR with frame dumps; drivers already report those as their own
    # DeviceUnavailable, logged once per state change by the edge scheduler.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    # httpx logs every request at INFO; our own components log what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    module, _, extra = COMMANDS[args.command]
    return _load(module, extra).main(args)


if __name__ == "__main__":
    sys.exit(main())
