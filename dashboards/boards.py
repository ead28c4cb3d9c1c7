# ruff: noqa: S608 - this module builds InfluxQL for Grafana from constants and registry ids checked by
# dashboards.registry.ID_RE (letters, digits, '_', '.', '-'): nothing in a query comes from a user at query time.
"""The IOC's boards, built from the registry snapshot: what each shows and from which measurement.

Only measurements and fields that exist in storage are queried (docs/storage.md, hub/points.py, hub/aqi.py,
hub/kpis.py, hub/health/store.py). A panel that needs a kind of device (PM sensors, water level gauges, rain
gauges...) is left out when the registry snapshot has no such device, so every panel of a generated board has
data behind it; without a snapshot every panel is built.

Queries are raw InfluxQL with Grafana's macros: ``$timeFilter`` (the board's time range), ``$__interval`` (the
step Grafana picks for the panel width) and the variables ``$site`` and ``$device`` (a single value, matched as
``=~ /^$site$/``, which is how Grafana's InfluxQL datasource formats a variable in a regex).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from dashboards.model import Board, Panel, PanelKind, Query, Threshold, Variable
from dashboards.registry import Snapshot
from hub.aqi import BANDS, BREAKPOINTS

OPERATIONS: Final = "operations"
LEADERSHIP: Final = "leadership"

GREEN, RED, ORANGE, BLUE = "green", "red", "orange", "blue"
AQI_THRESHOLDS: Final = tuple(Threshold(None if b.level == 1 else b.low, b.hex) for b in BANDS)


def pm_thresholds(table: str) -> tuple[Threshold, ...]:
    """Concentration thresholds of a PM panel: the breakpoints of Decision 1459's Table 2 in the bands' colours."""
    bps = BREAKPOINTS[table]
    return tuple(Threshold(None if i == 0 else bps[i], b.hex) for i, b in enumerate(BANDS))


@dataclass(frozen=True)
class Metric:
    """A field of a device kind that a board plots: measurement = kind; the profiles that deliver it."""

    kind: str
    field: str
    title: str
    unit: str
    profiles: tuple[str, ...]
    thresholds: tuple[Threshold, ...] = ()


#: What the device profiles measure (devices/profiles/*.yaml; dashboards may not import devices/, so the field
#: names are listed here and tests/unit/test_dashboards_model.py checks them against the profiles).
METRICS: Final = (
    Metric("air_quality", "pm25", "panel.pm25", "ugm3", ("pm-sensor-rs485",), pm_thresholds("pm25")),
    Metric("air_quality", "pm10", "panel.pm10", "ugm3", ("pm-sensor-rs485",), pm_thresholds("pm10")),
    Metric("weather", "temperature_c", "panel.temperature", "celsius", ("xy-md02",)),
    Metric("weather", "humidity_pct", "panel.humidity", "percent", ("xy-md02",)),
    Metric("weather", "rainfall_mm", "panel.rain", "mm", ("rain-gauge-rs485",)),
    Metric("water_level", "level_m", "panel.water_level", "metres", ("water-level-rs485",)),
    Metric("power_meter", "total_power_w", "panel.power", "watts", ("eastron-sdm630",)),
)


def _has(snap: Snapshot, metric: Metric) -> bool:
    return snap.empty or snap.has(profiles=metric.profiles)


def _regex_of(values: Sequence[str]) -> str:
    return "|".join(re.escape(v) for v in values)


SITE_VAR: Final = Variable("site", "var.site", 'SHOW TAG VALUES WITH KEY = "site"')
DEVICE_VAR: Final = Variable("device", "var.device", 'SHOW TAG VALUES WITH KEY = "device" WHERE "site" =~ /^$site$/')

#: Last state per device: device_health has one point per transition (hub/health/store.py), so the state is the
#: last point ever, not the last one in the time range.
_LAST_DEVICE_CODE: Final = 'SELECT last("code") AS "code" FROM "device_health" GROUP BY "device", "kind", "site"'
_STATE_MAPPINGS: Final = {
    "0": ("state.offline", RED),
    "1": ("state.unknown", "gray"),
    "2": ("state.degraded", ORANGE),
    "3": ("state.online", GREEN),
}


#: 1 for a device whose state code is online (3), else 0: floor(code / 3) (codes: hub/health/machine.py CODES).
_UP: Final = 'floor(last("code") / 3)'


def _simple(kind: PanelKind, title: str, query: str, unit: str = "none", **kw: Any) -> Panel:
    return Panel(kind, title, (Query(query),), unit=unit, **kw)


def health_board(snap: Snapshot) -> Board:
    """Operations: the whole city's device and gateway health at a glance (``device_health``, ``gateway_state``)."""
    stat = {"width": 6, "height": 5}
    panels = [
        _simple(
            "stat",
            "panel.devices_online",
            f'SELECT sum("up") FROM (SELECT {_UP} AS "up" FROM "device_health" GROUP BY "device")',
            "devices",
            thresholds=(Threshold(None, GREEN),),
            **stat,
        ),
        _simple(
            "stat",
            "panel.devices_not_online",
            f'SELECT sum("down") FROM (SELECT 1 - {_UP} AS "down" FROM "device_health" GROUP BY "device")',
            "devices",
            thresholds=(Threshold(None, GREEN), Threshold(1, RED)),
            **stat,
        ),
        _simple(
            "stat",
            "panel.gateways_online",
            f'SELECT sum("up") FROM (SELECT {_UP} AS "up" FROM "gateway_health" GROUP BY "site", "gateway")',
            "gateways",
            thresholds=(Threshold(None, GREEN),),
            **stat,
        ),
        _simple(
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
            (Query(f'SELECT count("code") FROM ({_LAST_DEVICE_CODE}) GROUP BY "kind"', alias="$tag_kind"),),
            unit="devices",
            width=8,
            height=8,
            options={"orientation": "horizontal", "displayMode": "basic", "reduceOptions": {"calcs": ["lastNotNull"]}},
        ),
        Panel(
            "table",
            "panel.device_table",
            (Query(_LAST_DEVICE_CODE, table=True),),
            width=16,
            height=8,
            mappings=_STATE_MAPPINGS,
            options={"sortBy": [{"displayName": "code", "desc": False}]},
        ),
        Panel(
            "bargauge",
            "panel.device_uptime",
            (Query(_UPTIME, alias="$tag_device"),),
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
            mappings=_STATE_MAPPINGS,
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
            (Query(_FAULTS_PER_HOUR.replace("time(1h)", "time($__interval)")),),
            unit="events",
            width=12,
            height=8,
        ),
    ]
    if any(s.lat is not None and s.lon is not None for s in snap.sites):
        panels.insert(4, _map_panel())
    return Board("ioc-ops-health", "board.health", OPERATIONS, tuple(panels), tags=("health",), time_from="now-1h")


