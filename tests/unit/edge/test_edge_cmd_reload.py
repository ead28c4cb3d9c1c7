"""reload_config (edge/reload.py): the config file reread and its devices applied to a running scheduler.

The devices are ``host`` devices (the machine itself): real drivers that need no network.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import devices.drivers.host  # noqa: F401 - registers the host driver
from edge.config import load_config
from edge.errors import ConfigError
from edge.events import EventQueue
from edge.outbox import MemoryOutbox
from edge.reload import ConfigReloader
from edge.scheduler import Scheduler
from edge.stats import EdgeStats


def host(device_id: str, interval_s: float = 10.0, **options: Any) -> dict[str, Any]:
    return {"id": device_id, "driver": "host", "profile": "gateway-host", "interval_s": interval_s, "options": options}


def document(devices: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "site": "site-a",
        "gateway": "gw-1",
        "broker": {"host": "127.0.0.1", "port": 1883},
        "publish": {"outbox_path": ":memory:"},
        "devices": devices,
    }
    doc.update(top)
    return doc


def write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")


class Running:
    def __init__(self, path: Path, scheduler: Scheduler, reloader: ConfigReloader, events: EventQueue) -> None:
        self.path = path
        self.scheduler = scheduler
        self.reload = reloader
        self.events = events


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    path = tmp_path / "gateway.yaml"
    write(path, document([host("host-a"), host("host-b"), host("host-c")]))
    config = load_config(path)
    stats = EdgeStats()
    events = EventQueue(stats)
    async with Scheduler(config.device_plans(), MemoryOutbox(1000, stats), events, stats) as scheduler:
        yield Running(path, scheduler, ConfigReloader(path, config, scheduler), events)


async def test_added_removed_and_changed_devices_are_applied(running: Running, tmp_path: Path) -> None:
    scheduler = running.scheduler
    scheduler.set_interval("host-a", 1.0)
    driver_a = scheduler.poller("host-a").plan.driver
    driver_c = scheduler.poller("host-c").plan.driver
    write(
        running.path,
        document([host("host-a"), host("host-c", disk_path=str(tmp_path)), host("host-d", 5.0)]),
    )
    detail, counts = await running.reload()
    assert detail == "reloaded gateway.yaml, 1 added (host-d), 1 removed (host-b), 1 changed (host-c), 1 unchanged"
    assert counts == {"added": 1, "removed": 1, "changed": 1, "unchanged": 1}
    assert [(p.id, p.interval_s) for p in scheduler.plans()] == [("host-a", 10.0), ("host-c", 10.0), ("host-d", 5.0)]
    assert scheduler.poller("host-a").plan.driver is driver_a  # unchanged: kept running, interval as configured
    assert scheduler.poller("host-c").plan.driver is not driver_c  # changed: started afresh
    await asyncio.sleep(0.2)
    assert scheduler.figures()["devices_up"] == 3  # every device polled, the new ones included
    assert [d.id for d in running.reload.config.devices] == ["host-a", "host-c", "host-d"]


async def test_a_file_that_does_not_pass_changes_nothing(running: Running) -> None:
    before = running.reload.config
    bad_documents: list[str] = [
        "devices: [",  # not YAML
        yaml.safe_dump(document([host("host-a", 0.01)])),  # interval too short
        yaml.safe_dump(document([host("host-a", colour="red")])),  # an option the driver refuses
        yaml.safe_dump(document([host("host-a"), host("host-a")])),  # duplicate id
    ]
    for text in bad_documents:
        running.path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=r"gateway\.yaml"):
            await running.reload()
        assert [p.id for p in running.scheduler.plans()] == ["host-a", "host-b", "host-c"]
        assert running.reload.config is before
    running.path.unlink()
    with pytest.raises(ConfigError, match="cannot read the config file"):
        await running.reload()


async def test_a_new_identity_needs_a_restart(running: Running) -> None:
    write(running.path, document([host("host-a")], gateway="gw-2"))
    with pytest.raises(ConfigError, match="site/gateway changed from site-a/gw-1 to site-a/gw-2; that needs a restart"):
        await running.reload()
    assert len(running.scheduler.plans()) == 3


async def test_settings_applied_only_at_start_are_named(running: Running) -> None:
    write(
        running.path,
        document(
            [host("host-a"), host("host-b"), host("host-c")],
            broker={"host": "mqtt.example.org", "port": 8883, "tls": True},
            self_metrics={"interval_s": 10},
        ),
    )
    detail, counts = await running.reload()
    assert detail == "reloaded gateway.yaml, 3 unchanged; broker, self_metrics changed: applied at the next restart"
    assert counts["unchanged"] == 3


async def test_a_changed_report_setting_restarts_only_that_device(running: Running) -> None:
    driver_b = running.scheduler.poller("host-b").plan.driver
    report = {"max_silence_s": 600, "deadband": {"cpu_pct": 5}}
    write(running.path, document([host("host-a"), {**host("host-b"), "report": report}, host("host-c")]))
    detail, _ = await running.reload()
    assert "1 changed (host-b)" in detail
    assert running.scheduler.poller("host-b").plan.driver is not driver_b


async def test_drivers_built_by_a_reload_work_on_the_agents_event_loop(running: Running) -> None:
    """The new file is read and its drivers built in a worker thread; they must still run on the loop."""
    sign = {
        "id": "vms-1",
        "driver": "ntcip",
        "profile": "ntcip-dms-full-matrix",
        "interval_s": 10,
        "options": {"host": "127.0.0.1", "port": 9, "timeout_s": 0.2},  # nothing answers there
    }
    write(running.path, document([host("host-a"), host("host-b"), host("host-c"), sign]))
    await running.reload()
    poller = running.scheduler.poller("vms-1")
    async with asyncio.timeout(5):
        while poller.health.value == "unknown":  # noqa: ASYNC110 - the health has no event to wait on
            await asyncio.sleep(0.05)
    assert poller.health.value == "down"
    [down] = [e for e in running.events.items() if e.device == "vms-1"]
    assert down.reason == "ntcip 127.0.0.1:9: no answer to GET within 0.2 s (1 tries)"  # not a loop error
