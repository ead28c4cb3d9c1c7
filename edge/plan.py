"""The poll plan: each configured device with its driver built (options and profile checked), not connected.

Built once when the config is loaded; ``ioc edge check`` prints it, the scheduler runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError

import devices.drivers  # declares every driver in devices.driver.REGISTRY (imported on first use)
from devices.driver import REGISTRY, Driver
from devices.errors import DeviceConfigError
from devices.profile import load_profile
from edge.errors import ConfigError
from edge.problems import Problem, dotted, pydantic_message
from wire.v1 import DeviceInfo

if TYPE_CHECKING:
    from edge.config import DeviceConfig


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """One device, ready to be scheduled."""

    id: str
    driver_name: str
    profile_id: str
    kind: str
    interval_s: float
    timeout_s: float
    driver: Driver

    def info(self) -> DeviceInfo:
        """How the device is announced in the birth message."""
        return DeviceInfo(
            id=self.id,
            kind=self.kind,
            profile=self.profile_id,
            interval_s=self.interval_s,
            driver=self.driver_name,
        )

    def describe(self) -> list[str]:
        """The plan of this device as ``ioc edge check`` prints it."""
        head = (
            f"{self.id}: driver {self.driver_name}, profile {self.profile_id}, kind {self.kind}, "
            f"every {self.interval_s:g} s, timeout {self.timeout_s:g} s"
        )
        return [head, *(f"    {line}" for line in self.driver.describe_plan())]


class DevicePlanError(ConfigError):
    """One or more devices cannot be built; ``problems`` says which and why."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(p.render("config") for p in problems))
        self.problems = list(problems)


def build_device_plans(entries: Sequence[DeviceConfig]) -> list[DevicePlan]:
    """Build every device's driver; collect the problems of all devices before raising :class:`DevicePlanError`."""
    plans: list[DevicePlan] = []
    problems: list[Problem] = []
    for index, entry in enumerate(entries):
        found = _check_entry(index, entry)
        if found:
            problems.extend(found)
            continue
        try:
            plans.append(_build(entry))
        except DeviceConfigError as exc:
            problems.append(Problem(index, entry.id, None, str(exc)))
    if problems:
        raise DevicePlanError(problems)
    return plans


def _check_entry(index: int, entry: DeviceConfig) -> list[Problem]:
    """Name the field: the driver, each bad option, the profile (``build_driver`` would say it less precisely)."""
    try:
        spec = REGISTRY.get(entry.driver)
    except DeviceConfigError as exc:
        return [Problem(index, entry.id, "driver", str(exc))]
    problems: list[Problem] = []
    try:
        spec.config_model.model_validate(entry.options)
    except ValidationError as exc:
        problems.extend(
            Problem(index, entry.id, dotted(["options", *err["loc"]]), pydantic_message(err)) for err in exc.errors()
        )
    try:
        load_profile(entry.profile)
    except DeviceConfigError as exc:
        problems.append(Problem(index, entry.id, "profile", str(exc)))
    return problems


def _build(entry: DeviceConfig) -> DevicePlan:
    profile = load_profile(entry.profile)
    driver = devices.drivers.build_driver(entry.driver, entry.options, entry.profile)
    return DevicePlan(
        id=entry.id,
        driver_name=entry.driver,
        profile_id=entry.profile,
        kind=profile.kind,
        interval_s=entry.interval_s,
        timeout_s=entry.poll_timeout_s,
        driver=driver,
    )
