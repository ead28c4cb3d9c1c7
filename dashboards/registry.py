"""A snapshot of the device registry: the sites (with their ward and coordinates) and the devices on them.

Boards are regenerated from it: one board per site, the city map, air quality per ward, and only the panels for
which a registered device delivers data. It comes from one of:

- the hub's API (``GET /api/v1/sites`` and ``GET /api/v1/devices``, every page), read with the hub's own answer
  models (:mod:`hub.routes.models`: ``SitesPage``, ``DevicesPage``), so an answer of another shape is refused
  naming the route and the field instead of being guessed at. ``dashboards`` may import ``hub`` (the layering
  test forbids only ``devices``, ``edge``, ``ioc`` and MQTT): that module holds pydantic models and nothing of
  FastAPI, the database or the intake, and the two ship in one release;
- a YAML or JSON file with ``sites:`` and ``devices:`` lists (the technicians' inventory format), where a site
  may list its devices inline (``devices: [id, ...]`` or mappings), as ``ioc demo`` writes in ``demo.json``.

Field names accepted in a file for a site: ``id`` (or ``site``), ``name``, ``ward`` (or ``district``), ``lat``,
``lon``; for a device: ``id`` (or ``device``), ``kind``, ``profile``, ``site``, ``lat``, ``lon``. Errors name the
source and the entry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import httpx
import pydantic
import yaml

from hub.routes.models import DeviceItem, DevicesPage, SitesPage

#: What Grafana and InfluxQL regexes accept without escaping, and what our wire IDs allow (wire.v1.ID_PATTERN).
ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HTTP_TIMEOUT_S: Final = 10.0


class RegistryError(ValueError):
    """The snapshot could not be read; the message names the source and the entry."""


@dataclass(frozen=True)
class Site:
    id: str
    name: str = ""
    ward: str = ""
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True)
class Device:
    id: str
    site: str
    kind: str = ""
    profile: str = ""
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True)
class Snapshot:
    sites: tuple[Site, ...] = ()
    devices: tuple[Device, ...] = field(default=())

    def devices_at(self, site: str) -> list[Device]:
        return [d for d in self.devices if d.site == site]

    def wards(self) -> dict[str, list[str]]:
        """ward -> its site ids (sites without a ward are under their own id), in a stable order."""
        out: dict[str, list[str]] = {}
        for s in sorted(self.sites, key=lambda s: s.id):
            out.setdefault(s.ward or s.id, []).append(s.id)
        return dict(sorted(out.items()))

    def has(self, *, kind: str = "", profiles: Sequence[str] = ()) -> bool:
        """True if a registered device is of ``kind`` or one of ``profiles``."""
        return any((kind and d.kind == kind) or (d.profile in profiles) for d in self.devices)

    @property
    def empty(self) -> bool:
        return not self.sites and not self.devices


def _items(data: Any, key: str, source: str) -> list[Any]:
    if isinstance(data, Mapping):
        for name in ("items", key):
            if isinstance(data.get(name), list):
                return list(data[name])
        return []
    if isinstance(data, list):
        return data
    raise RegistryError(f"{source}: expected a list of {key} (or an object with 'items'), got {type(data).__name__}")


def _id(entry: Mapping[str, Any], keys: tuple[str, ...], what: str, source: str, index: int) -> str:
    value = next((entry[k] for k in keys if entry.get(k)), None)
    if not isinstance(value, str) or not ID_RE.match(value):
        raise RegistryError(
            f"{source}: {what} #{index + 1}: '{keys[0]}' must be an id like 'ben-thanh' (got {value!r})"
        )
    return value


def _coord(entry: Mapping[str, Any], key: str, source: str, what: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RegistryError(f"{source}: {what}: '{key}' must be a number (got {value!r})")
    return float(value)


def parse(sites_data: Any, devices_data: Any, source: str) -> Snapshot:
    """Build a snapshot from decoded JSON/YAML; raise :class:`RegistryError` naming the bad entry."""
    sites: list[Site] = []
    devices: list[Device] = []
    for i, raw in enumerate(_items(sites_data, "sites", source)):
        if not isinstance(raw, Mapping):
            raise RegistryError(f"{source}: site #{i + 1} must be a mapping")
        sid = _id(raw, ("id", "site"), "site", source, i)
        what = f"site {sid!r}"
        sites.append(
            Site(
                sid,
                str(raw.get("name") or ""),
                str(raw.get("ward") or raw.get("district") or ""),
                _coord(raw, "lat", source, what),
                _coord(raw, "lon", source, what),
            )
        )
        # A site may list its devices inline (a list); the hub's /sites gives a count there instead.
        inline = raw.get("devices")
        for j, dev in enumerate(inline if isinstance(inline, list) else []):
            entry = {"id": dev} if isinstance(dev, str) else dev
            if not isinstance(entry, Mapping):
                raise RegistryError(f"{source}: {what}: device #{j + 1} must be an id or a mapping")
            devices.append(_device({**entry, "site": sid}, source, j))
    for i, raw in enumerate(_items(devices_data, "devices", source)):
        if not isinstance(raw, Mapping):
            raise RegistryError(f"{source}: device #{i + 1} must be a mapping")
        if raw.get("site") is None:
            continue  # announced by a gateway but not placed at a site yet: on no site's board
        devices.append(_device(raw, source, i))
    return _snapshot(sites, devices)


def _snapshot(sites: list[Site], devices: list[Device]) -> Snapshot:
    """Sorted by id; a device's site that is not listed gets a site of its own id; a device listed twice is kept
    once (the last)."""
    known = {s.id for s in sites}
    for d in devices:
        if d.site not in known:
            sites.append(Site(d.site))
            known.add(d.site)
    unique = {d.id: d for d in devices}
    return Snapshot(tuple(sorted(sites, key=lambda s: s.id)), tuple(sorted(unique.values(), key=lambda d: d.id)))


def _device(raw: Mapping[str, Any], source: str, index: int) -> Device:
    did = _id(raw, ("id", "device"), "device", source, index)
    what = f"device {did!r}"
    site = raw.get("site")
    if not isinstance(site, str) or not ID_RE.match(site):
        raise RegistryError(f"{source}: {what}: 'site' must be a site id (got {site!r})")
    return Device(
        did,
        site,
        str(raw.get("kind") or ""),
        str(raw.get("profile") or ""),
        _coord(raw, "lat", source, what),
        _coord(raw, "lon", source, what),
    )


def load_file(path: Path) -> Snapshot:
    """A snapshot from a YAML or JSON file with ``sites`` (and ``devices``)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read the registry snapshot: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML or JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise RegistryError(f"{path}: expected a mapping with 'sites' and 'devices'")
    return parse(data.get("sites") or [], data.get("devices") or [], str(path))


