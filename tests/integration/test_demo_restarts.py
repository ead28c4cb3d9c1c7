"""``ioc demo`` supervises as production's systemd units do: a killed hub, edge agent or Mosquitto is started
again after its unit's delay, ``demo.json`` names the new pids, the demo runs on to its ``--duration``, and a
hub killed with SIGKILL loses no reading.

The loss count is exact, over the whole life of one agent that the test does not kill: the agent is stopped
cleanly at the end (SIGTERM: it sends what it holds, then logs its final counters and is not restarted, as under
``Restart=on-failure``), and every reading it queued (``readings_queued`` in its final ``stats:`` line: its
devices' readings and its own ``agent`` figures) must be in InfluxDB under its site, counted per device. The
window is the test's (about a minute and a half, the hub down for about 7 s of it under the demo city's normal
rate), not an hour of soak.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ioc.stack import influx_query

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Long enough for every step below on a busy two-core machine; the test then waits for the demo to end by itself.
DURATION_S = 90
STATS_LINE = re.compile(r"stats: (polls_ok=.*) outbox=(\d+)$")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


class Demo:
    """``ioc demo`` as a person starts it: its terminal in a file, its ``demo.json`` read as it changes."""

    def __init__(self, tmp_path: Path) -> None:
        self.state = tmp_path / "state"
        self.terminal = tmp_path / "terminal.log"
        with self.terminal.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "ioc.cli", "demo"),
                    *("--duration", str(DURATION_S), "--sites", "2", "--state-dir", str(self.state)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.terminal.read_text(errors="replace")

    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.state / "demo.json").read_text())
        return doc

    def wait(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, (
                f"the demo exited ({self.proc.returncode}) waiting for {what}:\n{self.text()}"
            )
            if result := check():
                return result
            assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s:\n{self.text()}"
            time.sleep(0.3)

    def said(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The terminal line matching ``pattern`` (a regex), once it is there."""
        found: re.Match[str] = self.wait(pattern, lambda: re.search(pattern, self.text(), re.MULTILINE), timeout)
        return found

    def kill_and_see_it_back(self, name: str, delay_s: float) -> int:
        """SIGKILL ``name``; the demo says it died and is back after ``delay_s``; ``demo.json`` has its new pid."""
        old = self.doc()["processes"][name]
        killed_at = time.monotonic()
        os.kill(old, signal.SIGKILL)
        self.said(rf"^\d\d:\d\d:\d\d {name} \(pid {old}\) died: killed by SIGKILL; restarting in {delay_s:g} s")
        back = self.said(rf"^\d\d:\d\d:\d\d {name} is back \(pid (\d+)\), ([\d.]+) s after it went down", 60)
        new = int(back[1])
        assert new != old
        assert float(back[2]) >= delay_s, "restarted before its unit's RestartSec"
        assert time.monotonic() - killed_at >= delay_s
        assert not alive(old)
        assert alive(new)
        self.wait(f"{name}'s new pid in demo.json", lambda: self.doc()["processes"].get(name) == new, 5)
        pids = [int(p) for p in (self.state / "pids").read_text().split()]
        assert new in pids
        assert old not in pids
        return new


def rows_per_device(
    url: str, db: str, site: str, kinds: set[str], since_ms: int = 0, until_ms: int = 0
) -> dict[str, int]:
    """Points in InfluxDB per device of ``site``, over every measurement in ``kinds`` (one row per point);
    only those stamped within [``since_ms``, ``until_ms``] when ``until_ms`` is given."""
    counts: dict[str, int] = {}
    condition = f"\"site\" = '{site}'"
    if until_ms:
        condition += f" AND time >= {since_ms}ms AND time <= {until_ms}ms"
    for kind in sorted(kinds):
        for row in influx_query(url, db, f'SELECT * FROM "{kind}" WHERE {condition} GROUP BY "device"'):
            counts[row["device"]] = counts.get(row["device"], 0) + 1
    return counts


def final_stats(log: Path) -> dict[str, int]:
    """The counters of the agent's last ``stats:`` line (logged on its way out, after its drain)."""
    lines = [m for line in log.read_text().splitlines() if (m := STATS_LINE.search(line))]
    assert lines, f"no stats line in {log}"
    last = lines[-1]
    stats = {key: int(value) for key, value in (pair.split("=") for pair in last[1].split())}
    stats["outbox"] = int(last[2])
    return stats


