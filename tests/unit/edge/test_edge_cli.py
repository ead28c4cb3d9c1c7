"""``ioc edge check``: the plan on stdout and exit 0, or the problems on stderr and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

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


def write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


# What the check prints for a given config (the plan, or each problem and exit 2) is pinned by the golden cases
# in tests/golden/edge_check/; here, what needs the command itself (the console entry point, ``run``).


def ioc_edge(command: str, path: Path) -> subprocess.CompletedProcess[str]:
    """``ioc edge <command> <path>`` in a child process, without the developer's own IOC_EDGE_ variables."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("IOC_EDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "ioc.cli", "edge", command, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )


def test_ioc_edge_check_end_to_end(tmp_path: Path) -> None:
    """Through the ``ioc`` console entry point, as an operator runs it."""
    good = write(tmp_path, VALID)
    run = ioc_edge("check", good)
    assert run.returncode == 0, run.stderr
    assert "kind air_quality" in run.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**VALID, "gateway": "GW 1"}), encoding="utf-8")
    run = ioc_edge("check", bad)
    assert run.returncode == 2
    assert f"{bad}: gateway: String should match pattern" in run.stderr
    assert run.stdout == ""


def test_ioc_edge_run_refuses_a_bad_device_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    bad_device = {**VALID["devices"][0], "id": "weather-2", "options": {"host": "10.0.0.2", "port": "nope"}}
    path = write(tmp_path, {**VALID, "devices": [VALID["devices"][0], bad_device]})
    run = ioc_edge("run", path)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert "ioc edge run: invalid config" in run.stderr
    assert f"{path}: devices[1] (id 'weather-2'): options.port: Input should be a valid integer" in run.stderr


@pytest.mark.parametrize(
    ("publish_or_broker", "expected"),
    [
        ({"publish": {"outbox_path": "/proc/no-such-dir/outbox.sqlite"}}, "publish.outbox_path: outbox "),
        ({"broker": {"host": "127.0.0.1", "tls": True, "ca_file": "CA"}}, "broker.ca_file: cannot load "),
    ],
    ids=["outbox-folder", "ca-file"],
)
def test_ioc_edge_run_names_the_file_and_field_of_what_only_start_up_finds(
    tmp_path: Path, publish_or_broker: dict[str, Any], expected: str
) -> None:
    """Problems the schema cannot see (a folder that cannot be made, a CA file that is not PEM) still end in
    the config error and exit 2, not a traceback."""
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("this is not a certificate\n", encoding="utf-8")
    section = {
        key: {k: (str(not_pem) if v == "CA" else v) for k, v in value.items()}
        for key, value in publish_or_broker.items()
    }
    path = write(tmp_path, {**VALID, **section})
    run = ioc_edge("run", path)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert f"ioc edge run: invalid config\n{path}: {expected}" in run.stderr
