"""The gateway host as a device: CPU, memory, disk, load, uptime and (where there is a sensor) temperature.

Figures come from psutil (``/proc`` and ``/sys`` on Linux), read in a worker thread so a slow filesystem
(``statvfs`` of ``disk_path``) cannot stall the agent's event loop; the scheduler's timeout applies as for
any device. ``cpu_pct`` is the whole machine's CPU use since the previous poll (all cores, 0..100), primed
when the driver opens.

Temperature: ``psutil.sensors_temperatures()``; the chip named by ``temperature_sensor``, else the first
of :data:`PREFERRED_SENSORS` present, else the first chip with a reading; the hottest of its readings is
``temperature_c``. Without one (no sensor, a virtual machine, a platform psutil has no sensors for) the
metric is absent and the reason is logged once, when the driver opens.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from devices.driver import MetricValue, Reading, now_ms
from devices.drivers.host.config import HostConfig
from devices.errors import DeviceUnavailable

log = logging.getLogger(__name__)

#: Sensor chips tried in this order (Raspberry Pi / ARM SoCs, Intel, AMD, ACPI).
PREFERRED_SENSORS: Final = ("cpu_thermal", "soc_thermal", "coretemp", "k10temp", "zenpower", "acpitz")

#: ``psutil.sensors_temperatures`` or a stand-in with its shape: chip -> readings with ``current`` in degC.
TemperatureSource = Callable[[], Mapping[str, Sequence[Any]]]


# psutil is imported where it is used, not with the module: ``import devices.drivers`` registers every driver,
# and an agent without a host device should not carry psutil (about 1.5 MB resident).


def _psutil_temperatures() -> Mapping[str, Sequence[Any]]:
    import psutil  # noqa: PLC0415 - imported on first use, see above

    read = getattr(psutil, "sensors_temperatures", None)  # absent on platforms without sensor support
    return read() if read is not None else {}


class HostDriver:
    """Polls the machine the agent runs on. Needs no profile (the edge config names one for the kind)."""

    def __init__(self, config: HostConfig, temperatures: TemperatureSource = _psutil_temperatures) -> None:
        self.config = config
        self._temperatures = temperatures
        #: The chip read for ``temperature_c`` (None: not reported), chosen at the first open.
        self.sensor: str | None = None
        self._sensor_chosen = False

    async def open(self) -> None:
        if not await asyncio.to_thread(Path(self.config.disk_path).exists):
            raise DeviceUnavailable(f"host: disk_path {self.config.disk_path!r} does not exist")
        import psutil  # noqa: PLC0415 - imported on first use, see above

        psutil.cpu_percent(interval=None)  # the first call only starts the measurement
        if not self._sensor_chosen:
            self._sensor_chosen = True
            self.sensor = await asyncio.to_thread(self._choose_sensor)

    async def poll(self) -> list[Reading]:
        ts = now_ms()
        try:
            metrics = await asyncio.to_thread(self._sample)
        except OSError as exc:
            raise DeviceUnavailable(f"host: {exc}") from exc
        return [Reading(ts_ms=ts, metrics=metrics)]

    async def close(self) -> None:
        pass

    def describe_plan(self) -> list[str]:
        sensor = self.config.temperature_sensor or "first known sensor found"
        return [
            "psutil: cpu_pct, load1/5/15, mem_*, swap_used_pct, uptime_s",
            f"disk usage of {self.config.disk_path}; temperature: {sensor}",
        ]

    def _sample(self) -> dict[str, MetricValue]:
        import psutil  # noqa: PLC0415 - imported on first use, see above

        memory = psutil.virtual_memory()
        swap = psutil.swap_memory()
        disk = psutil.disk_usage(self.config.disk_path)
        load1, load5, load15 = os.getloadavg()
        metrics: dict[str, MetricValue] = {
            "cpu_pct": float(psutil.cpu_percent(interval=None)),
            "load1": load1,
            "load5": load5,
            "load15": load15,
            "mem_used_pct": float(memory.percent),
            "mem_available_bytes": int(memory.available),
            "mem_total_bytes": int(memory.total),
            "swap_used_pct": float(swap.percent),
            "disk_used_pct": float(disk.percent),
            "disk_free_bytes": int(disk.free),
            "disk_total_bytes": int(disk.total),
            "uptime_s": max(0.0, time.time() - psutil.boot_time()),
        }
        if self.sensor is not None:
            temperature = self._read_temperature(self.sensor)
            if temperature is not None:
                metrics["temperature_c"] = temperature
        return metrics

    def _choose_sensor(self) -> str | None:
        try:
            chips = {name: entries for name, entries in self._temperatures().items() if _hottest(entries) is not None}
        except Exception as exc:  # noqa: BLE001 - psutil reads /sys: a failure there only costs the temperature
            log.warning("host: temperature_c is not reported: reading the sensors failed (%s)", exc)
            return None
        wanted = self.config.temperature_sensor
        if wanted is not None:
            if wanted in chips:
                return wanted
            found = ", ".join(sorted(chips)) or "none"
            log.warning("host: temperature_c is not reported: no sensor %r (found: %s)", wanted, found)
            return None
        for name in (*PREFERRED_SENSORS, *sorted(chips)):
            if name in chips:
                log.info("host: temperature_c from sensor %r", name)
                return name
        log.info("host: temperature_c is not reported: this machine has no temperature sensor psutil can read")
        return None

    def _read_temperature(self, chip: str) -> float | None:
        try:
            return _hottest(self._temperatures().get(chip, ()))
        except Exception:
            log.debug("host: reading sensor %r failed", chip, exc_info=True)
            return None


def _hottest(entries: Sequence[Any]) -> float | None:
    values = [float(e.current) for e in entries if isinstance(getattr(e, "current", None), int | float)]
    values = [v for v in values if math.isfinite(v)]
    return max(values) if values else None
