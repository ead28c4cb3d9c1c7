"""``ioc edge``: check a gateway's config and print its poll plan, or run the agent.

``ioc edge check CONFIG`` validates the config (including each device's driver options and profile) and
prints the plan; exit 0, or 2 with the problems on stderr. ``ioc edge run CONFIG`` runs the agent until SIGINT
or SIGTERM, then shuts down cleanly (queued readings sent, offline state published); exit 2 on a bad config,
with the same one-line-per-problem message as ``check``, also for what only start-up finds (an outbox folder
that cannot be created, a CA file that does not load): never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from edge.agent import run_agent
from edge.config import EdgeConfig, load_config
from edge.errors import ConfigError
from edge.outbox_sqlite import describe_bounds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="edge_command", required=True, metavar="COMMAND")
    check = sub.add_parser(
        "check",
        help="validate a gateway config and print its poll plan",
        description="Validate CONFIG (devices' driver options and profiles included) and print the poll plan. "
        "Exit 0 if valid, 2 otherwise. Environment variables IOC_EDGE_<SECTION>__<KEY> override the file.",
    )
    check.add_argument("config", type=Path, metavar="CONFIG", help="the gateway's YAML config")
    run = sub.add_parser(
        "run",
        help="run the edge agent",
        description="Run the agent of CONFIG until SIGINT or SIGTERM, then shut down cleanly.",
    )
    run.add_argument("config", type=Path, metavar="CONFIG", help="the gateway's YAML config")


def main(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _invalid(args.edge_command, str(exc))
    if args.edge_command == "check":
        sys.stdout.write(describe_plan(config, str(args.config)))
        return 0
    _raise_mmap_threshold()
    try:
        return asyncio.run(_run(config, args.config))
    except ConfigError as exc:
        # Found only at start-up (the outbox, the TLS context): named like load_config's, file first.
        return _invalid(args.edge_command, f"{args.config}: {exc}")


def _raise_mmap_threshold() -> None:
    """Free one 1 MiB block, so that glibc's malloc stops serving 256 KiB blocks with mmap.

    glibc serves a block above its mmap threshold (128 KiB at start) with its own mmap, and raises the
    threshold to the size of an mmapped block when one is freed (mallopt(3), "M_MMAP_THRESHOLD": dynamic
    adjustment). asyncio reads a socket into a 256 KiB buffer, then shrinks it to what was read (mremap): the
    shrunk block no longer raises the threshold, so every read stays an mmap, mremap and munmap, with page
    faults, about 50 a second with 50 Modbus devices: a third of the agent's CPU in the edge_footprint
    benchmark. Once a 1 MiB block was freed, reads reuse heap memory (and the trim threshold is 2 MiB).
    Elsewhere than glibc this is one short-lived allocation.
    """
    block = bytearray(1 << 20)
    del block


def _invalid(command: str, problems: str) -> int:
    sys.stderr.write(f"ioc edge {command}: invalid config\n{problems}\n")
    return 2


def describe_plan(config: EdgeConfig, source: str) -> str:
    """What ``ioc edge check`` prints: the gateway, its broker, batching, and each device's requests."""
    broker = config.broker
    publish = config.publish
    account = f" as {broker.username!r}" if broker.username else " without an account"
    plans = config.device_plans()
    gateway = (
        f"gateway {config.site}/{config.gateway}: broker {broker.host}:{broker.port}"
        f"{' with TLS' if broker.tls else ''}{account}, keepalive {broker.keepalive_s} s"
        # The birth's promise (docs/protocol.md), kept with self-metrics readings: none without them.
        f"{' (data at least that often)' if config.self_metrics.enabled else ''}"
    )
    batching = (
        f"publish: up to {publish.max_batch} readings per batch, at most {publish.max_delay_ms} ms delay, "
        f"outbox at most {describe_bounds(publish.outbox_max_bytes, publish.outbox_max)} "
        f"(oldest dropped beyond)"
    )
    metrics = config.self_metrics
    agent = (
        f"self-metrics: every {metrics.interval_s:g} s as kind agent, device {config.gateway}"
        if metrics.enabled
        else "self-metrics: off"
    )
    lines = [f"{source}: valid", gateway, batching, agent, f"{len(plans)} device{'' if len(plans) == 1 else 's'}:"]
    reports = {d.id: d.report for d in config.devices}
    for plan in plans:
        lines.extend(f"  {line}" for line in plan.describe())
        report = reports.get(plan.id)
        if report is not None:
            bands = [f"{k} ±{v:g}" for k, v in report.deadband.items()]
            bands += [f"{k} ±{v:g} %" for k, v in report.deadband_pct.items()]
            lines.append(
                f"    report by exception: at least every {report.max_silence_s:g} s; "
                f"deadbands: {', '.join(bands) or 'none (any change)'}"
            )
    return "\n".join(lines) + "\n"


async def _run(config: EdgeConfig, path: Path) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_agent(config, stop, config_path=path)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return 0
