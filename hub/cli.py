"""``ioc hub [--config FILE]``: run the hub until SIGINT or SIGTERM.

``ioc hub token create --role ROLE [--wards W ...] [--name N] [--config FILE]`` creates an API token in the
hub's database (``registry.url``) and prints it (only its hash is stored); ``ioc hub token list`` and
``ioc hub token revoke ID`` list and revoke tokens.

Exit codes: 0 after a graceful stop, 2 for bad settings (the message names the file or variable and the
field), 1 when a component fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import signal
import sys
from pathlib import Path

from hub.config import HubSettings, load_settings
from hub.errors import ConfigError, HubError
from hub.service import run_hub

log = logging.getLogger("hub")

#: The roles of API tokens (hub/auth.py), repeated so that ``ioc hub --help`` does not import SQLAlchemy.
ROLES = ("viewer", "operator", "technician", "admin")
_WARD_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")

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
    add_token_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if getattr(args, "hub_command", None) == "token":
        return token_main(args)
    try:
        settings = load_settings(args.config)
        check_operations_files(settings)
    except ConfigError as exc:
        sys.stderr.write(f"ioc hub: {exc}\n")
        return EXIT_CONFIG
    # httpx logs every request at INFO: one line per write batch and health check is noise here.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return asyncio.run(_run(settings))


def check_operations_files(settings: HubSettings) -> None:
    """The alert rules and the inventory are config too: a bad one stops the start with exit code 2."""
    from hub.alerts.rules import load_rules  # noqa: PLC0415 - imported with the subcommand only
    from hub.registry.inventory import InventoryError, load_file  # noqa: PLC0415

    if settings.alerts.rules_file is not None:
        load_rules(settings.alerts.rules_file)
    if settings.registry.inventory_file is not None:
        try:
            load_file(settings.registry.inventory_file)
        except InventoryError as exc:
            raise ConfigError(str(exc)) from exc


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


# ---------------------------------------------------------------------------------------------- tokens


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    """``ioc hub token create|list|revoke``."""
    sub = parser.add_subparsers(dest="hub_command", metavar="COMMAND")
    token = sub.add_parser("token", help="manage API tokens in the hub's database (registry.url)")
    actions = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a token and print it (shown once)")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--wards", nargs="+", metavar="WARD", help="limit the token to these wards")
    create.add_argument("--name", default="", help="who or what the token is for")
    actions.add_parser("list", help="list tokens (never the secrets)")
    revoke = actions.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id", metavar="ID")
    for p in (create, *actions.choices.values()):
        if not any(a.dest == "config" for a in p._actions):
            # SUPPRESS: without it the subcommand's default would overwrite "ioc hub --config FILE token ..."
            p.add_argument(
                "--config", type=Path, metavar="FILE", default=argparse.SUPPRESS, help="the hub's YAML settings file"
            )


def token_main(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"ioc hub token: {exc}\n")
        return EXIT_CONFIG
    url = settings.registry.url
    problem = ""
    if url is None:
        problem = "registry.url is not set (IOC_HUB_REGISTRY__URL or registry.url in --config): tokens live there"
    elif getattr(args, "wards", None):
        bad = [w for w in args.wards if not _WARD_RE.match(w)]
        if bad:
            problem = f"--wards: {', '.join(map(repr, bad))} is not a valid ward id"
    if problem or url is None:
        sys.stderr.write(f"ioc hub token: {problem}\n")
        return EXIT_CONFIG
    from hub.auth import create_token_in, list_tokens_in, revoke_in  # noqa: PLC0415 - only this subcommand needs it
    from hub.registry.db import Database  # noqa: PLC0415

    try:
        db = Database(url)
        try:
            db.create_schema()
            action = args.token_command
            if action == "create":
                token, _ = db.run_sync(
                    lambda s: create_token_in(s, args.role, wards=args.wards, name=args.name, created_by="cli")
                )
                sys.stdout.write(token + "\n")
            elif action == "list":
                for row in db.run_sync(list_tokens_in):
                    sys.stdout.write(json.dumps(row) + "\n")
            elif db.run_sync(lambda s: revoke_in(s, args.token_id)) is None:
                sys.stderr.write(f"ioc hub token: no token with id {args.token_id!r}\n")
                return EXIT_FAILED
            else:
                sys.stdout.write(f"revoked {args.token_id}\n")
        finally:
            db.close()
    except HubError as exc:
        sys.stderr.write(f"ioc hub token: {exc}\n")
        return EXIT_FAILED
    return EXIT_OK
