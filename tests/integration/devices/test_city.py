"""The simulated city: its edge configs load with ``edge.config`` and every device in them answers its driver.

No broker is involved (the demo test covers the path into InfluxDB), so these are plain tests. Cameras run
without streams here (``rtsp=False``): VLC is exercised by the camera tests and by the demo.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devices.driver import DriverSession
from devices.sim.city import SENSOR_SETS, SimulatedCity, site_name
from edge.config import load_config


def test_site_names_are_fixed_then_numbered() -> None:
    assert site_name(1) == ("ben-thanh", "phuong-ben-thanh")
    assert site_name(42) == ("site-42", "phuong-42")


@pytest.mark.parametrize(("sites", "cameras"), [(0, 1), (101, 1), (1, -1), (1, 11)])
def test_bad_city_sizes_are_refused(sites: int, cameras: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        SimulatedCity(sites, cameras_per_site=cameras, rtsp=False)


async def test_every_site_config_loads_and_every_device_answers(tmp_path: Path) -> None:
    async with SimulatedCity(3, cameras_per_site=1, rtsp=False, seed=5) as city:
        paths = city.write_configs(tmp_path, broker_host="10.0.0.9", broker_port=8883)
        assert [p.name for p in paths] == [
            "edge-ben-thanh-gw-1.yaml",
            "edge-thu-thiem-gw-1.yaml",
            "edge-tan-dinh-gw-1.yaml",
        ]
        kinds_seen: set[str] = set()
        for index, (path, site) in enumerate(zip(paths, city.sites, strict=True)):
            raw = yaml.safe_load(path.read_text())
            assert "password" not in raw["broker"], "the city never writes a secret"
            assert raw["broker"]["tls"] is True, "a broker off loopback is reached over TLS"
            config = load_config(path, environ={})
            assert (config.site, config.gateway) == (site.site, "gw-1")
            assert (config.broker.host, config.broker.port, config.broker.username) == (
                "10.0.0.9",
                8883,
                f"{site.site}.gw-1",
            )
            plans = config.device_plans()
            sensors = len(SENSOR_SETS[index % len(SENSOR_SETS)])
            signs = 1 + index % 2
            assert len(plans) == sensors + signs + 1
            for plan in plans:
                kinds_seen.add(plan.kind)
                async with DriverSession(plan.driver) as driver:
                    readings = await driver.poll()
                assert readings
                assert readings[0].metrics, plan.id
                if plan.kind == "sign":
                    assert readings[0].metrics["message_text"] == "DRIVE SAFELY"
                if plan.kind == "camera":
                    assert readings[0].metrics["onvif_state_name"] == "up_with_auth"
                    assert readings[0].metrics["rtsp_state_name"] == "unavailable"
        assert {"air_quality", "weather", "water_level", "power_meter", "sign", "camera"} <= kinds_seen
        described = city.describe()
        assert [s["config"] for s in described["sites"]] == [str(p) for p in paths]
        assert described["rtsp"]["available"] is False


def test_cli_writes_the_configs_and_prints_the_city(tmp_path: Path) -> None:
    out = tmp_path / "city"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ioc.cli",
            "sim",
            "city",
            "--sites",
            "2",
            "--cameras-per-site",
            "1",
            "--no-rtsp",
            "--out",
            str(out),
            "--duration",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        doc = json.loads(proc.stdout.readline())
        assert [s["site"] for s in doc["sites"]] == ["ben-thanh", "thu-thiem"]
        for site in doc["sites"]:
            config = load_config(site["config"], environ={})
            assert {p.kind for p in config.device_plans()} >= {"sign", "camera", "weather"}
        checked = subprocess.run(
            [sys.executable, "-m", "ioc.cli", "edge", "check", doc["sites"][0]["config"]],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr.decode()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--sites", "0"], b"sites must be 1..100, not 0"),
        (["--cameras-per-site", "11"], b"cameras_per_site must be 0..10, not 11"),
        (["--broker-port", "0"], b"--broker-port must be 1..65535, not 0"),
    ],
)
def test_cli_refuses_bad_arguments_naming_them(tmp_path: Path, args: list[str], problem: bytes) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ioc.cli", "sim", "city", "--out", str(tmp_path), "--no-rtsp", *args],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert problem in done.stderr
    assert done.stdout == b""
