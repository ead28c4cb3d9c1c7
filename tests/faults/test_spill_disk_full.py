"""The hub's spill disk full: its spill folder on a small tmpfs (8 MiB, of which a file of other data takes all
but 512 KiB; the hub's lanes overflow, by default ``{spill.dir}/overflow``, is on it too, as on a host where both
share a disk) while InfluxDB is down, under a load that fills it in seconds.

What the hub does then (docs/architecture.md, hub/storage/spill.py): a batch the spill cannot take keeps its
acknowledgements held and InfluxDB is retried, the intake stops taking messages, and the broker keeps them in the
hub's session. So even a full disk should lose nothing: every reading the broker acknowledged to the gateways is
in InfluxDB once it is back, and the hub saw no sequence gap. The loss, if any, is counted per device and
reported exactly.

Two ways: the disk stays full until InfluxDB is back (``full``: nothing lost), and space is freed on the disk (the
other data deleted, as an operator would) while InfluxDB is still down (``full-then-freed``: the spill takes
batches again; nothing lost either: an append that fails on the full disk is cut back off its segment,
hub.storage.spill.append_durably; before that, 156,100 readings of acknowledged batches were lost in one run).

Real processes: Mosquitto and InfluxDB of the module's own stack, ``ioc hub``, and the benchmark's load generator
(benchmarks/loadgen.py) as two gateways of 50 devices, 10 readings per message; each reading has a (device, time)
of its own, so InfluxDB's count per device must equal what was sent.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import pytest
from faults_support import (
    ROOT,
    SITE,
    Fleet,
    endpoints,
    free_port,
    gateways_for,
    hub_env,
    hub_stats,
    module_stack,
    new_database,
    small_tmpfs,
    wait_for,
)

from benchmarks.hubproc import admission_env
from benchmarks.loadgen import LOAD_MEASUREMENT, GatewayAccount, LoadConfig, LoadProcess
from ioc.stack import LocalStack, StackError, influx_query

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TMPFS_SIZE = "8m"
#: What the rest of the disk leaves free for the spill.
FREE_BYTES = 512 * 1024
RATE, READINGS_PER_MESSAGE, DEVICES = 800, 10, 50
DOWN_S = 40
#: InfluxDB's count not growing for this long: what is missing will not come.
STUCK_S = 15


faults_stack = module_stack("spill-faults")


def per_device(url: str, db: str) -> dict[str, int]:
    rows = influx_query(url, db, f'SELECT count("value") FROM "{LOAD_MEASUREMENT}" GROUP BY "device"', timeout=60)
    return {row["device"]: int(row["count"]) for row in rows}


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "freed_while_down",
    [
        pytest.param(False, id="full"),
        pytest.param(True, id="full-then-freed"),
    ],
)
def test_spill_disk_full_while_influxdb_is_down_loss_is_counted_exactly(
    faults_stack: LocalStack, tmp_path: Path, freed_while_down: bool
) -> None:
    started = time.monotonic()
    ep = endpoints(faults_stack)
    db = new_database(faults_stack)
    gateways = gateways_for(int(freed_while_down))
    accounts = [GatewayAccount(SITE, gw, *ep.credentials(f"{SITE}.{gw}")) for gw in gateways]
    config = LoadConfig(
        host=ep.mqtt_host,
        port=ep.mqtt_port,
        gateways=accounts,
        rate=RATE,
        readings_per_message=READINGS_PER_MESSAGE,
        duration_s=DOWN_S + 10,
        devices=DEVICES,
    )
    disk = tmp_path / "disk"
    with (
        small_tmpfs(disk, TMPFS_SIZE),
        Fleet(faults_stack, tmp_path / "fleet") as fleet,
        LoadProcess(config, tmp_path / "load.log", cwd=ROOT) as load,
    ):
        fleet.start_hub(
            hub_env(
                ep, db, tmp_path, free_port(), IOC_HUB_SPILL__DIR=str(disk / "spill"), **admission_env(LOAD_MEASUREMENT)
            )
        )
        filler = disk / "other-data"
        with filler.open("wb") as f:
            f.write(b"\0" * (shutil.disk_usage(disk).free - FREE_BYTES))
        load.go()
        time.sleep(3)
        faults_stack.stop_service("influxd", kill=True)
        down_at = time.monotonic()
        try:
            fleet.wait(
                lambda: hub_stats(fleet.hub_url)["spill_full"] > 0, DOWN_S, "the spill is full: the disk filled up"
            )
            full_at = time.monotonic()
            if freed_while_down:
                time.sleep(5)
                filler.unlink()
            time.sleep(max(0.0, DOWN_S - (time.monotonic() - down_at)))
            during = hub_stats(fleet.hub_url)
            usage = shutil.disk_usage(disk)
        finally:
            faults_stack.start_service("influxd")
        result = load.wait_done(180)
        assert result.acked == result.published, result
        expected = {f"{gw}-d{k}": 0 for gw in gateways for k in range(DEVICES)}
        for gw in gateways:
            for k in range(result.readings_by_gateway[f"{SITE}/{gw}"]):
                expected[f"{gw}-d{k % DEVICES}"] += 1
        stored: dict[str, int] = {}

        progress = [0, time.monotonic()]  # points stored, when that last grew

        def all_stored_or_stuck() -> bool:
            try:
                stored.update(per_device(ep.influx_url, db))
            except StackError:
                return False
            total = sum(stored.values())
            if total > progress[0]:
                progress[:] = [total, time.monotonic()]
            return total >= result.readings or time.monotonic() - progress[1] > STUCK_S

        fleet.wait(all_stored_or_stuck, 150, lambda: f"{sum(stored.values())} of {result.readings} readings stored")
        with contextlib.suppress(pytest.fail.Exception):  # a spill that is never written back: counted below
            wait_for(lambda: hub_stats(fleet.hub_url)["spill_batches"] == 0, 10, "the spill written back")
        time.sleep(2)
        stored = per_device(ep.influx_url, db)
        stats = hub_stats(fleet.hub_url)
        segments = {p.name: p.stat().st_size for p in sorted((disk / "spill").glob("*.seg"))}
    lost = {device: n - stored.get(device, 0) for device, n in expected.items() if n != stored.get(device, 0)}
    print(
        f"\nspill on a {TMPFS_SIZE} tmpfs with {FREE_BYTES} bytes free, InfluxDB down {DOWN_S} s: the spill was "
        f"full {full_at - down_at:.0f} s into the outage ({usage.used} of {usage.total} bytes used); during the "
        f"outage spilled {during['lines_spilled']} lines, spill_full {during['spill_full']}, "
        f"pending {during['pending_messages']}; "
        f"sent {result.readings} readings in {result.published} messages, all acknowledged by the broker; "
        f"stored {sum(stored.values())}; lost {sum(lost.values())} over {len(lost)} devices; written back "
        f"{stats['lines_written_back']}; spill left {stats['spill_batches']} batches, {stats['spill_bytes']} bytes "
        f"by the hub's count, segments on disk {segments}; seq_gaps_by_gateway {stats['seq_gaps_by_gateway']}, "
        f"dead letters {stats['dead_letters_total']}; case took {time.monotonic() - started:.0f} s"
    )
    assert during["spill_full"] > 0
    assert lost == {}, f"readings lost per device: {lost}"
    assert sum(stored.values()) == result.readings
    assert stats["seq_gaps_by_gateway"] == {}
    assert stats["dead_letters_total"] == 0
