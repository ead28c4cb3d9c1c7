"""``ioc edge check``: the plan on stdout and exit 0, or the problems on stderr and exit 2."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge import cli

ROOT = Path(__file__).parents[3]

VALID: dict[str, Any] = {
    "site": "site-a",
    "gateway": "gw-1",
    "broker": {"host": "127.0.0.1"},
    "devices": [
        {
            "id": "weather-1",
            "driver": "modbus_tcp",
            "profile": "xy-md02",
            "interval_s": 10,
            "options": {"host": "10.0.0.2", "unit_id": 3},
        },
        {
            "id": "aq-1",
            "driver": "modbus_tcp",
            "profile": "pm-sensor-rs485",
            "interval_s": 5,
            "timeout_s": 2,
            "options": {"host": "10.0.0.2", "unit_id": 4},
        },
    ],
}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ioc edge")
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_check_prints_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID)
    assert cli.main(parse("check", str(path))) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f"{path}: valid"
    assert "gateway site-a/gw-1: broker 127.0.0.1:1883" in lines[1]
    assert "2 devices:" in lines
    assert "  weather-1: driver modbus_tcp, profile xy-md02, kind weather, every 10 s, timeout 10 s" in lines
    assert "  aq-1: driver modbus_tcp, profile pm-sensor-rs485, kind air_quality, every 5 s, timeout 2 s" in lines
    # The driver's own plan lines, under each device.
    head = "  weather-1: driver modbus_tcp, profile xy-md02, kind weather, every 10 s, timeout 10 s"
    weather_plan = lines[lines.index(head) + 1]
    assert weather_plan.strip() == "fc4 input 1..2 (0x0001..0x0002, 2 registers): temperature_c, humidity_pct"
    assert err == ""


def test_check_refuses_a_bad_config_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = {**VALID["devices"][0], "id": "weather-2", "options": {"port": 1}}
    doc = {**VALID, "devices": [*VALID["devices"], extra]}
    path = write(tmp_path, doc)
    assert cli.main(parse("check", str(path))) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{path}: devices[2] (id 'weather-2'): options.host: missing (required)" in err


def test_ioc_edge_check_end_to_end(tmp_path: Path) -> None:
    """Through the ``ioc`` console entry point, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("IOC_EDGE_")}
    good = write(tmp_path, VALID)
    run = subprocess.run(
        [sys.executable, "-m", "ioc.cli", "edge", "check", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "kind air_quality" in run.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**VALID, "gateway": "GW 1"}), encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "ioc.cli", "edge", "check", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert run.returncode == 2
    assert f"{bad}: gateway: String should match pattern" in run.stderr
    assert run.stdout == ""
