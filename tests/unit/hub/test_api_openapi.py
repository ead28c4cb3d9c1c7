"""The OpenAPI document describes every answer: each route's 2xx response has a schema (a named model for JSON, a
type for text), and the ingest counters keep their JSON shape. Against the composed hub (every router), served
without a stack as in test_hub_service.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from hub.config import HttpSettings, HubSettings, InfluxSettings, MqttSettings
from hub.service import Hub, run_hub
from hub.storage.deadletter import DeadLetterKind

METHODS: Final = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


def untyped_answers(openapi: Mapping[str, Any]) -> list[str]:
    """``METHOD path (status media)`` of every 2xx answer without a schema: JSON must name a model (``$ref``,
    directly or as the items of an array), any other media type must give a ``type``. A free-form object (what a
    route annotated ``-> dict[str, Any]`` gets) counts as none."""
    missing: list[str] = []
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            if method not in METHODS:
                continue
            answers = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
            if not answers:
                missing.append(f"{method.upper()} {path} (no 2xx answer)")
            for code, answer in answers.items():
                content = answer.get("content") or {"(none)": {}}
                for media, body in content.items():
                    schema = body.get("schema") or {}
                    if media == "application/json":
                        named = "$ref" in schema or "$ref" in (schema.get("items") or {})
                    else:
                        named = "type" in schema
                    if not named:
                        missing.append(f"{method.upper()} {path} ({code} {media})")
    return sorted(missing)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def hub(closed_port: int) -> AsyncIterator[Hub]:
    """The composed hub with every router; broker and InfluxDB unreachable (a closed port)."""
    settings = HubSettings(
        mqtt=MqttSettings(port=closed_port, client_id="hub-openapi", reconnect_max_s=1),
        influx=InfluxSettings(url=f"http://127.0.0.1:{closed_port}", timeout_s=1),
        http=HttpSettings(port=0),
    )
    stop = asyncio.Event()
    ready: asyncio.Future[Hub] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_hub(settings, stop, on_ready=ready.set_result))
    try:
        yield await asyncio.wait_for(ready, 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_every_answer_of_the_hub_has_a_schema(hub: Hub) -> None:
    async with httpx.AsyncClient(base_url=hub.api_url, timeout=5) as api:
        openapi = (await api.get("/api/v1/openapi.json")).json()
    # No answer lacks a schema: a new untyped route fails here.
    assert untyped_answers(openapi) == []
    metrics = openapi["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert metrics == {"text/plain; version=0.0.4": {"schema": {"type": "string"}}}
    stats = openapi["paths"]["/api/v1/ingest/stats"]["get"]["responses"]["200"]["content"]["application/json"]
    assert stats["schema"] == {"$ref": "#/components/schemas/HubStats"}
    report = openapi["paths"]["/api/v1/reports/availability"]["get"]["responses"]["200"]["content"]
    assert report == {
        "application/json": {"schema": {"$ref": "#/components/schemas/AvailabilityReport"}},
        "text/csv": {"schema": {"type": "string"}},
        "text/html": {"schema": {"type": "string"}},
        "application/pdf": {"schema": {"type": "string", "format": "binary"}},
    }


def test_the_check_names_a_free_form_answer_and_passes_a_model() -> None:
    class Answer(BaseModel):
        n: int

    app = FastAPI()

    @app.get("/free")
    async def free() -> dict[str, Any]:
        return {}

    @app.get("/typed", response_model=Answer)
    async def typed() -> Answer:
        return Answer(n=1)

    @app.get("/many", response_model=list[Answer])
    async def many() -> list[Answer]:
        return []

    @app.delete("/nothing", status_code=204)
    async def nothing() -> None:
        return None

    assert untyped_answers(app.openapi()) == ["DELETE /nothing (204 (none))", "GET /free (200 application/json)"]


#: The keys of ``GET /api/v1/ingest/stats`` as API clients know them (benchmarks, the demo, the fault suite).
INGEST_STATS_KEYS: Final = frozenset(
    {
        *("messages_received", "messages_by_channel", "readings", "lines_written", "write_batches", "write_errors"),
        *("write_retries", "acks", "dead_letters", "values_dropped", "seq_gaps", "seq_repeats"),
        *("stale_states_ignored", "observer_errors", "batches_spilled", "lines_spilled", "spill_full"),
        *("batches_written_back", "lines_written_back", "ingest_latency", "write_seconds", "batch_size_lines"),
        *("dead_letters_total", "seq_gaps_by_gateway", "pending_messages", "pending_bytes", "queued_messages"),
        *("batch_lines", "ready_lines", "writes_in_flight", "spill_batches", "spill_lines", "spill_bytes"),
        *("dead_letters_unsaved", "gateways", "refusals_by_gateway", "mqtt", "lanes", "overflow_by_gateway"),
        *("influx", "snapshots"),
    }
)


def _keys(data: Mapping[str, Any], *path: str) -> set[str]:
    for key in path:
        data = data[key]
    return set(data)


async def test_ingest_stats_keep_their_json_shape_and_agree_with_metrics(hub: Hub) -> None:
    async with httpx.AsyncClient(base_url=hub.api_url, timeout=5) as api:
        stats = (await api.get("/api/v1/ingest/stats")).json()
        metrics = await api.get("/metrics")
    # No observer connection on a single hub: that key is left out, not null.
    assert set(stats) == INGEST_STATS_KEYS
    assert stats["mqtt"] == {
        "connected": False,
        "received": 0,
        "connects": 0,
        "disconnects": 0,
        "acks_sent": 0,
        "acks_of_old_connection": 0,
        "not_handed_over": 0,
        "refused_packets": 0,
    }
    assert _keys(stats, "lanes") == {
        *("lanes_waiting", "queued_bytes", "overflow_writing_bytes", "overflow_bytes", "overflow_unread_bytes"),
        *("overflowed_messages", "overflowed_bytes", "read_back_messages", "overflow_write_errors"),
        "overflow_corrupt_files",
    }
    assert stats["overflow_by_gateway"] == {}
    assert stats["influx"] == {"writes_failing": False}
    assert stats["gateways"] == {"known": 0, "online": 0}
    assert stats["ingest_latency"] == {"count": 0, "last_ms": 0, "avg_ms": 0.0, "max_ms": 0}
    # The camera snapshot store (a temporary folder here: snapshots.dir unset), empty.
    assert stats["snapshots"] == dict.fromkeys(
        (
            *("files", "bytes", "cameras", "queued", "stored", "stored_bytes", "replaced", "dropped_queue_full"),
            *("write_errors", "removed_age", "removed_total_bytes", "removed_camera_bound"),
        ),
        0,
    )
    assert stats["write_seconds"]["buckets"]["+Inf"] == 0
    assert list(stats["write_seconds"]["buckets"])[:2] == ["0.005", "0.01"]
    assert metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "ioc_hub_mqtt_connected 0\n" in metrics.text
    assert "ioc_hub_gateways_online 0\n" in metrics.text
    assert "ioc_hub_snapshots_files 0\n" in metrics.text
    assert 'ioc_hub_snapshots_removed_total{reason="age"} 0\n' in metrics.text


async def test_dead_letters_keep_their_json_shape(hub: Hub) -> None:
    hub.pipeline.dead_letters.add("ioc/v1/site-a/gw-1/data", b"{not json", DeadLetterKind.MALFORMED, "not JSON", 17)
    token, _ = await hub.operations.tokens.create("technician", wards=None, name="test", created_by="test")
    async with httpx.AsyncClient(base_url=hub.api_url, timeout=5) as api:
        letters = await api.get("/api/v1/dead-letters", headers={"Authorization": f"Bearer {token}"})
    assert letters.status_code == 200, letters.text
    assert letters.json() == {
        "total": 1,
        "items": [
            {
                "topic": "ioc/v1/site-a/gw-1/data",
                "received_ms": 17,
                "kind": "malformed",
                "error": "not JSON",
                "payload": "{not json",
                "payload_size": 9,
            }
        ],
    }
