"""``soak`` (``make soak``): the demo city at ``factor`` times its rate for ``duration_s``; memory, open files, loss.

What runs is ``ioc demo``'s city, process for process (:func:`ioc.demo.demo_city`'s parts: the local stack's
Mosquitto and InfluxDB, the hub as ``ioc hub`` with the demo's registry, inventory and alert rules, the simulated
city as ``ioc sim city``, one ``ioc edge run`` per site), with one difference: every device's ``interval_s`` in
the agents' configs is divided by ``factor`` (10 by default: sensors every 0.2 s instead of 2 s, signs every
0.5 s, cameras every 1.5 s). Nothing is restarted: a process that dies ends the soak as a failure (a restart
would hide a leak and reset the figures).

Every ``sample_s`` (60 s) it records, per process (psutil): resident memory (RSS), open file descriptors (every
kind: files, sockets, pipes) and CPU time; the simulated city's own children (VLC's RTSP server) are sampled too,
as ``sim-city/<name>``. It also records the hub's ``/api/v1/ingest/stats`` and the load average.

Memory is judged from the warm-up on (``warmup_s``, 600 s, or a third of a shorter run): ``growth_pct`` is a
process's RSS at the last sample against its RSS at the first sample at or after the warm-up (goal: under 5 %).

Loss is counted exactly, per gateway and per device, at the end: each agent is stopped cleanly (SIGTERM: it
sends what it holds and logs its final counters); every reading it queued in its life (``readings_queued``:
its devices' readings and its own ``agent`` figures) must be in InfluxDB under its site, counted row by row per
device, with nothing dropped (``readings_dropped``) or left in its outbox; the hub's ``seq_gaps`` and dead
letters must be 0.

Output: a table, ``soak-<UTC stamp>.json`` (every sample, the loss count, the growth per process) and, where
matplotlib is installed (the dev lock), ``soak-<UTC stamp>.png``: RSS and open files per process over time.
``python -m benchmarks.soak --plot REPORT.json [--png OUT.png]`` draws the plot of a report again.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import psutil
import yaml

from benchmarks.errors import BenchmarkError
from benchmarks.results import BenchmarkResult, RunSample, format_table, machine, write_report
from devices.sim.city import city_inventory
from hub.auth import create_token
from ioc.demo import city_sites, device_kinds, free_port, write_demo_rules
from ioc.demo_processes import Children, edge_config, hub_answers, ioc_argv, read_sim_port, write_private
from ioc.stack import LocalStack, StackEndpoints, StackError, ensure_packages, influx_query

log = logging.getLogger(__name__)

NAME: Final = "soak"
ROOT: Final = Path(__file__).resolve().parents[1]
OUT_DIR: Final = ROOT / ".ioc" / "bench"
DEFAULT_DURATION_S: Final = 3600.0
DEFAULT_FACTOR: Final = 10.0
DEFAULT_SITES: Final = 3
DEFAULT_SAMPLE_S: Final = 60.0
#: Memory is judged from here on (or from a third of a shorter run).
DEFAULT_WARMUP_S: Final = 600.0
#: The issue's goal: RSS growth after warm-up under this, per process.
GROWTH_GOAL_PCT: Final = 5.0
#: The agents' poll intervals may not go below the edge config's own floor (``devices[].interval_s``).
MIN_INTERVAL_S: Final = 0.1
#: The hub's API answering, the city printing its ports.
START_TIMEOUT_S: Final = 60.0
#: After the agents stopped: how long the hub may take to store what they sent.
STORE_TIMEOUT_S: Final = 120.0
HTTP_TIMEOUT_S: Final = 10.0
#: InfluxDB is counted row by row in windows of this length (a few thousand rows per query).
COUNT_WINDOW_MS: Final = 10 * 60 * 1000
#: The agent's counters, logged every minute and once more on its way out (``edge/stats.py``).
STATS_LINE: Final = re.compile(r"stats: (polls_ok=.*) outbox=(\d+)$")


@dataclass
class ProcessSample:
    pid: int
    rss_bytes: int
    fds: int
    cpu_s: float


@dataclass
class Sample:
    """One minute's look at every process."""

    t_s: float
    loadavg: list[float]
    processes: dict[str, ProcessSample]
    hub: dict[str, int]


