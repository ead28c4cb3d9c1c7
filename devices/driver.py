"""The driver interface: what every device driver offers, and the registry drivers join by name.

A driver is built from a *profile* (what a hardware model exposes, YAML in ``devices/profiles/``) and an
*instance* config (where the device is), both checked when it is created. It then runs
``open -> poll* -> close``; the edge agent owns the schedule. Extra abilities are separate small protocols.
This package never imports MQTT, HTTP-server or InfluxDB code.
"""

from __future__ import annotations

import enum
import importlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from devices.errors import DeviceConfigError

MetricValue = bool | int | float | str


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch: the timestamp of a reading taken now."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Reading:
    """Metrics sampled from one device at one instant (``ts_ms`` is when the sample was taken)."""

    ts_ms: int
    metrics: Mapping[str, MetricValue]


class StateCode(enum.IntEnum):
    """A state a driver reports twice: its code as ``<what>_state`` and its name as ``<what>_state_name``
    (:attr:`label`). Subclassed with the members (a base without members, as :mod:`enum` allows)."""

    @property
    def label(self) -> str:
        return self.name.lower()


class DriverConfig(BaseModel):
    """Base of every driver's instance config: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Driver(Protocol):
    """One connection to one device."""

    async def open(self) -> None:
        """Connect (or check reachability). Raises :class:`devices.errors.DeviceUnavailable`."""

    async def poll(self) -> list[Reading]:
        """Read the device once. Raises a :class:`devices.errors.DeviceError` subclass on failure."""
        ...

    async def close(self) -> None:
        """Release the connection. Never raises."""

    def describe_plan(self) -> list[str]:
        """Human-readable lines: the requests one poll makes (shown by ``ioc edge check``)."""
        ...


@runtime_checkable
class CommandCapable(Protocol):
    """A driver that can run commands (restart a camera, write a message on a display...)."""

    def supported_actions(self) -> frozenset[str]: ...

    async def execute(self, action: str, params: Mapping[str, MetricValue]) -> str:
        """Run ``action``; return a short detail. Raises :class:`devices.errors.UnsupportedCommand`."""
        ...


@runtime_checkable
class HealthReporting(Protocol):
    """A health-probe driver: its poll succeeds with readings that *describe* a dead device (the camera driver
    reports an unreachable camera as ``onvif_state`` 3), so a failed poll cannot be what tells the scheduler.

    After each successful poll the scheduler calls :meth:`down_reason`: a reason marks the device down (one
    ``device_down`` event carrying it, as for a poll that failed), None marks it up. The readings are queued
    either way.
    """

    def down_reason(self) -> str | None:
        """Why the device is down according to the last poll, or None if it is up."""
        ...


@runtime_checkable
class ProblemReporting(Protocol):
    """A driver whose device can answer and still be unwell (a camera streaming a black picture): it names the
    problems raised now.

    After each successful poll that finds the device up, the scheduler calls :meth:`problems`: when the *set* of
    names raised becomes non-empty or changes, it publishes ``device_degraded`` with every problem and its
    detail; when it becomes empty again, ``device_up``. A detail that changes while its problem stays raised
    sends nothing. Names are metric names (``image_black``); details are short plain text.
    """

    def problems(self) -> Mapping[str, str]:
        """The problems raised now: name -> detail (why it was raised). Empty when the device is well."""
        ...


@dataclass(frozen=True, slots=True)
class Frame:
    """One still picture a device took (a camera's image check keeps one frame of its sample), as a JPEG.

    ``problems``: the device's problems raised once the picture was judged (sorted); ``raised`` and ``cleared``:
    those this picture's judgement raised and cleared (each sorted, usually empty).
    """

    ts_ms: int
    jpeg: bytes
    width: int | None = None
    height: int | None = None
    problems: tuple[str, ...] = ()
    raised: tuple[str, ...] = ()
    cleared: tuple[str, ...] = ()


@runtime_checkable
class FrameTaking(Protocol):
    """A driver that takes pictures of its own accord (the camera, at each image check). After each poll the
    scheduler takes them (:meth:`frames`) and decides which leave the gateway as snapshots."""

    def frames(self) -> list[Frame]:
        """The pictures taken since the last call, oldest first; each is handed out once."""
        ...


class DriverSession:
    """``async with DriverSession(driver):`` opens and always closes a driver."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def __aenter__(self) -> Driver:
        await self.driver.open()
        return self.driver

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.driver.close()


@dataclass(frozen=True, slots=True)
class DriverSpec:
    """How to build one driver: its config model and a factory taking (config, profile)."""

    name: str
    config_model: type[DriverConfig]
    factory: Callable[[Any, Any], Driver]
    needs_profile: bool = True
    description: str = ""


@dataclass
class DriverRegistry:
    """Drivers by name. A driver's module registers its :class:`DriverSpec` when imported; a name can also be
    *declared* with the module that registers it (:mod:`devices.drivers` declares every shipped driver), so
    the module, and the libraries it needs (pymodbus, pysnmp, httpx, psutil), are imported only when a device
    first uses that driver."""

    specs: dict[str, DriverSpec] = field(default_factory=dict)
    #: Driver name -> the module that registers it, imported on first :meth:`get`.
    modules: dict[str, str] = field(default_factory=dict)

    def register(self, spec: DriverSpec) -> DriverSpec:
        if spec.name in self.specs:
            raise DeviceConfigError(f"driver {spec.name!r} registered twice")
        self.specs[spec.name] = spec
        return spec

    def declare(self, name: str, module: str) -> None:
        """Make ``name`` known without importing ``module`` (which must register it when imported)."""
        if self.modules.get(name, module) != module:
            raise DeviceConfigError(f"driver {name!r} declared in both {self.modules[name]} and {module}")
        self.modules[name] = module

    def get(self, name: str) -> DriverSpec:
        """The driver ``name``, importing its module if it was only declared. Raises
        :class:`DeviceConfigError` for an unknown name (listing the known ones) or a module that fails to import
        (a library missing on this host, say)."""
        spec = self.specs.get(name)
        if spec is not None:
            return spec
        module = self.modules.get(name)
        if module is None:
            known = ", ".join(self.names()) or "none"
            raise DeviceConfigError(f"unknown driver {name!r} (known: {known})")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise DeviceConfigError(f"driver {name!r} cannot be loaded ({module}): {exc}") from exc
        spec = self.specs.get(name)
        if spec is None:
            raise DeviceConfigError(f"driver {name!r}: module {module} did not register it")
        return spec

    def names(self) -> list[str]:
        """Every known driver name, registered or only declared."""
        return sorted({*self.specs, *self.modules})

    def loaded(self) -> list[str]:
        """The names whose module has been imported."""
        return sorted(self.specs)


REGISTRY = DriverRegistry()
