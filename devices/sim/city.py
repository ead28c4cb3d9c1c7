"""A simulated city: N sites, each one gateway's worth of devices, and the edge config of every gateway.

``async with SimulatedCity(3) as city:`` starts, in this process, per site: one Modbus TCP simulator serving the
site's sensors (one unit per profile, :mod:`devices.sim.modbus`), one or two NTCIP 1203 signs
(:mod:`devices.sim.ntcip`) and cameras (ONVIF endpoints from :mod:`devices.sim.onvif`; all the city's streams
come from one RTSP server, :mod:`devices.sim.rtsp`, when VLC and ffmpeg are here, else the cameras have no
stream and report ``rtsp_state`` ``unavailable`` with the reason). :meth:`SimulatedCity.edge_config` gives
each gateway's edge config as a plain dict in the format of ``edge/config.py`` (``devices`` never imports
``edge``; ``tests/integration/devices/test_city.py`` proves the files load with ``edge.config``), and
:meth:`SimulatedCity.write_configs` writes them as YAML. The broker password is never written: give it to each
agent as ``IOC_EDGE_BROKER__PASSWORD`` (or let ``ioc demo`` fill it in).

Site ``i`` (1-based) is at :func:`place` ``(i)`` (a named place of Ho Chi Minh City with its ward and
coordinates; :func:`city_inventory` gives them to the hub) and gets the sensors of
``SENSOR_SETS[(i - 1) % len(SENSOR_SETS)]``, ``1 + (i - 1) % 2`` signs (so a city of three has four) and
``cameras_per_site`` cameras.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import yaml

from devices.sim.modbus import ModbusSimulator
from devices.sim.ntcip import NtcipSimulator
from devices.sim.onvif import SimulatedCamera, SimulatedCameras

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Place:
    """Where a site is: its id and name, its ward (id and name) and its coordinates (WGS 84)."""

    site: str
    name: str
    ward: str
    ward_name: str
    lat: float
    lon: float


#: The first sites of the city: places in Ho Chi Minh City, in the wards of the two-level local government of
#: 1 July 2025 (no more districts: the ward is the unit below the city). Ward ids are the names without
#: diacritics, as slugs, because they are ids (registry, tokens' wards, the ``district`` tag in InfluxDB).
PLACES: Final[tuple[Place, ...]] = (
    Place("ben-thanh", "Chợ Bến Thành", "phuong-ben-thanh", "Phường Bến Thành", 10.77250, 106.69800),
    Place("thu-thiem", "Khu đô thị Thủ Thiêm", "phuong-an-khanh", "Phường An Khánh", 10.77290, 106.71880),
    Place("tan-dinh", "Chợ Tân Định", "phuong-tan-dinh", "Phường Tân Định", 10.78930, 106.69050),
    Place("cho-lon", "Chợ Lớn", "phuong-cho-lon", "Phường Chợ Lớn", 10.75350, 106.65880),
    Place("phu-my-hung", "Phú Mỹ Hưng", "phuong-tan-my", "Phường Tân Mỹ", 10.72950, 106.71850),
    Place("an-dong", "Chợ An Đông", "phuong-an-dong", "Phường An Đông", 10.75740, 106.67170),
    Place("go-vap", "Chợ Gò Vấp", "phuong-go-vap", "Phường Gò Vấp", 10.82660, 106.68660),
    Place("binh-thanh", "Chợ Bà Chiểu", "phuong-binh-thanh", "Phường Bình Thạnh", 10.80130, 106.69960),
)
#: Sites past :data:`PLACES` are numbered, on a ring around the city centre (Nhà hát Thành phố).
CENTRE: Final = (10.77650, 106.70310)
GATEWAY: Final = "gw-1"
#: The Modbus sensors of a site: (device id prefix, profile id), rotating over the sites.
SENSOR_SETS: Final[tuple[tuple[tuple[str, str], ...], ...]] = (
    (("aq", "pm-sensor-rs485"), ("th", "xy-md02"), ("wl", "water-level-rs485")),
    (("aq", "pm-sensor-rs485"), ("wl", "water-level-rs485"), ("rg", "rain-gauge-rs485"), ("th", "xy-md02")),
    (("pm", "eastron-sdm630"), ("aq", "pm-sensor-rs485"), ("th", "deltaohm-hd2013-3")),
)
SIGN_PROFILE: Final = "ntcip-dms-full-matrix"
CAMERA_PROFILE: Final = "camera-onvif-generic"
SIGN_WRITE_COMMUNITY: Final = "administrator"
#: The signs' daylight follows the city's local time (Ho Chi Minh City, UTC+7), not the host's.
CITY_UTC_OFFSET_S: Final = 7 * 3600


@dataclass(frozen=True, slots=True)
class Intervals:
    """How often each kind is polled, and the camera poll's timeout (above the probe's own budget)."""

    sensor_s: float = 2.0
    sign_s: float = 5.0
    camera_s: float = 15.0
    camera_timeout_s: float = 9.0
    camera_rtsp_timeout_s: float = 6.0


@dataclass
class SimulatedSite:
    """One site: its name, its gateway and the simulators of its devices."""

    index: int
    site: str
    district: str
    """The ward's id (``district`` is its tag name in InfluxDB)."""
    gateway: str
    sensors: tuple[tuple[str, str], ...]  # (device id, profile id); unit id = position + 1
    modbus: ModbusSimulator
    signs: list[tuple[str, NtcipSimulator]] = field(default_factory=list)
    cameras: list[tuple[str, SimulatedCamera]] = field(default_factory=list)

    @property
    def place(self) -> Place:
        return place(self.index)


