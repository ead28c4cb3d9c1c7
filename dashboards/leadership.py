# ruff: noqa: S608 - InfluxQL for Grafana built from constants and registry ids checked by
# dashboards.registry.ID_RE (letters, digits, '_', '.', '-'): nothing in a query comes from a user at query time.
"""The Leadership folder: the city on one screen."""

from __future__ import annotations

from dashboards.model import Board, Panel, Query, Threshold
from dashboards.panels import (
    AQI_THRESHOLDS,
    FAULTS_PER_HOUR,
    GREEN,
    LEADERSHIP,
    RED,
    aqi_hourly_panel,
    regex_of,
)
from dashboards.registry import Snapshot


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
