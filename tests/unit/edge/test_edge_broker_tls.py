"""TLS to a broker off this machine is required: ``ioc edge check`` refuses plain TCP to it naming
``broker.tls``, unless ``broker.allow_plain_tcp`` says otherwise, and then the agent warns at start."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge import cli

DEVICE: dict[str, Any] = {
    "id": "weather-1",
    "driver": "modbus_tcp",
    "profile": "xy-md02",
    "interval_s": 10,
    "options": {"host": "127.0.0.1", "port": 1, "unit_id": 3},
}


def doc(**broker: Any) -> dict[str, Any]:
    return {"site": "site-a", "gateway": "gw-1", "broker": broker, "devices": [DEVICE]}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ioc edge")
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("host", ["mqtt.city.example", "10.0.0.5", "::ffff:10.0.0.5", "2001:db8::1"])
def test_plain_tcp_to_a_remote_broker_is_refused_naming_the_field(
    host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, doc(host=host))
    assert cli.main(parse("check", str(path))) == 2
    _, err = capsys.readouterr()
    assert (
        f"{path}: broker: broker.tls is off for the broker {host!r}, which is not on loopback: turn broker.tls on"
        in err
    )
    assert "or set broker.allow_plain_tcp for a private network" in err


@pytest.mark.parametrize(
    "broker",
    [
        {"host": "127.0.0.1"},
        {"host": "127.8.9.10"},
        {"host": "localhost"},
        {"host": "::1"},
        {"host": "mqtt.city.example", "tls": True, "port": 8883},
        {"host": "mqtt.city.example", "allow_plain_tcp": True},
    ],
)
def test_loopback_tls_or_an_explicit_allowance_pass(
    broker: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(parse("check", str(write(tmp_path, doc(**broker))))) == 0, capsys.readouterr().err


@pytest.mark.timeout(60)
def test_the_agent_warns_at_start_when_plain_tcp_to_a_remote_broker_is_allowed(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never routed, so the agent only keeps trying to connect.
    data = doc(host="192.0.2.1", allow_plain_tcp=True, connect_timeout_s=1)
    data["publish"] = {"outbox_path": ":memory:"}
    path = write(tmp_path, data)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("IOC_EDGE_")}
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ioc.cli", "edge", "run", str(path)], env=env, stdout=out, stderr=out
        )
        try:
            deadline = time.monotonic() + 40
            expected = "plain TCP to the broker '192.0.2.1', which is not on loopback (broker.allow_plain_tcp)"
            while expected not in log.read_text(errors="replace"):
                assert proc.poll() is None, log.read_text(errors="replace")
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    assert "WARNING" in next(line for line in log.read_text().splitlines() if expected in line)
