"""Faults at the edge: an agent killed (-9) while it replays a backlog, then started again by the supervisor after
ioc-edge.service's ``RestartSec`` (5 s).

Real processes: Mosquitto and InfluxDB of the module's own stack, ``ioc hub``, ``ioc edge run`` agents of
counting devices; the agent's uplink goes through a TCP relay the case cuts (:class:`faults_support.LinkRelay`).
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from faults_support import (
    Fleet,
    LinkRelay,
    agent_config,
    endpoints,
    fault_stack,
    free_port,
    gateways_for,
    hub_env,
    hub_stats,
    ledger,
    new_database,
    stored_count,
)

from ioc.stack import LocalStack
from wire.v1 import Reading

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVICES, INTERVAL_S = 10, 0.2


@pytest.fixture(scope="module")
def faults_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with fault_stack(tmp_path_factory.mktemp("edge-faults") / "stack") as stack:
        yield stack


def outbox_rows(path: Path) -> list[Reading]:
    """The readings an agent's outbox holds (read while the agent is dead)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT data FROM readings ORDER BY position").fetchall()
    return [msgspec.json.decode(bytes(r[0]), type=Reading) for r in rows]


@pytest.mark.timeout(240)
def test_agent_killed_during_replay_and_restarted_loses_nothing(faults_stack: LocalStack, tmp_path: Path) -> None:
    started = time.monotonic()
    ep = endpoints(faults_stack)
    db = new_database(faults_stack)
    gateway = gateways_for(0)[0]
    name = f"edge-{gateway}"
    devices = [f"{gateway}-c{i}" for i in range(DEVICES)]
    with Fleet(faults_stack, tmp_path) as fleet, LinkRelay(ep) as link:
        fleet.start_hub(hub_env(ep, db, tmp_path, free_port()))
        config = agent_config(
            tmp_path, ep, gateway, devices=DEVICES, interval_s=INTERVAL_S, port=link.port, replay_rate=100, max_batch=50
        )
        fleet.start_agent(gateway, config)
        fleet.supervise(name)
        fleet.wait(lambda: stored_count(ep, db) > 100, 30, "readings reach InfluxDB before the fault")

        link.down()
        fleet.sleep(20)  # 50 readings/s held in the outbox
        mark = len(fleet.log_text(name))
        link.up()
        backlog = int(fleet.wait_logged(name, r"replaying (\d+) readings", 30, after=mark)[1])
        fleet.sleep(3)  # about 300 of the backlog replayed at 100/s, live readings between
        assert "replay done" not in fleet.log_text(name)[mark:], "the replay ended before the kill"
        first_pid = fleet.signal(name, signal.SIGKILL)
        # What the dead agent left on disk, before the supervisor starts it again.
        left = outbox_rows(tmp_path / f"{gateway}.outbox.sqlite")
        assert len(left) > 200, f"only {len(left)} readings in the outbox at the kill"
        fleet.wait_said(rf"{name} \(pid {first_pid}\) died: killed by SIGKILL; restarting in 5 s", 10)
        back = fleet.wait_said(rf"{name} is back \(pid (\d+)\), ([\d.]+) s after it went down", 30)
        second_pid = int(back[1])
        mark = len(fleet.log_text(name))
        restored = int(fleet.wait_logged(name, r"replaying (\d+) readings", 30, after=mark)[1])
        fleet.wait_logged(name, r"replay done", restored / 100 + 60, after=mark)
        fleet.sleep(2)

        counters = fleet.stop_agent(name)
        assert (counters["readings_dropped"], counters["outbox"]) == (0, 0), counters
        # The first process's readings: no hole up to the last one stored, and every one the kill left in the
        # outbox stored; the second's: all it sampled.
        fleet.wait(
            lambda: stored_count(ep, db, run=second_pid) >= counters["readings_queued"],
            60,
            "the restarted agent's readings in InfluxDB",
        )
        fleet.sleep(2)
        book = ledger(ep, db, devices, sampled=0)
        stats = hub_stats(fleet.hub_url)
    first = {(d, seq) for (d, run), seqs in book.per_seq.items() if run == first_pid for seq in seqs}
    second = sum(n for (_, run), n in book.per_device.items() if run == second_pid)
    kept = {(r.device, int(r.metrics["seq"])) for r in left if r.metrics["run"] == first_pid}
    print(
        f"\nagent SIGKILL mid-replay (backlog {backlog}, {len(left)} readings left in its outbox, {restored} "
        f"replayed by the restarted agent, back {float(back[2]):.1f} s after the kill): first process "
        f"{len(first)} stored, {len(kept - first)} of its outbox missing, {sum(map(len, book.holes.values()))} "
        f"holes; second process sampled {counters['readings_queued']}, stored {second}; hub seq_gaps_by_gateway "
        f"{stats['seq_gaps_by_gateway']}, dead letters {stats['dead_letters_total']}; case took "
        f"{time.monotonic() - started:.0f} s"
    )
    assert backlog >= 50 * 15
    assert (book.holes, book.doubles) == ({}, {})
    assert kept <= first, f"{len(kept - first)} readings that were in the outbox at the kill never arrived"
    assert second == counters["readings_queued"]
    assert {run for _, run in book.per_device} == {first_pid, second_pid}
    assert stats["seq_gaps_by_gateway"] == {}
    assert stats["dead_letters_total"] == 0
