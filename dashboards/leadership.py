# ruff: noqa: S608 - InfluxQL for Grafana built from constants and registry ids checked by
# dashboards.registry.ID_RE (letters, digits, '_', '.', '-'): nothing in a query comes from a user at query time.
"""The Leadership folder: the city on one screen."""

from __future__ import annotations

from typing import Final

from dashboards.model import Board, Panel, Query, Threshold
from dashboards.panels import (
    AQI_THRESHOLDS,
    CAMERA_PROFILES,
    FAULTS_PER_HOUR,
    GREEN,
    LEADERSHIP,
    ORANGE,
    RED,
    aqi_hourly_panel,
    regex_of,
)
from dashboards.registry import Snapshot

#: "Now" for the open-alert count: the hub writes the ``alerts`` gauge every minute (hub/alerts/series.py); a
#: count older than this is not shown as current (No data tells that the job is not running).
OPEN_ALERTS_FRESH: Final = "15m"
#: Open alerts (firing + acknowledged) per ward and severity at the last point of each series, then summed.
OPEN_NOW: Final = (
    'SELECT sum("open") FROM (SELECT last("open") AS "open" FROM "alerts" WHERE time > now() - '
    + OPEN_ALERTS_FRESH
    + ' {where}GROUP BY "ward", "severity") GROUP BY {by}'
)
#: The trend: the last count of each series in each interval, summed per severity.
OPEN_TREND: Final = (
    'SELECT sum("open") FROM (SELECT last("open") AS "open" FROM "alerts" WHERE $timeFilter '
    'GROUP BY time($__interval), "ward", "severity" fill(none)) WHERE $timeFilter '
    'GROUP BY time($__interval), "severity" fill(none)'
)
#: Share of alerts resolved in the board's range that were resolved within their severity's target.
IN_TIME_SHARE: Final = 'SELECT mean("in_time") * 100 FROM "alert_resolved" WHERE $timeFilter'


#: This month's camera availability (the share of the time known in which a camera was online, a good image)
#: per ward, as ``GET /api/v1/reports/availability`` computes it: the hub writes the month so far every 5 minutes
#: (``camera_availability``, hub/reports/series.py, which says why InfluxQL cannot pool ``device_health`` over
#: cameras). Older than this, a figure is not shown as current.
CAMERA_AVAILABILITY_FRESH: Final = "30m"
CAMERA_AVAILABILITY: Final = (
    'SELECT last("availability") * 100 FROM "camera_availability" WHERE "scope" = \'ward\' AND "ward" != \'\' '
    "AND time > now() - " + CAMERA_AVAILABILITY_FRESH + ' GROUP BY "ward"'
)


def camera_availability_panel(snap: Snapshot, target_pct: float) -> Panel | None:
    """This month's camera availability per ward; None when the registry has no camera."""
    if not (snap.empty or snap.has(kind="camera", profiles=CAMERA_PROFILES)):
        return None
    return Panel(
        "bargauge",
        "panel.camera_availability_by_ward",
        (Query(CAMERA_AVAILABILITY, alias="$tag_ward"),),
        unit="percent",
        width=24,
        height=7,
        description="desc.camera_availability",
        thresholds=(Threshold(None, RED), Threshold(target_pct, GREEN)),
        min=0,
        max=100,
        decimals=1,
        options={"orientation": "horizontal", "displayMode": "lcd", "reduceOptions": {"calcs": ["lastNotNull"]}},
    )


def _alert_panels(in_time_target_pct: float) -> list[Panel]:
    """Open alerts now (by severity and by ward), their trend, and incidents resolved in time (city, per ward)."""
    counts = (Threshold(None, GREEN), Threshold(1, ORANGE))
    in_time = (Threshold(None, RED), Threshold(in_time_target_pct, GREEN))
    bars = {"orientation": "horizontal", "displayMode": "lcd", "reduceOptions": {"calcs": ["lastNotNull"]}}
    return [
        Panel(
            "stat",
            "panel.alerts_open",
            (Query(OPEN_NOW.format(where="", by='"severity"'), alias="$tag_severity"),),
            unit="alerts",
            width=8,
            height=7,
            description="desc.alerts_open",
            thresholds=counts,
            decimals=0,
            options={
                "reduceOptions": {"calcs": ["lastNotNull"]},
                "colorMode": "background",
                "textMode": "value_and_name",
            },
        ),
        Panel(
            "bargauge",
            "panel.alerts_open_by_ward",
            (Query(OPEN_NOW.format(where="AND \"ward\" != '' ", by='"ward"'), alias="$tag_ward"),),
            unit="alerts",
            width=16,
            height=7,
            thresholds=counts,
            min=0,
            decimals=0,
            options=bars,
        ),
        Panel(
            "timeseries",
            "panel.alerts_trend",
            (Query(OPEN_TREND, alias="$tag_severity"),),
            unit="alerts",
            width=24,
            height=8,
            decimals=0,
            custom={"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 30, "lineInterpolation": "stepAfter"},
        ),
        Panel(
            "gauge",
            "panel.resolved_in_time",
            (Query(IN_TIME_SHARE),),
            unit="percent",
            width=6,
            height=7,
            description="desc.resolved_in_time",
            thresholds=in_time,
            min=0,
            max=100,
            decimals=1,
        ),
        Panel(
            "bargauge",
            "panel.resolved_in_time_by_ward",
            (Query(IN_TIME_SHARE + ' AND "ward" != \'\' GROUP BY "ward"', alias="$tag_ward"),),
            unit="percent",
            width=18,
            height=7,
            thresholds=in_time,
            min=0,
            max=100,
            decimals=1,
            options=bars,
        ),
    ]


def city_board(snap: Snapshot, online_target_pct: float, in_time_target_pct: float = 90.0) -> Board:
    """Leadership: the city on one screen (devices online per ward against a target, this month's camera
    availability per ward against the same target, VN_AQI per ward, open alerts and their trend, incidents
    resolved in time against a target, KPIs)."""
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
                    Query(online_share.format(where=f'WHERE "site" =~ /^({regex_of(sites)})$/ '), alias=ward)
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
    cameras = camera_availability_panel(snap, online_target_pct)
    if cameras is not None:
        panels.append(cameras)
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
                        f'WHERE "period" = \'day\' AND "site" =~ /^({regex_of(sites)})$/ GROUP BY "site")',
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
        panels.append(aqi_hourly_panel(""))
    panels += _alert_panels(in_time_target_pct)
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
            (Query(FAULTS_PER_HOUR),),
            unit="events",
            width=24,
            height=7,
        ),
    ]
    return Board("ioc-lead-city", "board.city", LEADERSHIP, tuple(panels), tags=("city",), time_from="now-7d")
