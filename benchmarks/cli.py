"""``python -m benchmarks [--runs N] [--only NAME] [--quick]``: run, print a table, write a JSON report.

Exit status 0 when every benchmark ran and checked its counts, 1 when one failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from benchmarks import api_list, codec, edge_footprint, edge_replay, ingest, scale, soak
from benchmarks.bench_cli import SCENARIOS
from benchmarks.errors import BenchmarkError
from benchmarks.load import run_load_benchmark
from benchmarks.results import BenchmarkResult, format_table, machine, write_report

log = logging.getLogger("benchmarks")

ROOT: Final = Path(__file__).resolve().parents[1]
OUT_DIR: Final = ROOT / ".ioc" / "bench"
LOAD_NAMES: Final = tuple(f"load-{scenario}" for scenario in SCENARIOS)
NAMES: Final = (codec.NAME, ingest.NAME, edge_footprint.NAME, edge_replay.NAME, *LOAD_NAMES, api_list.NAME)
#: Long ones, run only when named with --only (an hour of soak; a city of 5,000 gateways): ``make soak``,
#: ``python -m benchmarks.soak``, ``python -m benchmarks.scale`` run them with their own options.
ON_REQUEST: Final = (soak.NAME, scale.NAME)
#: --quick: a 5-minute soak, 500 gateways.
QUICK_SOAK_S: Final = 300.0
QUICK_GATEWAYS: Final = 500
#: The load scenarios (``ioc bench``) publish for 60 s a run; 3 runs each (1 of 5 s with --quick).
LOAD_RUNS: Final = 3
LOAD_DURATION_S: Final = 60.0
QUICK_LOAD_DURATION_S: Final = 5.0
DEFAULT_RUNS: Final = 5
QUICK_RUNS: Final = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Hub benchmarks: the per-message codec path, and ingest end to end through the local stack. "
        "Each benchmark runs several times and reports the median, min and max.",
    )
    parser.add_argument(
        "--runs", type=int, default=None, help=f"runs per benchmark (default {DEFAULT_RUNS}; {QUICK_RUNS} with --quick)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=(*NAMES, *ON_REQUEST),
        metavar="NAME",
        help=f"run only this benchmark ({', '.join(NAMES)}; on request only: {', '.join(ON_REQUEST)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smaller workloads and fewer runs (codec {codec.QUICK_MESSAGES} messages, "
        f"ingest {ingest.QUICK_MESSAGES} messages per run), for a check that everything works",
    )
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=ingest.DEFAULT_RUN_TIMEOUT_S,
        metavar="S",
        help=f"time limit of one ingest run (default {ingest.DEFAULT_RUN_TIMEOUT_S:.0f} s)",
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"where results go (default {OUT_DIR})")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    runs: int = args.runs if args.runs is not None else (QUICK_RUNS if args.quick else DEFAULT_RUNS)
    if runs < 1:
        parser.error("--runs must be at least 1")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out.resolve()
    selected = [name for name in (*NAMES, *ON_REQUEST) if name in (args.only or NAMES)]

    load_runs = args.runs if args.runs is not None else (1 if args.quick else LOAD_RUNS)

    def load(scenario: str) -> Callable[[], BenchmarkResult]:
        rate, batch = SCENARIOS[scenario]
        return lambda: run_load_benchmark(
            name=f"load-{scenario}",
            runs=load_runs,
            rate=rate,
            readings_per_message=batch,
            duration_s=QUICK_LOAD_DURATION_S if args.quick else LOAD_DURATION_S,
            work_dir=out,
            log_dir=out / f"logs-{stamp}",
            cwd=ROOT,
        )

    benchmarks: dict[str, Callable[[], BenchmarkResult]] = {
        codec.NAME: lambda: codec.run_codec(
            runs=runs, messages=codec.QUICK_MESSAGES if args.quick else codec.DEFAULT_MESSAGES
        ),
        ingest.NAME: lambda: ingest.run_ingest(
            runs=runs,
            messages=ingest.QUICK_MESSAGES if args.quick else ingest.DEFAULT_MESSAGES,
            run_timeout_s=args.run_timeout,
            work_dir=out,
            log_dir=out / f"logs-{stamp}",
            cwd=ROOT,
        ),
        edge_footprint.NAME: lambda: edge_footprint.run_edge_footprint(
            runs=runs,
            window_s=edge_footprint.QUICK_WINDOW_S if args.quick else edge_footprint.DEFAULT_WINDOW_S,
            settle_s=edge_footprint.QUICK_SETTLE_S if args.quick else edge_footprint.DEFAULT_SETTLE_S,
            work_dir=out,
            log_dir=out / f"logs-{stamp}",
            cwd=ROOT,
        ),
        edge_replay.NAME: lambda: edge_replay.run_edge_replay(runs=runs, work_dir=out, quick=args.quick),
        **{name: load(name.removeprefix("load-")) for name in LOAD_NAMES},
        api_list.NAME: lambda: api_list.run_api_list(runs=runs, quick=args.quick, work_dir=out, cwd=ROOT),
        soak.NAME: lambda: soak.run_soak(
            duration_s=QUICK_SOAK_S if args.quick else soak.DEFAULT_DURATION_S, out=out, stamp=stamp
        )[0],
        scale.NAME: lambda: scale.run_scale(
            gateways=QUICK_GATEWAYS if args.quick else scale.DEFAULT_GATEWAYS,
            work_dir=out,
            log_dir=out / f"logs-{stamp}",
        )[0],
    }
    at_start = machine()
    log.info(
        "benchmarks %s, %d runs each%s; machine %s",
        ", ".join(selected),
        runs,
        " (quick)" if args.quick else "",
        at_start,
    )
    results: list[BenchmarkResult] = []
    for name in selected:
        try:
            results.append(benchmarks[name]())
        except BenchmarkError as exc:
            log.error("%s failed: %s", name, exc)  # noqa: TRY400 - the message is the report
            results.append(BenchmarkResult(name, {}, error=str(exc)))
    command = shlex.join(["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)])
    path = write_report(
        results,
        out,
        command=command,
        started=started,
        settings={"runs": runs, "quick": args.quick, "machine_at_start": at_start},
    )
    sys.stdout.write("\n" + format_table(results) + f"\n\nresults: {path}\n")
    return 0 if all(r.ok for r in results) else 1