def place(index: int) -> Place:
    """Site ``index`` (1-based): one of :data:`PLACES`, then ``site-<n>`` in ``phuong-<n>`` on a ring of about
    3 to 6 km around the centre."""
    if index <= len(PLACES):
        return PLACES[index - 1]
    angle = index * 2.399963  # the golden angle: consecutive sites spread out evenly
    radius_deg = 0.027 + 0.027 * ((index * 7) % 10) / 10
    return Place(
        f"site-{index}",
        f"Điểm đo số {index}",
        f"phuong-{index}",
        f"Phường {index}",
        round(CENTRE[0] + radius_deg * math.sin(angle), 5),
        round(CENTRE[1] + radius_deg * math.cos(angle), 5),
    )


def site_name(index: int) -> tuple[str, str]:
    """(site, ward id) of site ``index`` (1-based)."""
    p = place(index)
    return p.site, p.ward


def city_inventory(sites: int) -> dict[str, Any]:
    """The inventory of a city of ``sites`` sites in the hub's format (``hub/registry/inventory.py``): each
    site with its name, ward and coordinates. The devices come from the gateways' births; their site gives
    them their ward."""
    entries = []
    for index in range(1, sites + 1):
        p = place(index)
        entries.append({"id": p.site, "name": f"{p.name} ({p.ward_name})", "ward": p.ward, "lat": p.lat, "lon": p.lon})
    return {"sites": entries}