#: Share of the time range each device was online: its state per minute (the last transition carried forward),
#: 1 when online, averaged. Minutes before a device's first transition in the range do not count.
_UPTIME: Final = (
    'SELECT mean("up") * 100 FROM (SELECT floor(last("code") / 3) AS "up" FROM "device_health" WHERE $timeFilter '
    'GROUP BY time(1m), "device" fill(previous)) GROUP BY "device"'
)
#: Transitions of any device out of "online" per hour (0 in hours without any): the faults trend.
_FAULTS_PER_HOUR: Final = (
    'SELECT sum("down") FROM (SELECT 1 - floor("code" / 3) AS "down" FROM "device_health" WHERE $timeFilter) '
    "WHERE $timeFilter GROUP BY time(1h) fill(0)"
)


def _map_panel() -> Panel:
    """Devices on the map, coloured by state: located through the gazetteer written from the registry."""
    return Panel(
        "geomap",
        "panel.devices_map",
        (Query(_LAST_DEVICE_CODE, table=True),),
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


#: Where ``build`` writes the gazetteer (GeoJSON points keyed by device and site id) under Grafana's public dir.
GAZETTEER_PATH: Final = "public/gazetteer/ioc-devices.geojson"


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
            mappings=_STATE_MAPPINGS,
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


def _metric_panel(metric: Metric, where: str, group: str, width: int = 12) -> Panel:
    custom = {"thresholdsStyle": {"mode": "line+area"}} if metric.thresholds else {}
    return Panel(
        "timeseries",
        metric.title,
        (
            Query(
                f'SELECT mean("{metric.field}") FROM "{metric.kind}" WHERE {where}$timeFilter '
                f'GROUP BY time($__interval), "{group}" fill(none)',
                alias=f"$tag_{group}",
            ),
        ),
        unit=metric.unit,
        width=width,
        height=8,
        thresholds=metric.thresholds,
        custom=custom,
        description="desc.pm" if metric.kind == "air_quality" else "",
    )


def environment_board(snap: Snapshot) -> Board:
    """Operations: PM2.5/PM10 with the VN_AQI concentration bands, temperature, humidity, water level, rain."""
    panels = [_metric_panel(m, "", "site") for m in METRICS if m.kind != "power_meter" and _has(snap, m)]
    if _has(snap, METRICS[0]):
        panels.insert(0, _aqi_hourly_panel(""))
    return Board("ioc-ops-environment", "board.environment", OPERATIONS, tuple(panels), tags=("environment",))


def _aqi_hourly_panel(where: str) -> Panel:
    return Panel(
        "timeseries",
        "panel.aqi_hourly",
        (
            Query(
                f'SELECT last("aqi") FROM "vn_aqi" WHERE "period" = \'hour\' AND {where}$timeFilter '
                'GROUP BY time(1h), "site" fill(none)',
                alias="$tag_site",
            ),
        ),
        unit="index",
        width=24,
        height=8,
        thresholds=AQI_THRESHOLDS,
        custom={"thresholdsStyle": {"mode": "line+area"}, "drawStyle": "bars", "fillOpacity": 60},
        min=0,
        description="desc.aqi",
    )


#: LED variable message signs over NTCIP 1203 (devices/drivers/ntcip/driver.py METRICS), kind ``sign``.
SIGN_PROFILES: Final = ("ntcip-dms-full-matrix",)


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
        _series("sign", "temp_cabinet_max_c", "panel.sign_temperature", "celsius", group="device", width=8),
        _series("sign", "pixel_failures", "panel.sign_pixels", "none", group="device", width=8),
        _series("sign", "power_failures", "panel.sign_power", "none", group="device", width=8),
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
                mappings=_STATE_MAPPINGS,
            )
        ]
        panels += [_metric_panel(m, where, "device") for m in METRICS if profiles & set(m.profiles)]
        if "pm-sensor-rs485" in profiles:
            panels.append(_aqi_hourly_panel(where))
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


