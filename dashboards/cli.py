"""``ioc dashboards build|push``: Grafana provisioning files, or the same boards through Grafana's HTTP API.

Both take the registry snapshot (``--registry FILE`` or ``--registry-url`` of a running hub) to make per-site
boards, the InfluxDB the datasource reads (``--influx-*``) and the language (``--locale vi|en``). Secrets come from
the environment, never from files or the command line history: ``IOC_GRAFANA_TOKEN`` (push), and for the
datasource ``IOC_GRAFANA_INFLUX_PASSWORD`` (1.x) or ``IOC_GRAFANA_INFLUX_TOKEN`` (2.x/3.x).
Exit codes: 0 done, 1 Grafana or the hub refused or could not be reached, 2 bad arguments or registry file.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from dashboards.build import DEFAULT_GRAFANA_DASHBOARDS, build, render_all
from dashboards.datasource import PASSWORD_ENV, TOKEN_ENV, InfluxTarget
from dashboards.i18n import LOCALES, Locale
from dashboards.registry import RegistryError, Snapshot, load_file, load_hub

if TYPE_CHECKING:
    from dashboards.push import PushReport

GRAFANA_TOKEN_ENV = "IOC_GRAFANA_TOKEN"  # noqa: S105 - the variable's name


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--locale", choices=LOCALES, default="en", help="language of titles, panels and units")
    reg = p.add_mutually_exclusive_group()
    reg.add_argument("--registry", type=Path, help="registry snapshot: YAML/JSON with sites and devices")
    reg.add_argument("--registry-url", help="a running hub to read GET /api/v1/sites and /devices from")
    p.add_argument("--registry-token", default=os.environ.get("IOC_HUB_TOKEN", ""), help="bearer token for the hub")
    p.add_argument("--influx-url", default="http://127.0.0.1:8086", help="InfluxDB URL as Grafana reaches it")
    p.add_argument("--influx-db", default="ioc", help="database (1.x), DBRP database (2.x) or database (3.x)")
    p.add_argument("--influx-flavour", choices=("v1", "v2", "v3"), default="v1", help="InfluxDB major version")
    p.add_argument("--influx-user", default="", help="1.x user Grafana reads as (password from the environment)")
    p.add_argument("--online-target", type=float, default=95.0, help="target share of devices online, percent")
    p.add_argument(
        "--in-time-target", type=float, default=90.0, help="target share of incidents resolved in time, percent"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dashboards_command", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="write Grafana provisioning files (datasource, providers, boards)")
    b.add_argument("--out", type=Path, required=True, help="output directory")
    b.add_argument(
        "--grafana-path",
        default=DEFAULT_GRAFANA_DASHBOARDS,
        help="where the dashboards/ folder will be on the Grafana host (the providers' path)",
    )
    _common(b)
    p = sub.add_parser("push", help="create/update folders, the datasource and the boards through Grafana's API")
    p.add_argument("--url", required=True, help="Grafana base URL, e.g. http://grafana:3000")
    p.add_argument("--token", default=os.environ.get(GRAFANA_TOKEN_ENV, ""), help=f"or ${GRAFANA_TOKEN_ENV}")
    p.add_argument("--prune", action="store_true", help="delete our boards (tag ioc-generated) no longer generated")
    p.add_argument("--update-secret", action="store_true", help="send the datasource secret even if Grafana has one")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request")
    p.add_argument(
        "--every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep running: re-read the registry every SECONDS and push when the boards change (Ctrl-C stops)",
    )
    _common(p)


def _snapshot(args: argparse.Namespace) -> Snapshot:
    if args.registry is not None:
        return load_file(args.registry)
    if args.registry_url:
        return load_hub(args.registry_url, args.registry_token)
    return Snapshot()


def _targets(args: argparse.Namespace) -> dict[str, float]:
    """The boards' targets in percent; ValueError naming the option outside 0..100."""
    for option, value in (("--online-target", args.online_target), ("--in-time-target", args.in_time_target)):
        if not 0 <= value <= 100:
            raise ValueError(f"{option} must be a percentage 0..100, not {value}")
    return {"online_target_pct": args.online_target, "in_time_target_pct": args.in_time_target}


def main(args: argparse.Namespace) -> int:
    locale: Locale = args.locale
    try:
        target = InfluxTarget(args.influx_url, args.influx_db, args.influx_flavour, args.influx_user)
        snap = _snapshot(args)
        rendered = render_all(snap, locale, **_targets(args))  # checks the uids once
    except (ValueError, RegistryError) as exc:
        _err(f"ioc dashboards: {exc}")
        return 2
    if args.dashboards_command == "build":
        try:
            built = build(
                args.out,
                snap,
                target,
                locale=locale,
                grafana_dashboards=args.grafana_path,
                **_targets(args),
            )
        except OSError as exc:
            _err(f"ioc dashboards build: cannot write under {args.out}: {exc.strerror or exc}")
            return 1
        for name in built.written:
            _out(f"written    {name}")
        for name in built.removed:
            _out(f"removed    {name}")
        _out(f"{args.out}: {built.summary()}")
        return 0
    from dashboards.push import PushError, connect, push  # noqa: PLC0415 - grafana-client only for push

    secret = os.environ.get(PASSWORD_ENV if target.flavour == "v1" else TOKEN_ENV, "")
    if args.every > 0:
        return _watch(args, target, secret, locale)
    try:
        api = connect(args.url, args.token, args.timeout)
        report = push(
            api,
            rendered,
            target,
            locale=locale,
            secret=secret,
            prune=args.prune,
            update_secret=args.update_secret,
        )
    except PushError as exc:
        _err(f"ioc dashboards push: {exc}")
        return 1
    _print_report(args.url, report)
    return 0


def _print_report(url: str, report: PushReport) -> None:
    for verb, names in (("created", report.created), ("changed", report.changed), ("removed", report.removed)):
        for name in names:
            _out(f"{verb:<10} {name}")
    _out(f"{url}: {report.summary()}")


def _watch(args: argparse.Namespace, target: InfluxTarget, secret: str, locale: Locale) -> int:
    """``push --every S``: until SIGINT/SIGTERM, push whenever the registry changes the boards."""
    from dashboards.push import PushError, connect, push_on_change  # noqa: PLC0415

    if args.registry is None and not args.registry_url:
        _err("ioc dashboards push --every: needs --registry or --registry-url (something that can change)")
        return 2
    try:
        api = connect(args.url, args.token, args.timeout)
    except PushError as exc:
        _err(f"ioc dashboards push: {exc}")
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    push_on_change(
        api,
        lambda: render_all(_snapshot(args), locale, **_targets(args)),
        target,
        stop,
        every_s=args.every,
        locale=locale,
        secret=secret,
        prune=args.prune,
        on_report=lambda report: _print_report(args.url, report),
    )
    return 0