@dataclass
class SiteLoss:
    """One gateway's loss count: what its agent queued against the rows InfluxDB holds for its site."""

    site: str
    readings_queued: int
    readings_sent: int
    readings_dropped: int
    outbox_left: int
    stored: int
    stored_by_device: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.readings_queued - self.stored


def scaled_edge_config(path: Path, ep: StackEndpoints, factor: float) -> dict[str, Any]:
    """The city's edge config of one site with its broker account (:func:`ioc.demo_processes.edge_config`), every
    device polled ``factor`` times as often."""
    doc = edge_config(path, ep)
    for device in doc["devices"]:
        interval = float(device["interval_s"]) / factor
        if interval < MIN_INTERVAL_S:
            raise BenchmarkError(
                f"factor {factor:g}: {device['id']} would be polled every {interval:g} s, "
                f"below the edge config's floor of {MIN_INTERVAL_S} s"
            )
        device["interval_s"] = round(interval, 3)
    return doc


def sample_process(pid: int) -> ProcessSample | None:
    """RSS, open descriptors and CPU time of ``pid``; None when it is gone."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            cpu = proc.cpu_times()
            return ProcessSample(pid, proc.memory_info().rss, proc.num_fds(), cpu.user + cpu.system)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


@dataclass
class _Soak:
    """The running city and what is known about it."""

    state_dir: Path
    stack: LocalStack
    ep: StackEndpoints
    children: Children
    hub_url: str
    hub_token: str
    sites: list[dict[str, Any]]
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=HTTP_TIMEOUT_S))

    def pids(self) -> dict[str, int]:
        return {**self.stack.pids, **{name: proc.pid for name, proc in self.children.procs.items()}}

    def check_alive(self) -> None:
        """:class:`BenchmarkError` naming a process that died (nothing is restarted during a soak)."""
        try:
            self.stack.check_alive()
        except StackError as exc:
            raise BenchmarkError(str(exc)) from exc
        for name, proc in self.children.procs.items():
            if proc.poll() is not None:
                raise BenchmarkError(
                    f"{name} exited ({proc.returncode}) during the soak; see {self.children.log_path(name)}"
                )

    def hub_stats(self) -> dict[str, Any]:
        response = self.http.get(f"{self.hub_url}/api/v1/ingest/stats")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def sample(self, t_s: float) -> Sample:
        processes: dict[str, ProcessSample] = {}
        for name, pid in self.pids().items():
            if (s := sample_process(pid)) is not None:
                processes[name] = s
        # The city's own children (VLC serving the cameras' streams): long-lived, so sampled as well.
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.children.procs["sim-city"].pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if (s := sample_process(child.pid)) is not None:
                        processes[f"sim-city/{child.name()}"] = s
        hub: dict[str, int] = {}
        with contextlib.suppress(httpx.HTTPError, ValueError):
            stats = self.hub_stats()
            hub = {
                k: int(stats[k])
                for k in ("readings", "lines_written", "seq_gaps", "dead_letters_total", "write_errors", "acks")
                if k in stats
            }
        return Sample(round(t_s, 1), list(os.getloadavg()), processes, hub)


@contextlib.contextmanager
def soak_city(state_dir: Path, sites: int, factor: float) -> Iterator[_Soak]:
    """``ioc demo``'s city (:func:`ioc.demo.demo_city`) with every poll ``factor`` times as often, unsupervised."""
    ensure_packages()
    state_dir.mkdir(parents=True, exist_ok=True)
    log_dir = state_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    stack = LocalStack(state_dir / "stack", gateways=city_sites(sites))
    try:
        ep = stack.__enter__()
    except StackError as exc:
        raise BenchmarkError(f"the local stack did not start: {exc}") from exc
    children = Children(log_dir)
    try:
        hub_port = free_port()
        hub_db = f"sqlite:///{state_dir / 'hub.db'}"
        hub_token = create_token(hub_db, "admin", name="soak")
        inventory = state_dir / "inventory.yaml"
        write_private(inventory, yaml.safe_dump(city_inventory(sites), sort_keys=False, allow_unicode=True))
        children.start(
            "hub",
            ioc_argv("hub"),
            env={
                **ep.hub_mqtt_env(),
                "IOC_HUB_MQTT__CLIENT_ID": "ioc-hub-soak",
                "IOC_HUB_INFLUX__URL": ep.influx_url,
                "IOC_HUB_INFLUX__DATABASE": ep.influx_db,
                "IOC_HUB_HTTP__PORT": str(hub_port),
                "IOC_HUB_REGISTRY__URL": hub_db,
                "IOC_HUB_REGISTRY__INVENTORY_FILE": str(inventory),
                "IOC_HUB_ALERTS__RULES_FILE": str(write_demo_rules(state_dir / "rules.yaml")),
            },
        )
        city_argv = ioc_argv(
            "sim",
            "city",
            *("--sites", str(sites), "--out", str(state_dir / "city")),
            *("--broker-host", ep.mqtt_host, "--broker-port", str(ep.mqtt_port)),
        )
        city = read_sim_port(children.start("sim-city", city_argv), "sim-city")
        for site in city["sites"]:
            path = state_dir / f"edge-{site['site']}-{site['gateway']}.yaml"
            doc = scaled_edge_config(Path(site["config"]), ep, factor)
            write_private(path, yaml.safe_dump(doc, sort_keys=False))
            children.start(f"edge-{site['site']}", ioc_argv("edge", "run", str(path)))
        hub_url = f"http://127.0.0.1:{hub_port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not hub_answers(hub_url):
            children.check_started()
            if time.monotonic() > deadline:
                raise BenchmarkError(f"the hub's API did not answer within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
        soak = _Soak(state_dir, stack, ep, children, hub_url, hub_token, city["sites"])
        try:
            yield soak
        finally:
            soak.http.close()
    finally:
        try:
            children.stop_all()
        finally:
            stack.__exit__(None, None, None)


def final_stats(log_path: Path) -> dict[str, int]:
    """The counters of the agent's last ``stats:`` line (logged on its way out, after its drain)."""
    found = [m for line in log_path.read_text(errors="replace").splitlines() if (m := STATS_LINE.search(line))]
    if not found:
        raise BenchmarkError(f"no stats line in {log_path}")
    last = found[-1]
    stats = {key: int(value) for key, value in (pair.split("=") for pair in last[1].split())}
    stats["outbox"] = int(last[2])
    return stats


def rows_per_device(url: str, db: str, site: str, kinds: set[str], until_ms: int) -> dict[str, int]:
    """Points in InfluxDB per device of ``site`` over every measurement of ``kinds``, one row per point, counted
    in windows of :data:`COUNT_WINDOW_MS` from the first point to ``until_ms``."""
    counts: dict[str, int] = {}
    for kind in sorted(kinds):
        first = influx_query(url, db, f'SELECT * FROM "{kind}" WHERE "site" = \'{site}\' LIMIT 1')  # noqa: S608 - our own ids
        if not first:
            continue
        start = int(first[0]["time"])
        while start <= until_ms:
            end = start + COUNT_WINDOW_MS
            q = (
                f'SELECT * FROM "{kind}" WHERE "site" = \'{site}\' '  # noqa: S608 - our own ids
                f'AND time >= {start}ms AND time < {end}ms GROUP BY "device"'
            )
            for row in influx_query(url, db, q, timeout=60.0):
                counts[row["device"]] = counts.get(row["device"], 0) + 1
            start = end
    return counts


def _count_loss(soak: _Soak, until_ms: int) -> list[SiteLoss]:
    out = []
    for site in soak.sites:
        name = site["site"]
        stats = final_stats(soak.children.log_path(f"edge-{name}"))
        kinds = {*device_kinds(site).values(), "agent"}
        stored = rows_per_device(soak.ep.influx_url, soak.ep.influx_db, name, kinds, until_ms)
        out.append(
            SiteLoss(
                name,
                stats["readings_queued"],
                stats["readings_sent"],
                stats["readings_dropped"],
                stats["outbox"],
                sum(stored.values()),
                dict(sorted(stored.items())),
            )
        )
    return out


def _wait_hub_idle(soak: _Soak) -> dict[str, Any]:
    """Until the hub has written nothing new for 5 s (what the agents sent is stored); its stats then."""
    deadline = time.monotonic() + STORE_TIMEOUT_S
    last, since = -1, time.monotonic()
    while True:
        stats = soak.hub_stats()
        if stats["lines_written"] != last:
            last, since = stats["lines_written"], time.monotonic()
        elif time.monotonic() - since >= 5.0:
            return stats
        if time.monotonic() > deadline:
            return stats
        time.sleep(0.5)


def growth(samples: list[Sample], warmup_s: float) -> dict[str, dict[str, float]]:
    """Per process: RSS and open files at the warm-up sample, at the last and at most; RSS growth in %."""
    out: dict[str, dict[str, float]] = {}
    after = [s for s in samples if s.t_s >= warmup_s] or samples[-1:]
    names = sorted({name for s in samples for name in s.processes})
    for name in names:
        series = [s.processes[name] for s in after if name in s.processes]
        if not series:
            continue
        first, last = series[0], series[-1]
        out[name] = {
            "rss_mib_at_warmup": first.rss_bytes / 2**20,
            "rss_mib_at_end": last.rss_bytes / 2**20,
            "rss_mib_max": max(p.rss_bytes for p in series) / 2**20,
            "growth_pct": 100.0 * (last.rss_bytes - first.rss_bytes) / max(first.rss_bytes, 1),
            "fds_at_warmup": first.fds,
            "fds_at_end": last.fds,
            "fds_max": max(p.fds for p in series),
            "cpu_pct": 100.0 * (last.cpu_s - first.cpu_s) / max(last_t(after, name) - first_t(after, name), 1e-9),
        }
    return out


def first_t(samples: list[Sample], name: str) -> float:
    return next(s.t_s for s in samples if name in s.processes)


def last_t(samples: list[Sample], name: str) -> float:
    return next(s.t_s for s in reversed(samples) if name in s.processes)


def _observe(soak: _Soak, duration_s: float, sample_s: float, samples: list[Sample]) -> None:
    """A sample every ``sample_s`` for ``duration_s``, and one at the end, appended to ``samples``."""
    start = time.monotonic()
    next_at = start
    while True:
        now = time.monotonic()
        if now >= next_at:
            soak.check_alive()
            samples.append(soak.sample(now - start))
            last = samples[-1]
            log.info(
                "soak t=%4.0f s load %.1f: %s; hub %s",
                last.t_s,
                last.loadavg[0],
                ", ".join(f"{n} {p.rss_bytes / 2**20:.0f} MiB/{p.fds} fds" for n, p in sorted(last.processes.items())),
                last.hub,
            )
            next_at += sample_s
        if now - start >= duration_s:
            break
        time.sleep(max(0.0, min(next_at, start + duration_s) - time.monotonic()))
    soak.check_alive()
    samples.append(soak.sample(time.monotonic() - start))


def _verdict(losses: list[SiteLoss], hub: dict[str, Any], codes: dict[str, int | None], figures: dict[str, Any]) -> str:
    """Why the soak misses its goals ("" when it meets them)."""
    queued = sum(s.readings_queued for s in losses)
    lost = sum(s.lost for s in losses)
    dropped = sum(s.readings_dropped for s in losses)
    left = sum(s.outbox_left for s in losses)
    why = []
    if lost or dropped or left:
        why.append(f"lost {lost} of {queued} readings (dropped at the edge {dropped}, left in outboxes {left})")
    if hub.get("seq_gaps") or hub.get("dead_letters_total"):
        why.append(f"hub: {hub.get('seq_gaps')} seq gaps, {hub.get('dead_letters_total')} dead letters")
    if any(code != 0 for code in codes.values()):
        why.append(f"an agent did not stop cleanly: {codes}")
    grown = {n: round(f["growth_pct"], 1) for n, f in figures.items() if f["growth_pct"] >= GROWTH_GOAL_PCT}
    if grown:
        why.append(f"RSS grew {GROWTH_GOAL_PCT:g} % or more after the warm-up: {grown}")
    return "; ".join(why)


def run_soak(
    *,
    duration_s: float = DEFAULT_DURATION_S,
    factor: float = DEFAULT_FACTOR,
    sites: int = DEFAULT_SITES,
    sample_s: float = DEFAULT_SAMPLE_S,
    warmup_s: float | None = None,
    out: Path = OUT_DIR,
    stamp: str = "",
) -> tuple[BenchmarkResult, dict[str, Any]]:
    """Run the soak; the result (one sample: growth and loss figures) and the whole report (every sample)."""
    stamp = stamp or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    warmup = min(DEFAULT_WARMUP_S, duration_s / 3) if warmup_s is None else warmup_s
    params = {"duration_s": duration_s, "factor": factor, "sites": sites, "sample_s": sample_s, "warmup_s": warmup}
    result = BenchmarkResult(NAME, params)
    report: dict[str, Any] = {"params": params, "machine_at_start": machine(), "samples": [], "error": ""}
    samples: list[Sample] = []
    try:
        with soak_city(out / f"soak-{stamp}", sites, factor) as soak:
            log.info(
                "soak: %d sites at %g x the demo's rate for %.0f s, a sample every %.0f s; state in %s",
                *(sites, factor, duration_s, sample_s, soak.state_dir),
            )
            _observe(soak, duration_s, sample_s, samples)
            alerts = _open_alerts(soak)
            # Agents stop cleanly: each sends what it holds and logs its final counters.
            agents = [name for name in soak.children.procs if name.startswith("edge-")]
            soak.children.stop(agents, timeout_s=30.0)
            stopped_ms = int(time.time() * 1000)
            codes = {name: soak.children.procs[name].returncode for name in agents}
            hub = _wait_hub_idle(soak)
            losses = _count_loss(soak, stopped_ms + 60_000)
    except BenchmarkError as exc:
        report["error"] = result.error = str(exc)
        report["samples"] = [asdict(s) for s in samples]
        _write(report, out, stamp)
        return result, report
    figures = growth(samples, warmup)
    report.update(
        samples=[asdict(s) for s in samples],
        growth=figures,
        loss=[{**asdict(s), "lost": s.lost} for s in losses],
        hub_at_end={k: hub.get(k) for k in ("readings", "lines_written", "seq_gaps", "dead_letters_total")},
        open_alerts=alerts,
        agent_exit_codes=codes,
        machine_at_end=machine(),
    )
    metrics: dict[str, float] = {f"{name}_growth_pct": f["growth_pct"] for name, f in figures.items()}
    metrics.update({f"{name}_rss_mib_end": f["rss_mib_at_end"] for name, f in figures.items()})
    metrics.update({f"{name}_fds_end": f["fds_at_end"] for name, f in figures.items()})
    counts = {
        "readings_queued": sum(s.readings_queued for s in losses),
        "stored": sum(s.stored for s in losses),
        "lost": sum(s.lost for s in losses),
        "dropped_at_edge": sum(s.readings_dropped for s in losses),
        "left_in_outbox": sum(s.outbox_left for s in losses),
        "seq_gaps": int(hub.get("seq_gaps", -1)),
        "dead_letters": int(hub.get("dead_letters_total", -1)),
        "samples": len(samples),
    }
    result.samples.append(RunSample(metrics, counts))
    report["error"] = result.error = _verdict(losses, hub, codes, figures)
    path = _write(report, out, stamp)
    with contextlib.suppress(ImportError):
        plot(report, path.with_suffix(".png"))
    return result, report


def _open_alerts(soak: _Soak) -> list[dict[str, Any]]:
    try:
        response = soak.http.get(
            f"{soak.hub_url}/api/v1/alerts",
            params={"state": "open"},
            headers={"Authorization": f"Bearer {soak.hub_token}"},
        )
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return [{"error": str(exc)}]
    return items


def _write(report: dict[str, Any], out: Path, stamp: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"soak-{stamp}.json"
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    log.info("soak report: %s", path)
    return path


def plot(report: dict[str, Any], png: Path) -> Path:
    """RSS (MiB) and open descriptors per process over the soak, two panels, as a PNG. Needs matplotlib."""
    import matplotlib as mpl  # noqa: PLC0415 - only for the plot, a dev dependency

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    samples = report["samples"]
    names = sorted({name for s in samples for name in s["processes"]})
    fig, (mem, fds) = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    for name in names:
        points = [(s["t_s"] / 60, s["processes"][name]) for s in samples if name in s["processes"]]
        minutes = [t for t, _ in points]
        mem.plot(minutes, [p["rss_bytes"] / 2**20 for _, p in points], marker=".", label=name)
        fds.plot(minutes, [p["fds"] for _, p in points], marker=".", label=name)
    params = report["params"]
    warmup_min = params["warmup_s"] / 60
    for ax in (mem, fds):
        ax.axvline(warmup_min, color="grey", linestyle="--", linewidth=1)
        ax.grid(visible=True, alpha=0.3)
    mem.set_ylabel("RSS (MiB)")
    mem.set_yscale("log")
    fds.set_ylabel("open file descriptors")
    fds.set_yscale("log")
    fds.set_xlabel(f"minutes (dashed: end of warm-up, {warmup_min:.0f} min)")
    mem.set_title(
        f"soak: demo city, {params['sites']} sites at {params['factor']:g}x its rate, "
        f"{params['duration_s'] / 60:.0f} min, sampled every {params['sample_s']:g} s"
    )
    mem.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    log.info("soak plot: %s", png)
    return png


def summary_table(report: dict[str, Any]) -> str:
    """Per process: RSS at warm-up, at the end, growth; open files; then the loss per site."""
    rows = [("process", "RSS MiB @warm-up", "@end", "max", "growth %", "fds @warm-up", "@end", "max", "CPU %")]
    for name, f in report.get("growth", {}).items():
        rows.append(
            (
                name,
                f"{f['rss_mib_at_warmup']:.1f}",
                f"{f['rss_mib_at_end']:.1f}",
                f"{f['rss_mib_max']:.1f}",
                f"{f['growth_pct']:+.1f}",
                str(int(f["fds_at_warmup"])),
                str(int(f["fds_at_end"])),
                str(int(f["fds_max"])),
                f"{f['cpu_pct']:.1f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.extend(
        f"{loss['site']}: queued {loss['readings_queued']:,}, stored {loss['stored']:,}, lost {loss['lost']:,}, "
        f"dropped at the edge {loss['readings_dropped']}, left in outbox {loss['outbox_left']}; "
        f"per device {loss['stored_by_device']}"
        for loss in report.get("loss", [])
    )
    if "hub_at_end" in report:
        lines.append(f"hub at the end: {report['hub_at_end']}; open alerts: {len(report.get('open_alerts', []))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="seconds (default 3600)")
    parser.add_argument("--factor", type=float, default=DEFAULT_FACTOR, help="times the demo's poll rate (10)")
    parser.add_argument("--sites", type=int, default=DEFAULT_SITES, help=f"sites in the city ({DEFAULT_SITES})")
    parser.add_argument("--sample", type=float, default=DEFAULT_SAMPLE_S, help="seconds between samples (60)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of warm-up (600, or a third of the run)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"where reports go (default {OUT_DIR})")
    parser.add_argument("--plot", type=Path, metavar="REPORT", help="only draw the PNG of an existing report")
    parser.add_argument("--png", type=Path, help="where --plot writes (default: beside the report)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.plot is not None:
        report = json.loads(args.plot.read_text(encoding="utf-8"))
        plot(report, args.png or args.plot.with_suffix(".png"))
        sys.stdout.write(summary_table(report) + "\n")
        return 0
    if args.duration <= 0 or args.factor <= 0 or args.sample <= 0 or not 1 <= args.sites <= 100:
        parser.error("--duration, --factor and --sample must be > 0, --sites 1..100")
    stop = signal.getsignal(signal.SIGTERM)
    # SIGTERM (a CI job's timeout, `kill`) ends the soak as Ctrl-C does: every child is stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        started = dt.datetime.now(dt.UTC)
        result, report = run_soak(
            duration_s=args.duration,
            factor=args.factor,
            sites=args.sites,
            sample_s=args.sample,
            warmup_s=args.warmup,
            out=args.out.resolve(),
            stamp=started.strftime("%Y%m%dT%H%M%SZ"),
        )
    finally:
        signal.signal(signal.SIGTERM, stop)
    write_report(
        [result],
        args.out.resolve(),
        command=" ".join(["python", "-m", "benchmarks.soak", *(argv or sys.argv[1:])]),
        started=started,
        settings={"machine_at_start": report["machine_at_start"]},
    )
    sys.stdout.write("\n" + format_table([result]) + "\n\n" + summary_table(report) + "\n")
    if result.error:
        sys.stdout.write(f"\nsoak FAILED its goals: {result.error}\n")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
