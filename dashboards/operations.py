# ruff: noqa: S608 - InfluxQL for Grafana built from constants and registry ids checked by
# dashboards.registry.ID_RE (letters, digits, '_', '.', '-'): nothing in a query comes from a user at query time.
"""The Operations folder: city device health, site drill-down and per-site boards, environment, gateways, the
hub, cameras and signs. What each shows is in docs/dashboards.md."""

from __future__ import annotations

import re

from dashboards.model import Board, Panel, Query, Threshold
from dashboards.panels import (
    AGENT_METRICS,
    BLUE,
    DEVICE_VAR,
    FAULTS_PER_HOUR,
    GAZETTEER_PATH,
    GREEN,
    HOST_METRICS,
    LAST_DEVICE_CODE,
    METRICS,
    OPERATIONS,
    ORANGE,
    RED,
    SITE_VAR,
    STATE_MAPPINGS,
    UP,
    UPTIME,
    aqi_hourly_panel,
    has_metric,
    metric_panel,
    series_panel,
    simple_panel,
)
from dashboards.registry import Snapshot


def health_board(snap: Snapshot) -> Board:
    """Operations: the whole city's device and gateway health at a glance (``device_health``, ``gateway_state``)."""
    stat = {"width": 6, "height": 5}
    panels = [
        simple_panel(
            "stat",
            "panel.devices_online",
            f'SELECT sum("up") FROM (SELECT {UP} AS "up" FROM "device_health" GROUP BY "device")',
            "devices",
            thresholds=(Threshold(None, GREEN),),
            **stat,
        ),
        simple_panel(
            "stat",
            "panel.devices_not_online",
            f'SELECT sum("down") FROM (SELECT 1 - {UP} AS "down" FROM "device_health" GROUP BY "device")',
            "devices",
            thresholds=(Threshold(None, GREEN), Threshold(1, RED)),
            **stat,
        ),
        simple_panel(
            "stat",
            "panel.gateways_online",
            f'SELECT sum("up") FROM (SELECT {UP} AS "up" FROM "gateway_health" GROUP BY "site", "gateway")',
            "gateways",
            thresholds=(Threshold(None, GREEN),),
            **stat,
        ),
        simple_panel(
            "stat",
            "panel.health_events",
            'SELECT count("code") FROM "device_health" WHERE $timeFilter',
            "events",
            thresholds=(Threshold(None, BLUE),),
            **stat,
        ),
        Panel(
            "bargauge",
            "panel.device_states",
            (Query(f'SELECT count("code") FROM ({LAST_DEVICE_CODE}) GROUP BY "kind"', alias="$tag_kind"),),
            unit="devices",
            width=8,
            height=8,
            options={"orientation": "horizontal", "displayMode": "basic", "reduceOptions": {"calcs": ["lastNotNull"]}},
        ),
        Panel(
            "table",
            "panel.device_table",
            (Query(LAST_DEVICE_CODE, table=True),),
            width=16,
            height=8,
            mappings=STATE_MAPPINGS,
            options={"sortBy": [{"displayName": "code", "desc": False}]},
        ),
        Panel(
            "bargauge",
            "panel.device_uptime",
            (Query(UPTIME, alias="$tag_device"),),
            unit="percent",
            width=24,
            height=8,
            thresholds=(Threshold(None, RED), Threshold(95, GREEN)),
            min=0,
            max=100,
            decimals=1,
            description="desc.uptime",
            options={"orientation": "vertical", "displayMode": "basic", "reduceOptions": {"calcs": ["lastNotNull"]}},
        ),
        Panel(
            "state-timeline",
            "panel.device_timeline",
            (
                Query(
                    'SELECT last("code") FROM "device_health" WHERE $timeFilter '
                    'GROUP BY time($__interval), "device" fill(previous)',
                    alias="$tag_device",
                ),
            ),
            width=24,
            height=10,
            mappings=STATE_MAPPINGS,
        ),
        Panel(
            "table",
            "panel.worst_devices",
            (
                Query(
                    'SELECT sum("down") AS "faults", count("down") AS "transitions" FROM (SELECT 1 - floor("code" / 3) '
                    'AS "down" FROM "device_health" WHERE $timeFilter GROUP BY "device", "site") GROUP BY "device", '
                    '"site"',
                    table=True,
                ),
            ),
            width=12,
            height=8,
            options={"sortBy": [{"displayName": "faults", "desc": True}]},
        ),
        Panel(
            "timeseries",
            "panel.faults_trend",
            (Query(FAULTS_PER_HOUR.replace("time(1h)", "time($__interval)")),),
            unit="events",
            width=12,
            height=8,
        ),
    ]
    if any(s.lat is not None and s.lon is not None for s in snap.sites):
        panels.insert(4, map_panel())
    return Board("ioc-ops-health", "board.health", OPERATIONS, tuple(panels), tags=("health",), time_from="now-1h")


