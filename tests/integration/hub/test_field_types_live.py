"""The field types InfluxDB already holds reach admission at start (InfluxWriter.field_types, real InfluxDB)."""

from __future__ import annotations

import time

import pytest

from hub.config import InfluxSettings
from hub.ingest.admission import Admission, AdmissionRules, RefusalReason
from hub.storage.influx import InfluxWriter
from ioc.stack import StackEndpoints, influx_write
from wire.v1 import DataBatch, DeviceInfo, Reading, State

pytestmark = pytest.mark.integration


async def test_types_already_stored_are_fixed_after_a_restart(stack: StackEndpoints, influx_db: str) -> None:
    now_ms = int(time.time() * 1000)
    influx_write(
        stack.influx_url,
        influx_db,
        f'water_level,device=wl-1 level=1.5,alarm=false,note="ok" {now_ms - 1000}\n'
        f"weather,device=w-1 temp=20.5 {now_ms - 1000}",
    )
    async with InfluxWriter(InfluxSettings(url=stack.influx_url, database=influx_db)) as writer:
        types = await writer.field_types()
    assert types == {
        ("water_level", "alarm"): "boolean",
        ("water_level", "level"): "float",
        ("water_level", "note"): "string",
        ("weather", "temp"): "float",
    }
    # a hub started on this database refuses a string level from the first message on
    admission = Admission(AdmissionRules(field_types=types))
    admission.state(
        "s", "g", State(online=True, session="sess-0001", devices=[DeviceInfo("wl-2", "water_level", "p", 1)])
    )
    kept, refused = admission.data(
        "s", "g", DataBatch("sess-0001", 1, [Reading("wl-2", "water_level", now_ms, {"level": "high", "alarm": True})])
    )
    assert kept is not None
    assert kept.readings[0].metrics == {"alarm": True}
    assert [(r.reason, r.detail) for r in refused] == [
        (RefusalReason.FIELD_TYPE, "water_level.level is a float field, got a string")
    ]


async def test_no_database_or_no_influx_gives_no_types(stack: StackEndpoints) -> None:
    async with InfluxWriter(InfluxSettings(url=stack.influx_url, database="absent_db_x")) as writer:
        assert await writer.field_types() == {}
    async with InfluxWriter(InfluxSettings(url="http://127.0.0.1:9", database="ioc", timeout_s=1)) as writer:
        assert await writer.field_types() == {}
