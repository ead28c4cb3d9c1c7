"""The edge <-> broker link cut silently for a minute inside a network namespace of the case's own
(tests/faults/faults_netns.py: the namespace's loopback taken down, so neither side is told and each finds out
by its keep-alive): the agent holds its readings, replays them when the link is back, and nothing is lost.

The issue asks for a 10-minute cut; a minute keeps the suite's time (the agent's outbox holds about 2 million
readings in its default 256 MiB, hours at a site's rate, so the length of the cut changes only how much is held).

Real processes: Mosquitto and InfluxDB of the module's own stack, ``ioc hub``, an ``ioc edge run`` agent of ten
counting devices inside the namespace.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from faults_netns import NamespaceLink
from faults_support import (
    Fleet,
    agent_config,
    endpoints,
    free_port,
    gateways_for,
    hub_env,
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


faults_stack = module_stack("netns-faults")


#: The link cut inside the namespace (the issue asks for 10 minutes; a minute keeps the suite's time).
NETNS_CUT_S = 60


@pytest.mark.timeout(240)
def test_link_cut_silently_in_a_network_namespace_loses_nothing(faults_stack: LocalStack, tmp_path: Path) -> None:
    started = time.monotonic()
    ep = endpoints(faults_stack)
    db = new_database(faults_stack)
    gateway = gateways_for(0)[0]
    with Fleet(faults_stack, tmp_path) as fleet, NamespaceLink(ep) as link:
        fleet.start_hub(hub_env(ep, db, tmp_path, free_port()))
        config = agent_config(
            tmp_path, ep, gateway, devices=DEVICES, interval_s=INTERVAL_S, port=link.port, keepalive_s=5
        )
        name = fleet.start_agent(gateway, config, wrap=link.command)
        fleet.wait(lambda: stored_count(ep, db) > 50, 30, "readings reach InfluxDB through the namespace")

        mark = len(fleet.log_text(name))
        link.cut()
        cut_at = time.monotonic()
        noticed = fleet.wait_logged(name, r"lost the broker connection", 30, after=mark)
        noticed_s = time.monotonic() - cut_at
        stored_at_cut = stored_count(ep, db)
        fleet.sleep(NETNS_CUT_S - noticed_s)
        held = stored_count(ep, db) - stored_at_cut
        mark = len(fleet.log_text(name))
        link.restore()
        backlog = int(fleet.wait_logged(name, r"replaying (\d+) readings", 30, after=mark)[1])
        fleet.wait_logged(name, r"replay done", 60, after=mark)
        counters = fleet.stop_agent(name)
        assert (counters["readings_dropped"], counters["outbox"]) == (0, 0), counters
        sampled = counters["readings_queued"]
        wait_stored(ep, db, sampled, 30)
        book = ledger(ep, db, [f"{gateway}-c{i}" for i in range(DEVICES)], sampled)
        stats = hub_stats(fleet.hub_url)
    print(
        f"\nlink cut silently for {NETNS_CUT_S} s in network namespace {link.name}: the agent noticed after "
        f"{noticed_s:.1f} s (keep-alive 5 s), {held} readings reached InfluxDB after the cut, backlog {backlog} "
        f"replayed; {book.summary()}; hub seq_gaps_by_gateway {stats['seq_gaps_by_gateway']}, dead letters "
        f"{stats['dead_letters_total']}; case took {time.monotonic() - started:.0f} s"
    )
    assert noticed is not None
    assert backlog >= 50 * (NETNS_CUT_S - 15)
    assert (book.holes, book.doubles) == ({}, {})
    assert book.lost == 0, book.summary()
    assert stats["seq_gaps_by_gateway"] == {}
    assert stats["dead_letters_total"] == 0