def map_panel() -> Panel:
    """Devices on the map, coloured by state: located through the gazetteer written from the registry."""
    return Panel(
        "geomap",
        "panel.devices_map",
        (Query(LAST_DEVICE_CODE, table=True),),
        width=24,
        height=12,
        thresholds=(Threshold(None, RED), Threshold(1, "gray"), Threshold(2, ORANGE), Threshold(3, GREEN)),
        options={
            "view": {"id": "fit", "lat": 0, "lon": 0, "zoom": 12},
            "controls": {"showZoom": True, "mouseWheelZoom": True},
            "layers": [
                {
                    "type": "markers",
                    "name": "devices",
                    "location": {"mode": "lookup", "lookup": "device", "gazetteer": GAZETTEER_PATH},
                    "config": {
                        "style": {
                            "color": {"field": "code", "fixed": "gray"},
                            "size": {"fixed": 8},
                            "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                        },
                        "showLegend": True,
                    },
                }
            ],
        },
    )


def site_board() -> Board:
    """Operations: one site and one device, chosen with the ``site`` and ``device`` variables."""
    panels = (
        Panel(
            "state-timeline",
            "panel.site_devices",
            (
                Query(
                    'SELECT last("code") FROM "device_health" WHERE "site" =~ /^$site$/ AND $timeFilter '
                    'GROUP BY time($__interval), "device" fill(previous)',
                    alias="$tag_device",
                ),
            ),
            width=24,
            height=7,
            mappings=STATE_MAPPINGS,
        ),
        Panel(
            "timeseries",
            "panel.device_readings",
            (
                Query(
                    "SELECT mean(*) FROM /^(air_quality|weather|water_level|power_meter)$/ "
                    'WHERE "device" =~ /^$device$/ AND $timeFilter GROUP BY time($__interval)',
                ),
            ),
            width=24,
            height=9,
        ),
        Panel(
            "state-timeline",
            "panel.gateway_timeline",
            (
                Query(
                    'SELECT last("online") FROM "gateway_state" WHERE "site" =~ /^$site$/ AND $timeFilter '
                    'GROUP BY time($__interval), "gateway" fill(previous)',
                    alias="$tag_gateway",
                ),
            ),
            width=12,
            height=6,
            mappings={"true": ("value.online", GREEN), "false": ("value.offline", RED)},
        ),
        Panel(
            "table",
            "panel.site_events",
            (
                Query(
                    'SELECT "device", "state", "reason" FROM "device_health" WHERE "site" =~ /^$site$/ AND $timeFilter',
                    table=True,
                ),
            ),
            width=12,
            height=6,
        ),
    )
    return Board("ioc-ops-site", "board.site", OPERATIONS, panels, variables=(SITE_VAR, DEVICE_VAR), tags=("site",))


def environment_board(snap: Snapshot) -> Board:
    """Operations: PM2.5/PM10 with the VN_AQI concentration bands, temperature, humidity, water level, rain."""
    panels = [metric_panel(m, "", "site") for m in METRICS if m.kind != "power_meter" and has_metric(snap, m)]
    if has_metric(snap, METRICS[0]):
        panels.insert(0, aqi_hourly_panel(""))
    return Board("ioc-ops-environment", "board.environment", OPERATIONS, tuple(panels), tags=("environment",))


def displays_board() -> Board:
    """Operations: variable message signs: error status, current message, temperatures, pixel/power failures."""
    ok = {"0": ("value.ok", GREEN)}
    panels = (
        Panel(
            "state-timeline",
            "panel.sign_status",
            (
                Query(
                    'SELECT last("short_error_status") FROM "sign" WHERE $timeFilter '
                    'GROUP BY time($__interval), "device" fill(previous)',
                    alias="$tag_device",
                ),
            ),
            width=24,
            height=7,
            thresholds=(Threshold(None, GREEN), Threshold(1, RED)),
            mappings=ok,
        ),
        Panel(
            "table",
            "panel.sign_message",
            (
                Query(
                    'SELECT last("message_text") AS "message", last("message_source") AS "source", '
                    'last("light_output_pct") AS "light_pct" FROM "sign" GROUP BY "site", "device"',
                    table=True,
                ),
            ),
            width=24,
            height=7,
        ),
        series_panel("sign", "temp_cabinet_max_c", "panel.sign_temperature", "celsius", group="device", width=8),
        series_panel("sign", "pixel_failures", "panel.sign_pixels", "none", group="device", width=8),
        series_panel("sign", "power_failures", "panel.sign_power", "none", group="device", width=8),
    )
    return Board("ioc-ops-displays", "board.displays", OPERATIONS, panels, tags=("displays",))


def per_site_boards(snap: Snapshot) -> list[Board]:
    """Operations: one board per registered site with the panels its devices feed."""
    boards: list[Board] = []
    for site in snap.sites:
        devices = snap.devices_at(site.id)
        profiles = {d.profile for d in devices}
        where = f"\"site\" = '{site.id}' AND "
        panels: list[Panel] = [
            Panel(
                "state-timeline",
                "panel.site_devices",
                (
                    Query(
                        f'SELECT last("code") FROM "device_health" WHERE {where}$timeFilter '
                        'GROUP BY time($__interval), "device" fill(previous)',
                        alias="$tag_device",
                    ),
                ),
                width=24,
                height=6,
                mappings=STATE_MAPPINGS,
            )
        ]
        panels += [metric_panel(m, where, "device") for m in METRICS if profiles & set(m.profiles)]
        if "pm-sensor-rs485" in profiles:
            panels.append(aqi_hourly_panel(where))
        uid = "ioc-site-" + re.sub(r"[^a-z0-9-]", "-", site.id.lower())[:31]
        boards.append(
            Board(
                uid,
                "board.site_named",
                OPERATIONS,
                tuple(panels),
                tags=("site", f"site:{site.id}"),
                title_values={"site": site.name or site.id},
            )
        )
    return boards


def gateways_board(snap: Snapshot) -> Board:
    """Operations: the gateways: connectivity, the agent's outbox, drops and reconnects, the host's resources."""
    panels: list[Panel] = [
        Panel(
            "table",
            "panel.gateway_table",
            (
                Query(
                    'SELECT last("online") AS "online", last("session") AS "session" FROM "gateway_state" '
                    'GROUP BY "site", "gateway"',
                    table=True,
                ),
            ),
            width=12,
            height=8,
            mappings={"true": ("value.online", GREEN), "false": ("value.offline", RED)},
        ),
        Panel(
            "state-timeline",
            "panel.gateway_timeline",
            (
                Query(
                    'SELECT last("code") FROM "gateway_health" WHERE $timeFilter '
                    'GROUP BY time($__interval), "site", "gateway" fill(previous)',
                    alias="$tag_site/$tag_gateway",
                ),
            ),
            width=12,
            height=8,
            mappings=STATE_MAPPINGS,
        ),
    ]
    panels += [series_panel("agent", field, title, unit) for field, title, unit in AGENT_METRICS]
    if snap.empty or snap.has(profiles=("gateway-host",)):
        panels += [series_panel("gateway_host", field, title, unit, width=8) for field, title, unit in HOST_METRICS]
    return Board("ioc-ops-gateways", "board.gateways", OPERATIONS, tuple(panels), tags=("gateways",))


def hub_board() -> Board:
    """Operations: the hub's own health (``hub_health``, hub/metrics.py): rate, latency, backlog, spill, refusals."""
    h = "hub"
    panels = (
        Panel(
            "timeseries",
            "panel.hub_ingest",
            tuple(
                Query(
                    f'SELECT mean("{f}") FROM "hub_health" WHERE $timeFilter GROUP BY time($__interval), "{h}"',
                    alias=f"{f} $tag_hub",
                )
                for f in ("messages_per_s", "readings_per_s", "lines_per_s")
            ),
            unit="per_s",
            width=12,
        ),
        Panel(
            "timeseries",
            "panel.hub_latency",
            tuple(
                Query(
                    f'SELECT max("{f}") FROM "hub_health" WHERE $timeFilter GROUP BY time($__interval), "{h}"',
                    alias=f"{f} $tag_hub",
                )
                for f in ("ingest_latency_max_ms", "write_avg_ms")
            ),
            unit="ms",
            width=12,
        ),
        series_panel("hub_health", "pending_messages", "panel.hub_pending", "messages", group=h, width=8),
        series_panel("hub_health", "spill_lines", "panel.hub_spill", "lines", group=h, width=8),
        series_panel("hub_health", "dead_letters", "panel.hub_dead_letters", "messages", group=h, width=8),
        series_panel("hub_health", "seq_gaps", "panel.hub_seq_gaps", "messages", group=h, width=12),
        Panel(
            "state-timeline",
            "panel.hub_links",
            tuple(
                Query(
                    f'SELECT last("{f}") FROM "hub_health" WHERE $timeFilter GROUP BY time($__interval) fill(previous)',
                    alias=f,
                )
                for f in ("mqtt_connected", "storage_ok")
            ),
            width=12,
            height=7,
            mappings={"true": ("value.ok", GREEN), "false": ("value.failing", RED)},
        ),
    )
    return Board("ioc-ops-hub", "board.hub", OPERATIONS, panels, tags=("hub",))


def cameras_board() -> Board:
    """Operations: the camera fleet: ONVIF and RTSP reachability, frame rate, bitrate, ONVIF answer time."""
    up = {"1": ("value.online", GREEN), "0": ("value.offline", RED)}
    panels = (
        Panel(
            "state-timeline",
            "panel.camera_reachability",
            tuple(
                Query(
                    f'SELECT last("{f}") FROM "camera" WHERE $timeFilter GROUP BY time($__interval), "device" '
                    "fill(previous)",
                    alias=f"$tag_device {f.split('_')[0].upper()}",
                )
                for f in ("onvif_up", "rtsp_up")
            ),
            width=24,
            height=8,
            mappings=up,
        ),
        series_panel("camera", "rtsp_fps", "panel.camera_fps", "fps", group="device", width=8),
        series_panel("camera", "rtsp_bitrate_kbps", "panel.camera_bitrate", "kbps", group="device", width=8),
        series_panel("camera", "onvif_response_ms", "panel.camera_response", "ms", group="device", width=8),
    )
    return Board("ioc-ops-cameras", "board.cameras", OPERATIONS, panels, tags=("cameras",))