#: The edge agent's own figures (edge/selfmetrics.py, kind ``agent``, one reading a minute per gateway).
AGENT_METRICS: Final = (
    ("outbox_readings", "panel.agent_outbox", "readings"),
    ("readings_dropped", "panel.agent_dropped", "readings"),
    ("reconnects", "panel.agent_reconnects", "none"),
    ("cpu_pct", "panel.agent_cpu", "percent"),
)
#: The gateway machine (devices/drivers/host, profile gateway-host, kind ``gateway_host``).
HOST_METRICS: Final = (
    ("cpu_pct", "panel.host_cpu", "percent"),
    ("mem_used_pct", "panel.host_memory", "percent"),
    ("disk_used_pct", "panel.host_disk", "percent"),
)


def _series(kind: str, field: str, title: str, unit: str, *, group: str = "site", width: int = 12) -> Panel:
    return Panel(
        "timeseries",
        title,
        (
            Query(
                f'SELECT last("{field}") FROM "{kind}" WHERE $timeFilter GROUP BY time($__interval), "{group}" '
                "fill(none)",
                alias=f"$tag_{group}",
            ),
        ),
        unit=unit,
        width=width,
        height=7,
    )


def gateways_board(snap: Snapshot) -> Board:
    """Operations: the gateways: connectivity, the agent's outbox, drops and reconnects, the host's resources."""
    online = {"1": ("value.online", GREEN), "0": ("value.offline", RED), "true": ("value.online", GREEN)}
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
            mappings={**_STATE_MAPPINGS, **{k: v for k, v in online.items() if k == "true"}},
        ),
    ]
    panels += [_series("agent", field, title, unit) for field, title, unit in AGENT_METRICS]
    if snap.empty or snap.has(profiles=("gateway-host",)):
        panels += [_series("gateway_host", field, title, unit, width=8) for field, title, unit in HOST_METRICS]
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
        _series("hub_health", "pending_messages", "panel.hub_pending", "messages", group=h, width=8),
        _series("hub_health", "spill_lines", "panel.hub_spill", "lines", group=h, width=8),
        _series("hub_health", "dead_letters", "panel.hub_dead_letters", "messages", group=h, width=8),
        _series("hub_health", "seq_gaps", "panel.hub_seq_gaps", "messages", group=h, width=12),
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


