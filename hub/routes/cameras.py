"""Cameras and their snapshots: ``GET /api/v1/cameras`` (the camera wall), ``GET /api/v1/devices/{id}/snapshots``
(newest first), ``GET /api/v1/devices/{id}/snapshots/latest`` and ``/snapshots/{ts}`` (the JPEG itself).

Access follows the device routes: role viewer, and a ward-limited token sees only the cameras of its wards; any
other camera, known or not, is a 404 like an unknown device. A camera is a device whose kind is one of
``snapshots.kinds``. The snapshots are the hub's folder (hub/snapshots/store.py); a new one is announced on the
live event stream as ``event: snapshot`` to the streams that may see its ward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.health.store import HealthTransitionRow
from hub.operations.operations import Operations
from hub.routes.deps import Ops, Viewer, not_found
from hub.routes.devices import IdPath, visible_device
from hub.snapshots.store import SnapshotStore, StoredSnapshot
from wire.v1 import SnapshotTrigger

router = APIRouter(prefix="/api/v1", tags=["cameras"])

HealthState = Literal["unknown", "online", "degraded", "offline"]
#: Device ids per query of the last changes (well under SQLite's 32,766 bound variables).
_CHUNK: Final = 900
#: How long a browser may keep a snapshot by its time: the file of a given time never changes (a second one of
#: the same time replaces it, which a camera does not do), so an hour is safe and saves the wall re-reading it.
_IMAGE_CACHE: Final = "private, max-age=3600"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class SnapshotItem(_Model):
    """One snapshot kept by the hub."""

    ts_ms: int
    """When the frame was taken (ms since the epoch, the camera's gateway's clock)."""
    trigger: SnapshotTrigger
    """Why it was taken: ``periodic``, ``problem`` (an image problem was raised) or ``cleared``."""
    problems: list[str] | None
    """The image problems raised when it was taken (null: not known)."""
    width: int
    height: int
    bytes: int
    url: str
    """Where the JPEG is (``GET``, ``image/jpeg``)."""


class Camera(_Model):
    """A camera the token may see, with its health and its latest snapshot."""

    id: str
    kind: str
    site: str | None
    gateway: str | None
    ward: str | None
    state: HealthState
    reason: str
    """The health state's reason (the agent's, e.g. ``image_black: ...``)."""
    changed_ms: int | None
    """When the health state last changed (null: no change recorded)."""
    last_seen_ms: int | None
    gateway_problems: list[str]
    """Its gateway's problems (``clock_skew``...)."""
    snapshot: SnapshotItem | None
    """The latest snapshot (null: none kept)."""


class CamerasPage(_Model):
    total: int
    items: list[Camera]


class SnapshotsPage(_Model):
    device: str
    total: int
    """Snapshots kept for the camera."""
    items: list[SnapshotItem]
    """Newest first, at most ``limit``."""


def store_of(request: Request) -> SnapshotStore:
    store: SnapshotStore | None = getattr(request.app.state, "snapshots", None)
    if store is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the snapshot store is not running")
    return store


def snapshot_item(snap: StoredSnapshot) -> SnapshotItem:
    return SnapshotItem(
        ts_ms=snap.ts,
        trigger=SnapshotTrigger(snap.trigger),
        problems=list(snap.problems) if snap.problems is not None else None,
        width=snap.width,
        height=snap.height,
        bytes=snap.size,
        url=f"/api/v1/devices/{snap.device}/snapshots/{snap.ts}",
    )


def _last_changes(session: Session, ids: list[str]) -> dict[str, int]:
    changed: dict[str, int] = {}
    for start in range(0, len(ids), _CHUNK):
        rows = session.execute(
            select(HealthTransitionRow.key, func.max(HealthTransitionRow.ts_ms))
            .where(HealthTransitionRow.entity == "device", HealthTransitionRow.key.in_(ids[start : start + _CHUNK]))
            .group_by(HealthTransitionRow.key)
        )
        changed.update((row[0], row[1]) for row in rows)
    return changed


