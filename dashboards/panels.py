# ruff: noqa: S608 - InfluxQL for Grafana built from constants and registry ids checked by
# dashboards.registry.ID_RE (letters, digits, '_', '.', '-'): nothing in a query comes from a user at query time.
"""What the boards share: colours and bands, the metrics devices deliver, template variables, query fragments on
the health series, and the panel builders used by several boards."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from dashboards.model import Panel, PanelKind, Query, Threshold, Variable
from dashboards.registry import Snapshot
from hub.operations.aqi import BANDS, BREAKPOINTS

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


def has_metric(snap: Snapshot, metric: Metric) -> bool:
    return snap.empty or snap.has(profiles=metric.profiles)


def regex_of(values: Sequence[str]) -> str:
    return "|".join(re.escape(v) for v in values)


SITE_VAR: Final = Variable("site", "var.site", 'SHOW TAG VALUES WITH KEY = "site"')
DEVICE_VAR: Final = Variable("device", "var.device", 'SHOW TAG VALUES WITH KEY = "device" WHERE "site" =~ /^$site$/')

#: Last state per device: device_health has one point per transition (hub/health/store.py), so the state is the
#: last point ever, not the last one in the time range.
LAST_DEVICE_CODE: Final = 'SELECT last("code") AS "code" FROM "device_health" GROUP BY "device", "kind", "site"'
STATE_MAPPINGS: Final = {
    "0": ("state.offline", RED),
    "1": ("state.unknown", "gray"),
    "2": ("state.degraded", ORANGE),
    "3": ("state.online", GREEN),
}


#: 1 for a device whose state code is online (3), else 0: floor(code / 3) (codes: hub/health/machine.py CODES).
UP: Final = 'floor(last("code") / 3)'


def simple_panel(kind: PanelKind, title: str, query: str, unit: str = "none", **kw: Any) -> Panel:
    return Panel(kind, title, (Query(query),), unit=unit, **kw)


#: Share of the time range each device was online: its state per minute (the last transition carried forward),
#: 1 when online, averaged. Minutes before a device's first transition in the range do not count.
UPTIME: Final = (
    'SELECT mean("up") * 100 FROM (SELECT floor(last("code") / 3) AS "up" FROM "device_health" WHERE $timeFilter '
    'GROUP BY time(1m), "device" fill(previous)) GROUP BY "device"'
)
#: Transitions of any device out of "online" per hour (0 in hours without any): the faults trend.
FAULTS_PER_HOUR: Final = (
    'SELECT sum("down") FROM (SELECT 1 - floor("code" / 3) AS "down" FROM "device_health" WHERE $timeFilter) '
    "WHERE $timeFilter GROUP BY time(1h) fill(0)"
)


#: Where ``build`` writes the gazetteer (GeoJSON points keyed by device and site id) under Grafana's public dir.
GAZETTEER_PATH: Final = "public/gazetteer/ioc-devices.geojson"

#: LED variable message signs over NTCIP 1203 (devices/drivers/ntcip/driver.py METRICS), kind ``sign``.
SIGN_PROFILES: Final = ("ntcip-dms-full-matrix",)

#: What the camera driver reports (devices/drivers/camera: onvif.py, rtsp.py), profile camera-onvif-generic.
CAMERA_PROFILES: Final = ("camera-onvif-generic",)


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


def series_panel(kind: str, field: str, title: str, unit: str, *, group: str = "site", width: int = 12) -> Panel:
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


def metric_panel(metric: Metric, where: str, group: str, width: int = 12) -> Panel:
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


def aqi_hourly_panel(where: str) -> Panel:
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
