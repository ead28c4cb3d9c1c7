"""``ioc hub [--config FILE]``: run the hub until SIGINT or SIGTERM.

``ioc hub check [--config FILE] [--env-file FILE]`` checks the settings (and the alert rules and inventory files
they name) without starting anything and prints what the hub would use, secrets masked; with ``--env-file`` the
``IOC_HUB_*`` variables come from that systemd environment file only, as the unit would get them (the deployment
checks a rendered file with it before putting it in place).

``ioc hub token create --role ROLE [--wards W ...] [--name N] [--expires-in 90d] [--config FILE]`` creates an API
token (expiring after ``--expires-in``, else never) in the hub's database (``registry.url``) and prints it (only
its hash is stored); ``ioc hub token list`` and ``ioc hub token revoke ID`` list and revoke tokens.

``ioc hub db status [--config FILE]`` tells where the hub's database stands against this hub's migrations (its
revision, or empty, or made before migrations); ``ioc hub db upgrade`` upgrades it to the newest, as every start
of the hub does (hub/registry/migrations/).

Exit codes: 0 after a graceful stop, 2 for bad settings (the message names the file or variable and the
field), 1 when a component fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import re
import signal
import sys
from pathlib import Path

from hub.config import ENV_PREFIX, HubSettings, load_settings
from hub.errors import ConfigError, HubError
from hub.service import run_hub

log = logging.getLogger("hub")

#: The roles of API tokens (hub/auth.py), repeated so that ``ioc hub --help`` does not import SQLAlchemy.
ROLES = ("viewer", "operator", "technician", "admin")
_WARD_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")

#: The young generation's threshold once the hub has started (CPython's default is 700 allocations).
GC_GEN0_THRESHOLD = 10_000

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
    if getattr(args, "hub_command", None) == "check":
        return check_main(args)
    if getattr(args, "hub_command", None) == "db":
        return db_main(args)
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


def settle_garbage_collector() -> None:
    """Once the hub has started: collect, freeze what survives, and collect the young generation less often.

    The cyclic collector stops the whole process while it runs (the event loop, and the registry's database
    writer thread, which holds the interpreter lock through it). Its full collections visit every tracked object:
    with the modules, the app and the registry of a start-up they took 60-210 ms while the state of 5,000
    gateways was created in a birth storm, enough to push an API call past 200 ms. ``gc.freeze()`` moves what the
    start-up left to a generation the collector never visits (CPython's documented use, ``gc.freeze``); the
    ``gc.collect()`` before it leaves no cyclic garbage of the start-up to freeze. Frozen objects are still freed
    by reference counting when dropped; only cycles among them would never be collected. It is done once, so what
    stays is at most the start-up's own objects: a fixed amount, not a leak that grows (freezing again later,
    say after each storm, would keep every cycle dropped before it, without bound, so the hub does not).
    The young generation is collected every :data:`GC_GEN0_THRESHOLD` net allocations instead of 700: a storm's
    churn then promotes far fewer objects and triggers no full collection of its own, at the price of young
    collections of up to ~10,000 objects (a few ms) and as much cyclic garbage waiting at most. The state the
    storm creates (the health monitor's gateways and devices) is not frozen and stays collectable."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    log.debug("garbage collector: %d start-up objects frozen; thresholds %s", gc.get_freeze_count(), gc.get_threshold())


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
        await run_hub(settings, stop, on_ready=lambda _hub: settle_garbage_collector())
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


# ---------------------------------------------------------------------------------------------- check

_ENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def read_env_file(path: Path) -> dict[str, str]:
    """Variables of a systemd ``EnvironmentFile=``: ``KEY=value`` or ``KEY="value"`` (backslash escapes), comments
    and blank lines skipped. A line that is none of these is a :class:`ConfigError` naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the environment file: {exc}") from exc
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise ConfigError(f"{path}:{number}: not a KEY=value line")
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            quote, value = value[0], value[1:-1]
            if quote == '"':
                value = re.sub(r"\\(.)", r"\1", value)
        env[key] = value
    return env


def check_main(args: argparse.Namespace) -> int:
    config = getattr(args, "config", None)
    try:
        if args.env_file is not None:
            env = read_env_file(args.env_file)
            for name in [n for n in os.environ if n.upper().startswith(ENV_PREFIX)]:
                del os.environ[name]
            os.environ.update({k: v for k, v in env.items() if k.upper().startswith(ENV_PREFIX)})
        settings = load_settings(config)
        check_operations_files(settings)
        if settings.registry.url is not None:
            check_database_url(settings.registry.url)
    except ConfigError as exc:
        where = f"{args.env_file}: " if args.env_file is not None else ""
        sys.stderr.write(f"ioc hub check: {where}{exc}\n")
        return EXIT_CONFIG
    sys.stdout.write(describe(settings))
    return EXIT_OK


def check_database_url(url: str) -> None:
    """A URL of a database the hub supports, whose driver is installed (nothing is connected)."""
    from hub.errors import StartupError  # noqa: PLC0415 - only this subcommand needs it
    from hub.registry.db import create_db_engine  # noqa: PLC0415

    try:
        create_db_engine(url).dispose()
    except StartupError as exc:
        raise ConfigError(str(exc)) from exc


def describe(settings: HubSettings) -> str:
    """What the hub would use, one line per item; no secret is printed."""
    s = settings
    broker = f"{'mqtts' if s.mqtt.tls else 'mqtt'}://{s.mqtt.host}:{s.mqtt.port}"
    group = f", shared group {s.mqtt.shared_group}" if s.mqtt.shared_group else ""
    observe = {
        "share": "what this hub stores",
        "all": "every gateway, on its own connection (the operations hub)",
        "none": "nothing (storage only)",
    }[s.mqtt.observe_mode]
    influx = f"{s.influx.url} ({s.influx.api}"
    influx += f", database {s.influx.database})" if s.influx.api == "v1" else f", bucket {s.influx.bucket})"
    registry = _mask_url(s.registry.url) if s.registry.url else "(unset: a temporary SQLite file, removed at stop)"
    lines = [
        f"broker     {broker} as {s.mqtt.username or '(anonymous)'}, client id {s.mqtt.client_id}{group}",
        f"operations {observe}",
        f"influxdb   {influx}",
        f"api        {'https' if s.http.tls else 'http'}://{s.http.host}:{s.http.port}",
        f"registry   {registry}",
        f"spill      {s.spill.dir or '(off)'}",
        f"rules      {s.alerts.rules_file or '(built-in: device and gateway offline)'}",
        f"inventory  {s.registry.inventory_file or '(none)'}",
        "settings ok",
    ]
    return "\n".join(lines) + "\n"


def _mask_url(url: str) -> str:
    """The URL with its password hidden (SQLAlchemy's rendering, as hub/registry/db.py logs it)."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - only this subcommand needs it
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"


# ---------------------------------------------------------------------------------------------- tokens


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    """``ioc hub token create|list|revoke``."""
    sub = parser.add_subparsers(dest="hub_command", metavar="COMMAND")
    check = sub.add_parser("check", help="check the settings, alert rules and inventory without starting the hub")
    check.add_argument("--config", type=Path, metavar="FILE", default=argparse.SUPPRESS, help="YAML settings file")
    check.add_argument(
        "--env-file",
        type=Path,
        metavar="FILE",
        help="take the IOC_HUB_* variables from this systemd environment file only (as the unit would)",
    )
    token = sub.add_parser("token", help="manage API tokens in the hub's database (registry.url)")
    actions = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a token and print it (shown once)")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--wards", nargs="+", metavar="WARD", help="limit the token to these wards")
    create.add_argument("--name", default="", help="who or what the token is for")
    create.add_argument(
        "--expires-in",
        type=duration_s,
        metavar="DURATION",
        help="the token stops working after this long: a number with s, m, h or d (90d, 12h); default never",
    )
    actions.add_parser("list", help="list tokens (never the secrets)")
    revoke = actions.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id", metavar="ID")
    db = sub.add_parser("db", help="show or upgrade the schema of the hub's database (registry.url)")
    db_actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_actions.add_parser("status", help="the database's schema revision against this hub's newest (reads only)")
    db_actions.add_parser("upgrade", help="upgrade the schema to this hub's newest revision (every start does)")
    for p in (create, *actions.choices.values(), *db_actions.choices.values()):
        if not any(a.dest == "config" for a in p._actions):
            # SUPPRESS: without it the subcommand's default would overwrite "ioc hub --config FILE token ..."
            p.add_argument(
                "--config", type=Path, metavar="FILE", default=argparse.SUPPRESS, help="the hub's YAML settings file"
            )


_DURATION_RE = re.compile(r"^([0-9]{1,9})([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}
#: The bounds of ``--expires-in`` (the API's ``expires_in_s`` has the same; hub/auth.py MAX_EXPIRES_IN_S).
_EXPIRES_IN_MIN_S, _EXPIRES_IN_MAX_S = 60, 10 * 366 * 86_400


def duration_s(text: str) -> int:
    """``90d``, ``12h``, ``30m``, ``600s`` or ``600`` as seconds, between 1 min and 10 years (argparse type)."""
    match = _DURATION_RE.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (a number with s, m, h or d: 90d, 12h)")
    seconds = int(match[1]) * _UNIT_S[match[2]]
    if not _EXPIRES_IN_MIN_S <= seconds <= _EXPIRES_IN_MAX_S:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 1 minute and 10 years")
    return seconds


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
        bad = [w for w in args.wards if not _WARD_RE.fullmatch(w)]
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
                    lambda s: create_token_in(
                        s, args.role, wards=args.wards, name=args.name, created_by="cli", expires_in_s=args.expires_in
                    )
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


# ---------------------------------------------------------------------------------------------- db


def db_main(args: argparse.Namespace) -> int:
    """``ioc hub db status|upgrade``: one line saying where the schema stands, or what the upgrade did."""
    try:
        settings = load_settings(getattr(args, "config", None))
    except ConfigError as exc:
        sys.stderr.write(f"ioc hub db: {exc}\n")
        return EXIT_CONFIG
    url = settings.registry.url
    if url is None:
        sys.stderr.write("ioc hub db: registry.url is not set (IOC_HUB_REGISTRY__URL or registry.url in --config)\n")
        return EXIT_CONFIG
    from hub.registry.db import Database  # noqa: PLC0415 - only this subcommand needs it

    try:
        db = Database(url)
        try:
            done = db.create_schema() if args.db_command == "upgrade" else None
            line = done.describe() if done is not None else db.schema_status().describe()
        finally:
            db.close()
    except HubError as exc:
        sys.stderr.write(f"ioc hub db: {exc}\n")
        return EXIT_FAILED
    sys.stdout.write(f"{_mask_url(url)}: {line}\n")
    return EXIT_OK