#: What the camera driver reports (devices/drivers/camera: onvif.py, rtsp.py), profile camera-onvif-generic.
CAMERA_PROFILES: Final = ("camera-onvif-generic",)


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
        _series("camera", "rtsp_fps", "panel.camera_fps", "fps", group="device", width=8),
        _series("camera", "rtsp_bitrate_kbps", "panel.camera_bitrate", "kbps", group="device", width=8),
        _series("camera", "onvif_response_ms", "panel.camera_response", "ms", group="device", width=8),
    )
    return Board("ioc-ops-cameras", "board.cameras", OPERATIONS, panels, tags=("cameras",))


def city_board(snap: Snapshot, online_target_pct: float) -> Board:
    """Leadership: the city on one screen (devices online per ward against a target, VN_AQI per ward, KPIs)."""
    target = (Threshold(None, RED), Threshold(online_target_pct, GREEN))
    online_share = (
        'SELECT mean("up") * 100 FROM (SELECT floor(last("code") / 3) AS "up" FROM "device_health" '
        '{where}GROUP BY "device")'
    )
    panels: list[Panel] = [
        Panel(
            "gauge",
            "panel.online_share",
            (Query(online_share.format(where="")),),
            unit="percent",
            width=6,
            height=7,
            description="desc.online_share",
            thresholds=target,
            min=0,
            max=100,
            decimals=1,
        )
    ]
    wards = snap.wards()
    if wards:
        panels.append(
            Panel(
                "bargauge",
                "panel.online_share_by_ward",
                tuple(
                    Query(online_share.format(where=f'WHERE "site" =~ /^({_regex_of(sites)})$/ '), alias=ward)
                    for ward, sites in wards.items()
                ),
                unit="percent",
                width=18,
                height=7,
                thresholds=target,
                min=0,
                max=100,
                decimals=1,
                options={
                    "orientation": "horizontal",
                    "displayMode": "lcd",
                    "reduceOptions": {"calcs": ["lastNotNull"]},
                },
            )
        )
    aq_wards = {
        ward: [s for s in sites if any(d.profile == "pm-sensor-rs485" for d in snap.devices_at(s))]
        for ward, sites in wards.items()
    }
    aq_wards = {ward: sites for ward, sites in aq_wards.items() if sites}
    if aq_wards:
        # A ward's index is its worst site's: the largest daily VN_AQI (today so far) of its sites.
        panels.append(
            Panel(
                "bargauge",
                "panel.aqi_by_ward",
                tuple(
                    Query(
                        'SELECT max("aqi") FROM (SELECT last("aqi") AS "aqi" FROM "vn_aqi" '
                        f'WHERE "period" = \'day\' AND "site" =~ /^({_regex_of(sites)})$/ GROUP BY "site")',
                        alias=ward,
                    )
                    for ward, sites in aq_wards.items()
                ),
                unit="index",
                width=24,
                height=8,
                thresholds=AQI_THRESHOLDS,
                description="desc.aqi",
                min=0,
                max=500,
                options={
                    "orientation": "horizontal",
                    "displayMode": "basic",
                    "reduceOptions": {"calcs": ["lastNotNull"]},
                },
            )
        )
    elif snap.empty:
        panels.append(_aqi_hourly_panel(""))
    panels += [
        Panel(
            "table",
            "panel.kpi_latest",
            (
                Query(
                    'SELECT last("value") AS "value", last("target") AS "target", last("unit") AS "unit" FROM "kpi" '
                    'GROUP BY "kpi", "ward"',
                    table=True,
                ),
            ),
            width=12,
            height=8,
            description="desc.kpi",
        ),
        Panel(
            "timeseries",
            "panel.kpi_trend",
            (
                Query(
                    'SELECT last("value") FROM "kpi" WHERE $timeFilter GROUP BY time(1d), "kpi" fill(none)', "$tag_kpi"
                ),
            ),
            width=12,
            height=8,
        ),
        Panel(
            "timeseries",
            "panel.faults_trend",
            (Query(_FAULTS_PER_HOUR),),
            unit="events",
            width=24,
            height=7,
        ),
    ]
    return Board("ioc-lead-city", "board.city", LEADERSHIP, tuple(panels), tags=("city",), time_from="now-7d")


def all_boards(snap: Snapshot, *, online_target_pct: float = 95.0) -> list[Board]:
    """Every board, operations first."""
    return [
        health_board(snap),
        site_board(),
        environment_board(snap),
        gateways_board(snap),
        hub_board(),
        *([cameras_board()] if snap.empty or snap.has(profiles=CAMERA_PROFILES) else []),
        *([displays_board()] if snap.empty or snap.has(profiles=SIGN_PROFILES) else []),
        *per_site_boards(snap),
        city_board(snap, online_target_pct),
    ]
