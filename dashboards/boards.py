"""The IOC's boards, built from the registry snapshot: what each shows and from which measurement.

Only measurements and fields that exist in storage are queried (docs/storage.md, hub/ingest/points.py,
hub/operations/aqi.py, hub/routes/kpis.py, hub/health/store.py). A panel that needs a kind of device (PM sensors,
water level gauges, rain gauges...) is left out when the registry snapshot has no such device, so every panel of a
generated board has data behind it; without a snapshot every panel is built.

Queries are raw InfluxQL with Grafana's macros: ``$timeFilter`` (the board's time range), ``$__interval`` (the
step Grafana picks for the panel width) and the variables ``$site`` and ``$device`` (a single value, matched as
``=~ /^$site$/``, which is how Grafana's InfluxQL datasource formats a variable in a regex).
"""

from __future__ import annotations

from dashboards.leadership import city_board
from dashboards.model import Board
from dashboards.operations import (
    cameras_board,
    displays_board,
    environment_board,
    gateways_board,
    health_board,
    hub_board,
    per_site_boards,
    site_board,
)
from dashboards.panels import CAMERA_PROFILES, LEADERSHIP, METRICS, OPERATIONS, SIGN_PROFILES
from dashboards.registry import Snapshot

__all__ = ["CAMERA_PROFILES", "LEADERSHIP", "METRICS", "OPERATIONS", "SIGN_PROFILES", "all_boards"]


def all_boards(snap: Snapshot, *, online_target_pct: float = 95.0, in_time_target_pct: float = 90.0) -> list[Board]:
    """Every board, operations first. The targets are percentages (devices online; incidents resolved in time)."""
    return [
        health_board(snap),
        site_board(),
        environment_board(snap),
        gateways_board(snap),
        hub_board(),
        *([cameras_board()] if snap.empty or snap.has(profiles=CAMERA_PROFILES) else []),
        *([displays_board()] if snap.empty or snap.has(profiles=SIGN_PROFILES) else []),
        *per_site_boards(snap),
        city_board(snap, online_target_pct, in_time_target_pct),
    ]
