"""The driver registry: every shipped driver known by name, its module (and libraries) imported on first use.

Run in fresh interpreters: the test session itself has long imported every driver.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devices.driver import DriverRegistry
from devices.errors import DeviceConfigError

ROOT = Path(__file__).resolve().parents[3]


def _fresh(code: str) -> dict[str, object]:
    """Run ``code`` in a new interpreter; it prints one JSON object."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_importing_the_package_knows_every_driver_and_loads_none() -> None:
    out = _fresh(
        """
        import json, sys
        import devices.drivers
        from devices.driver import REGISTRY
        heavy = ["pymodbus", "pysnmp", "httpx", "psutil"]
        print(json.dumps({"names": REGISTRY.names(), "loaded": REGISTRY.loaded(),
                          "heavy": [m for m in heavy if m in sys.modules]}))
        """
    )
    assert out == {"names": ["camera", "host", "modbus_rtu", "modbus_tcp", "ntcip"], "loaded": [], "heavy": []}


def test_an_agent_config_with_modbus_devices_only_loads_modbus(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        "site: site-a\ngateway: gw-1\nbroker: {host: 127.0.0.1}\n"
        "devices:\n"
        "  - {id: th-1, driver: modbus_tcp, profile: xy-md02, interval_s: 1, options: {host: 127.0.0.1, port: 5020}}\n"
        "  - {id: th-2, driver: modbus_tcp, profile: xy-md02, interval_s: 1, options: {host: 127.0.0.1, port: 5020}}\n",
        encoding="utf-8",
    )
    out = _fresh(
        f"""
        import json, sys
        import edge.agent, edge.cli
        from edge.config import load_config
        from devices.driver import REGISTRY
        config = load_config({str(config)!r})
        plans = config.device_plans()
        heavy = ["pymodbus", "pysnmp", "httpx", "psutil", "pydantic_settings"]
        print(json.dumps({{"loaded": REGISTRY.loaded(), "heavy": [m for m in heavy if m in sys.modules],
                          "one_profile": plans[0].driver.profile is plans[1].driver.profile}}))
        """
    )
    assert out["loaded"] == ["modbus_rtu", "modbus_tcp"]
    assert out["heavy"] == ["pymodbus"]
    assert out["one_profile"] is True  # devices of one model share one parsed profile


def test_a_declared_driver_is_imported_on_first_get() -> None:
    registry = DriverRegistry()
    registry.declare("json_driver", "json")  # a module that registers nothing
    assert registry.names() == ["json_driver"]
    with pytest.raises(DeviceConfigError, match=r"driver 'json_driver': module json did not register it"):
        registry.get("json_driver")


def test_a_driver_whose_module_cannot_be_imported_is_a_config_error() -> None:
    registry = DriverRegistry()
    registry.declare("gone", "devices.drivers.no_such_module")
    with pytest.raises(DeviceConfigError, match=r"driver 'gone' cannot be loaded \(devices.drivers.no_such_module\)"):
        registry.get("gone")


def test_an_unknown_driver_lists_the_declared_ones() -> None:
    registry = DriverRegistry()
    registry.declare("modbus_tcp", "devices.drivers.modbus")
    with pytest.raises(DeviceConfigError, match=r"unknown driver 'modbsu' \(known: modbus_tcp\)"):
        registry.get("modbsu")


def test_one_name_cannot_be_declared_for_two_modules() -> None:
    registry = DriverRegistry()
    registry.declare("x", "devices.drivers.modbus")
    registry.declare("x", "devices.drivers.modbus")  # the same again is fine
    with pytest.raises(DeviceConfigError, match="declared in both"):
        registry.declare("x", "devices.drivers.ntcip")