class SimulatedCity:
    """N sites of simulated devices; an async context manager (what it starts, it stops)."""

    def __init__(
        self,
        sites: int,
        *,
        host: str = "127.0.0.1",
        cameras_per_site: int = 2,
        rtsp: bool = True,
        seed: int | None = None,
        intervals: Intervals | None = None,
    ) -> None:
        if not 1 <= sites <= 100:
            raise ValueError(f"sites must be 1..100, not {sites}")
        if not 0 <= cameras_per_site <= 10:
            raise ValueError(f"cameras_per_site must be 0..10, not {cameras_per_site}")
        self.host = host
        self.intervals = intervals or Intervals()
        self.sites: list[SimulatedSite] = []
        for index in range(1, sites + 1):
            site, district = site_name(index)
            sensor_set = SENSOR_SETS[(index - 1) % len(SENSOR_SETS)]
            sensors = tuple((f"{prefix}-{index:02d}", profile) for prefix, profile in sensor_set)
            sub_seed = None if seed is None else seed * 1000 + index
            modbus = ModbusSimulator([p for _, p in sensors], host=host, seed=sub_seed)
            signs = [
                (
                    f"vms-{index:02d}{chr(ord('a') + n)}",
                    NtcipSimulator(host=host, seed=sub_seed, utc_offset_s=CITY_UTC_OFFSET_S),
                )
                for n in range(1 + (index - 1) % 2)
            ]
            self.sites.append(SimulatedSite(index, site, district, GATEWAY, sensors, modbus, signs))
        total_cameras = cameras_per_site * sites
        self.cameras: SimulatedCameras | None = (
            SimulatedCameras(total_cameras, host=host, rtsp=rtsp, prefix="cam") if total_cameras else None
        )
        if self.cameras is not None:
            for n, camera in enumerate(self.cameras.cameras):
                owner = self.sites[n // cameras_per_site]
                owner.cameras.append((f"cam-{owner.index:02d}{chr(ord('a') + n % cameras_per_site)}", camera))
        self.config_paths: list[Path] = []
        self._stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> SimulatedCity:
        async with contextlib.AsyncExitStack() as stack:
            for site in self.sites:
                await stack.enter_async_context(site.modbus)
                for _, sign in site.signs:
                    await stack.enter_async_context(sign)
            if self.cameras is not None:
                await stack.enter_async_context(self.cameras)
            self._stack = stack.pop_all()
        log.info(
            "simulated city: %d sites, %d sensors, %d signs, %d cameras",
            len(self.sites),
            sum(len(s.sensors) for s in self.sites),
            sum(len(s.signs) for s in self.sites),
            sum(len(s.cameras) for s in self.sites),
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def site(self, name: str) -> SimulatedSite:
        for site in self.sites:
            if site.site == name:
                return site
        raise KeyError(f"no site {name!r} (sites: {', '.join(s.site for s in self.sites)})")

    # --- configs ---------------------------------------------------------------------------------------------
    def devices(self, site: SimulatedSite) -> list[dict[str, Any]]:
        """The ``devices`` list of the site's edge config."""
        iv = self.intervals
        entries: list[dict[str, Any]] = [
            {
                "id": device,
                "driver": "modbus_tcp",
                "profile": profile,
                "interval_s": iv.sensor_s,
                "options": {"host": self.host, "port": site.modbus.port, "unit_id": unit, "timeout_s": 1.5},
            }
            for unit, (device, profile) in enumerate(site.sensors, start=1)
        ]
        entries.extend(
            {
                "id": device,
                "driver": "ntcip",
                "profile": SIGN_PROFILE,
                "interval_s": iv.sign_s,
                "options": {
                    "host": self.host,
                    "port": sign.port,
                    "community": sign.community.decode(),
                    "write_community": SIGN_WRITE_COMMUNITY,
                    "timeout_s": 1.0,
                },
            }
            for device, sign in site.signs
        )
        if self.cameras is not None:
            for device, camera in site.cameras:
                options = {**self.cameras.device_options(camera), "rtsp_timeout_s": iv.camera_rtsp_timeout_s}
                entries.append(
                    {
                        "id": device,
                        "driver": "camera",
                        "profile": CAMERA_PROFILE,
                        "interval_s": iv.camera_s,
                        "timeout_s": iv.camera_timeout_s,
                        "options": options,
                    }
                )
        return entries

    def edge_config(
        self, site: SimulatedSite, *, broker_host: str = "127.0.0.1", broker_port: int = 1883
    ) -> dict[str, Any]:
        """The site's edge config (``edge/config.py`` format) without the broker password; TLS to a broker that
        is not on this machine (the agent refuses plain TCP off loopback)."""
        broker: dict[str, Any] = {"host": broker_host, "port": broker_port, "username": f"{site.site}.{site.gateway}"}
        if not _on_loopback(broker_host):
            broker["tls"] = True
        return {
            "site": site.site,
            "gateway": site.gateway,
            "broker": broker,
            "publish": {"max_delay_ms": 500},
            "devices": self.devices(site),
        }

    def write_configs(self, out: Path, *, broker_host: str = "127.0.0.1", broker_port: int = 1883) -> list[Path]:
        """Write ``edge-<site>-<gateway>.yaml`` per site into ``out``; returns the paths in site order."""
        out.mkdir(parents=True, exist_ok=True)
        paths: list[Path] = []
        for site in self.sites:
            path = out / f"edge-{site.site}-{site.gateway}.yaml"
            doc = self.edge_config(site, broker_host=broker_host, broker_port=broker_port)
            header = (
                f"# Edge config of {site.site}/{site.gateway}, written by `ioc sim city` for its simulated devices.\n"
                "# The broker password is not here: IOC_EDGE_BROKER__PASSWORD=... ioc edge run <this file>\n"
            )
            tmp = path.with_suffix(".yaml.tmp")
            tmp.write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
            tmp.replace(path)
            paths.append(path)
        self.config_paths = paths
        return paths

    def describe(self) -> dict[str, Any]:
        """What ``ioc sim city`` prints: every site's devices with their endpoints, and its config file (once
        :meth:`write_configs` wrote them)."""
        rtsp: dict[str, Any] = {"available": False, "reason": "no cameras"}
        if self.cameras is not None:
            rtsp = self.cameras.describe()["rtsp"]
        sites = []
        for n, site in enumerate(self.sites):
            p = site.place
            entry: dict[str, Any] = {
                "site": site.site,
                "gateway": site.gateway,
                "district": site.district,
                "name": p.name,
                "ward_name": p.ward_name,
                "lat": p.lat,
                "lon": p.lon,
                "devices": [
                    {"id": d["id"], "driver": d["driver"], "profile": d["profile"]} for d in self.devices(site)
                ],
                "modbus": {"host": self.host, "port": site.modbus.port},
                "signs": [{"id": device, "host": self.host, "port": sign.port} for device, sign in site.signs],
                "cameras": [{"id": device, "onvif_port": camera.onvif.port} for device, camera in site.cameras],
            }
            if self.config_paths:
                entry["config"] = str(self.config_paths[n])
            sites.append(entry)
        return {"host": self.host, "rtsp": rtsp, "sites": sites}


def _on_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
