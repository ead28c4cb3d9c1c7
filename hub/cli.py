"""``ioc hub [--config FILE]``: run the hub until SIGINT or SIGTERM.

Exit codes: 0 after a graceful stop, 2 for bad settings (the message names the file or variable and the
field), 1 when a component fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from hub.config import HubSettings, load_settings
from hub.errors import ConfigError, HubError
from hub.service import run_hub

log = logging.getLogger("hub")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML settings file (sections mqtt, influx, batch, dead_letters, http); "
        "IOC_HUB_<SECTION>__<KEY> environment variables override it",
    )


def main(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"ioc hub: {exc}\n")
        return EXIT_CONFIG
    # httpx logs every request at INFO: one line per write batch and health check is noise here.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return asyncio.run(_run(settings))


async def _run(settings: HubSettings) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main_task = asyncio.current_task()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("%s: stopping (again to abort the drain)", sig.name)
            stop.set()
        elif main_task is not None:
            log.warning("%s again: aborting; unacknowledged messages stay with the broker", sig.name)
            main_task.cancel()

    handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig)
    failure: HubError | None = None
    try:
        await run_hub(settings, stop)
    except HubError as exc:
        failure = exc
    except asyncio.CancelledError:
        return EXIT_FAILED
    finally:
        for sig in handled:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
    if failure is not None:
        log.error("hub failed: %s", failure)
        return EXIT_FAILED
    return EXIT_OK