@router.get("/cameras", response_model=CamerasPage)
async def list_cameras(
    principal: Viewer,
    ops: Ops,
    request: Request,
    *,
    ward: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> CamerasPage:
    """The cameras the token may see (sorted by id; filtered by ward), each with its health, the time of its last
    health change and its latest snapshot."""
    store = store_of(request)
    registry = ops.registry
    kinds = frozenset(ops.settings.snapshots.kinds)
    cameras = []
    for device in registry.devices.values():
        if device.kind not in kinds:
            continue
        device_ward = registry.ward_of(device)
        if (ward is not None and device_ward != ward) or not principal.sees(device_ward):
            continue
        cameras.append(device)
    cameras.sort(key=lambda d: d.id)
    page = cameras[offset : offset + limit]
    await ops.sink.caught_up()
    changed = await ops.db.read(lambda s: _last_changes(s, [d.id for d in page]))
    items = []
    for device in page:
        health = ops.health.device(device.id) or {}
        latest = store.latest(device.id)
        items.append(
            Camera(
                id=device.id,
                kind=device.kind,
                site=device.site,
                gateway=device.gateway,
                ward=registry.ward_of(device),
                state=health.get("state", "unknown"),
                reason=health.get("reason", "not seen yet"),
                changed_ms=changed.get(device.id),
                last_seen_ms=health.get("last_seen_ms"),
                gateway_problems=[p["problem"] for p in health.get("problems", [])],
                snapshot=snapshot_item(latest) if latest is not None else None,
            )
        )
    return CamerasPage(total=len(cameras), items=items)


def visible_camera(ops: Operations, principal: Viewer, device_id: str) -> None:
    """404 unless the token may see the device and it is a camera."""
    device = visible_device(ops, principal, device_id)
    if device.kind not in ops.settings.snapshots.kinds:
        raise not_found("camera", device_id)


@router.get(
    "/devices/{device_id}/snapshots", response_model=SnapshotsPage, responses={404: {"description": "unknown camera"}}
)
async def list_snapshots(
    principal: Viewer,
    ops: Ops,
    request: Request,
    device_id: IdPath,
    *,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_ms: Annotated[int | None, Query(ge=0, description="Only snapshots taken before this time (ms).")] = None,
) -> SnapshotsPage:
    """The camera's snapshots, newest first."""
    visible_camera(ops, principal, device_id)
    total, items = store_of(request).history(device_id, limit, before_ms)
    return SnapshotsPage(device=device_id, total=total, items=[snapshot_item(s) for s in items])


_JPEG_ANSWER: Final[dict[int | str, dict[str, Any]]] = {
    200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}, "description": "the JPEG"},
    404: {"description": "unknown camera, or no such snapshot"},
}


async def _jpeg(store: SnapshotStore, snap: StoredSnapshot | None, what: str) -> Response:
    data = await store.read(snap) if snap is not None else None
    if data is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found")
    return Response(
        data,
        media_type="image/jpeg",
        headers={"Cache-Control": _IMAGE_CACHE, "X-Snapshot-Ts": str(snap.ts) if snap is not None else ""},
    )


@router.get("/devices/{device_id}/snapshots/latest", response_class=Response, responses=_JPEG_ANSWER)
async def latest_snapshot(principal: Viewer, ops: Ops, request: Request, device_id: IdPath) -> Response:
    """The camera's latest snapshot (``image/jpeg``; ``X-Snapshot-Ts`` says when it was taken)."""
    visible_camera(ops, principal, device_id)
    store = store_of(request)
    response = await _jpeg(store, store.latest(device_id), f"a snapshot of {device_id!r}")
    response.headers["Cache-Control"] = "no-cache"  # "latest" changes
    return response


@router.get("/devices/{device_id}/snapshots/{ts_ms}", response_class=Response, responses=_JPEG_ANSWER)
async def snapshot_at(
    principal: Viewer,
    ops: Ops,
    request: Request,
    device_id: IdPath,
    ts_ms: Annotated[int, Path(ge=0, le=9_999_999_999_999, description="The snapshot's time (ms), as listed.")],
) -> Response:
    """One snapshot of the camera by its time (``image/jpeg``)."""
    visible_camera(ops, principal, device_id)
    store = store_of(request)
    return await _jpeg(store, store.get(device_id, ts_ms), f"snapshot {ts_ms} of {device_id!r}")


def snapshot_events(ops: Operations) -> Callable[[str, str, StoredSnapshot], None]:
    """The store's observer that announces each new snapshot on the live event stream, to its ward's streams."""

    def announce(site: str, gateway: str, snap: StoredSnapshot) -> None:
        device = ops.registry.devices.get(snap.device)
        ward = ops.registry.ward_of(device) if device is not None else ops.registry.ward_of_site(site)
        ops.events.publish("snapshot", ward, {"device": snap.device, **snapshot_item(snap).model_dump(mode="json")})

    return announce