#: The hub's page size limit of ``GET /api/v1/devices`` (hub/routes/devices.py).
HUB_PAGE: Final = 1000
Answer = TypeVar("Answer", bound=pydantic.BaseModel)


def _get(client: httpx.Client, path: str, params: dict[str, str], model: type[Answer]) -> Answer:
    """The hub's answer at ``path``, read as ``model``; :class:`RegistryError` naming the route otherwise."""
    where = f"{client.base_url}{path}"
    try:
        response = client.get(path, params=params)
    except httpx.HTTPError as exc:
        raise RegistryError(f"{where}: cannot reach the hub: {exc}") from exc
    if response.status_code != 200:
        raise RegistryError(f"{where}: the hub answered HTTP {response.status_code}: {response.text[:200]}")
    return read_answer(response.content, model, where)


def read_answer(body: bytes, model: type[Answer], source: str) -> Answer:
    """``body`` (JSON) as the hub's answer ``model``; :class:`RegistryError` naming ``source`` and the first
    field that does not fit."""
    try:
        return model.model_validate_json(body)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the answer"
        raise RegistryError(
            f"{source}: not the hub's {model.__name__} answer: {where}: {first['msg']} ({exc.error_count()} problems)"
        ) from exc


def from_hub(sites: SitesPage, devices: Sequence[DeviceItem], source: str) -> Snapshot:
    """A snapshot from the hub's answers; ids checked as in files (they name Grafana uids and regexes)."""
    placed = [d for d in devices if d.site is not None]  # announced but not placed at a site yet: on no board
    for what, ident in [*(("site", s.id) for s in sites.items), *(("device", d.id) for d in placed)]:
        if not ID_RE.match(ident):
            raise RegistryError(f"{source}: {what} {ident!r}: not an id like 'ben-thanh'")
    return _snapshot(
        [Site(s.id, s.name, s.ward or "", s.lat, s.lon) for s in sites.items],
        [Device(d.id, d.site, d.kind, d.profile, d.lat, d.lon) for d in placed if d.site is not None],
    )


def load_hub(url: str, token: str = "", timeout_s: float = HTTP_TIMEOUT_S, *, page_size: int = HUB_PAGE) -> Snapshot:
    """A snapshot from the hub's ``GET /api/v1/sites`` and ``GET /api/v1/devices`` (all pages of ``page_size``;
    bearer token if given: a viewer token is enough, and a token limited to wards sees only their sites)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = url.rstrip("/")
    with httpx.Client(base_url=base, headers=headers, timeout=timeout_s) as client:
        sites = _get(client, "/api/v1/sites", {}, SitesPage)
        devices: list[DeviceItem] = []
        while True:
            params = {"limit": str(page_size), "offset": str(len(devices))}
            page = _get(client, "/api/v1/devices", params, DevicesPage)
            devices += page.items
            if not page.items or len(devices) >= page.total:
                break
    return from_hub(sites, devices, base)
