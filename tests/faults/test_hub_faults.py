"""The hub hung, then killed: the broker keeps its session's messages, the supervisor starts it again after
ioc-hub.service's ``RestartSec`` (5 s), and every reading the agents sampled is in InfluxDB, with no sequence gap.

Real processes: Mosquitto and InfluxDB of the module's own stack, ``ioc hub``, two ``ioc edge run`` agents of ten
counting devices each (100 readings/s in all), all restarted by the demo's supervisor (ioc/supervisor.py).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from faults_support import (
    Fleet,
    endpoints,
    gateways_for,
    hub_stats,
    ledger,
    module_stack,
    new_database,
    stored_count,
    wait_stored,
)

from ioc.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVICES, INTERVAL_S = 10, 0.2
HUNG_S = 20


faults_stack = module_stack("hub-faults")


@pytest.mark.timeout(240)
def test_hub_hung_20s_then_killed_and_restarted_loses_nothing(faults_stack: LocalStack, tmp_path: Path) -> None:
    started = time.monotonic()
    ep = endpoints(faults_stack)
    db = new_database(faults_stack)
    gateways = gateways_for(0)
    with Fleet(faults_stack, tmp_path) as fleet:
        agents = fleet.start_counting(db, gateways, devices=DEVICES, interval_s=INTERVAL_S)
        fleet.supervise("hub")
        fleet.wait(lambda: stored_count(ep, db) > 200, 30, "readings reach InfluxDB before the fault")

        pid = fleet.signal("hub", signal.SIGSTOP)
        fleet.sleep(HUNG_S)
        before_kill = stored_count(ep, db)
        fleet.signal("hub", signal.SIGKILL)  # a watchdog's verdict on a hung process; SIGKILL works on a stopped one
        fleet.wait_said(rf"hub \(pid {pid}\) died: killed by SIGKILL; restarting in 5 s", 10)
        back = fleet.wait_said(r"hub is back \(pid (\d+)\), ([\d.]+) s after it went down", 60)
        assert int(back[1]) != pid
        fleet.sleep(5)  # readings flow through the new hub too

        counters = {name: fleet.stop_agent(name) for name in agents}
        for name, c in counters.items():
            assert (c["readings_dropped"], c["outbox"]) == (0, 0), (name, c)
        sampled = sum(c["readings_queued"] for c in counters.values())
        wait_stored(ep, db, sampled, 60)
        book = ledger(ep, db, [f"{gw}-c{i}" for gw in gateways for i in range(DEVICES)], sampled)
        stats = hub_stats(fleet.hub_url)
    took = time.monotonic() - started
    print(
        f"\nhub SIGSTOP {HUNG_S} s then SIGKILL: {book.summary()}; InfluxDB had {before_kill} at the kill; "
        f"back {float(back[2]):.1f} s after the kill; hub seq_gaps_by_gateway {stats['seq_gaps_by_gateway']}, "
        f"dead letters {stats['dead_letters_total']}; case took {took:.0f} s"
    )
    assert (book.holes, book.doubles) == ({}, {})
    assert book.lost == 0, book.summary()
    assert len(book.per_device) == 2 * DEVICES, "each device: one agent process, all its readings"
    assert stats["seq_gaps_by_gateway"] == {}
    assert stats["dead_letters_total"] == 0