@pytest.mark.timeout(300)
def test_killed_hub_agent_and_broker_come_back_and_the_hub_kill_loses_nothing(tmp_path: Path) -> None:
    demo = Demo(tmp_path)
    try:
        demo.wait("demo.json", (demo.state / "demo.json").exists, 120)
        started = time.monotonic()
        doc = demo.doc()
        url, db, hub = doc["influxdb"]["url"], doc["influxdb"]["database"], doc["hub_url"]
        (kept, kept_kinds), (victim, victim_kinds) = (
            (s["site"], {*s["devices"].values(), "agent"}) for s in doc["sites"]
        )
        assert set(doc["processes"]) == {"mosquitto", "influxd", "hub", "sim-city", f"edge-{kept}", f"edge-{victim}"}
        assert doc["down"] == {}

        def online() -> dict[str, bool]:
            rows = influx_query(url, db, 'SELECT last("online") FROM "gateway_state" GROUP BY "site"')
            return {r["site"]: r["last"] for r in rows}

        demo.wait("both gateways online", lambda: online() == {kept: True, victim: True}, 60)

        # The hub, killed (-9) while the city reports: back after ioc-hub.service's RestartSec=5. Readings flow for
        # a while first, and after, so the window holds readings sampled before, during and after its death.
        time.sleep(10)
        hub_killed_ms = int(time.time() * 1000)
        demo.kill_and_see_it_back("hub", 5)
        hub_back_ms = int(time.time() * 1000)
        # An agent: the same, after ioc-edge.service's RestartSec=5.
        demo.kill_and_see_it_back(f"edge-{victim}", 5)

        # No loss across the hub's death: the kept agent stops cleanly; all it queued in its life is stored.
        time.sleep(10)
        agent = f"edge-{kept}"
        pid = demo.doc()["processes"][agent]
        os.kill(pid, signal.SIGTERM)
        demo.said(
            rf"{agent} \(pid {pid}\) stopped: exit status 0; not restarted \(ioc-edge.service: Restart=on-failure\)"
        )
        demo.wait(f"{agent} out of demo.json's processes", lambda: agent not in demo.doc()["processes"], 5)
        assert demo.doc()["down"] == {agent: "stopped: exit status 0"}
        stats = final_stats(demo.state / "logs" / f"{agent}.log")
        assert (stats["readings_dropped"], stats["outbox"]) == (0, 0), stats
        assert stats["readings_sent"] == stats["readings_queued"], stats
        sampled = stats["readings_queued"]
        stored: dict[str, int] = {}

        def all_stored() -> bool:
            stored.clear()
            stored.update(rows_per_device(url, db, kept, kept_kinds))
            return sum(stored.values()) >= sampled

        demo.wait(f"the {sampled} readings {agent} queued in InfluxDB", all_stored, 30)
        time.sleep(2)  # and no more: a reading stored twice under two timestamps would show here
        assert sum(rows_per_device(url, db, kept, kept_kinds).values()) == sampled, f"{sampled} sampled, {stored}"
        site = next(s for s in doc["sites"] if s["site"] == kept)
        # Per device (the agent's own figures under its gateway's id): each one's readings are there.
        assert set(stored) == {*site["devices"], site["gateway"]}, f"a device of {kept} stored nothing: {stored}"
        while_down = sum(rows_per_device(url, db, kept, kept_kinds, hub_killed_ms, hub_back_ms).values())
        assert while_down > 0, "the window held no reading sampled while the hub was down"
        print(
            f"\nno loss across the hub's SIGKILL: {agent} queued {sampled} readings ({while_down} sampled while the "
            f"hub was down), InfluxDB has {sum(stored.values())}: {stored}"
        )
        restarted_hub = httpx.get(f"{hub}/api/v1/ingest/stats", timeout=5).json()
        assert (restarted_hub["seq_gaps"], restarted_hub["dead_letters_total"]) == (0, 0), restarted_hub

        # The broker, killed: back after Debian's mosquitto.service's 100 ms (systemd's default RestartSec);
        # the restarted agent and hub reconnect and the victim's site reports again.
        back_at_ms = time.time() * 1000
        demo.kill_and_see_it_back("mosquitto", 0.1)

        def victim_reports() -> bool:
            since = f"\"site\" = '{victim}' AND time > {int(back_at_ms)}ms"
            kinds = ", ".join(f'"{k}"' for k in sorted(victim_kinds - {"agent"}))
            return bool(influx_query(url, db, f"SELECT count(*) FROM {kinds} WHERE {since}"))

        demo.wait(f"{victim}'s readings after the broker came back", victim_reports, 45)
        assert time.monotonic() - started < DURATION_S, "the steps outlasted the demo: raise DURATION_S"
        assert demo.proc.poll() is None
        # It stops only at its --duration, by itself.
        rc = demo.proc.wait(timeout=DURATION_S + 30)
    finally:
        if demo.proc.poll() is None:
            demo.proc.send_signal(signal.SIGINT)
            try:
                demo.proc.wait(timeout=40)
            finally:
                if demo.proc.poll() is None:
                    demo.proc.kill()
    text = demo.text()
    assert rc == 0, text
    assert time.monotonic() - started >= DURATION_S - 1
    assert text.rstrip().endswith("Demo stopped."), text
