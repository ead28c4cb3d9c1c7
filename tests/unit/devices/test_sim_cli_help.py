"""``ioc sim``'s help names every simulator it runs, not only Modbus."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _help(*argv: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "ioc.cli", *argv, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return " ".join(run.stdout.split())


def test_the_top_level_help_line_names_every_simulator() -> None:
    text = _help()
    assert "run device simulators: Modbus sensors, an NTCIP sign, ONVIF/RTSP cameras, or a whole simulated city" in text
    assert "(Modbus...)" not in text


def test_ioc_sim_help_lists_each_simulator_and_its_protocol() -> None:
    text = _help("sim")
    for name in ("modbus", "ntcip", "camera", "city"):
        assert name in text
    for protocol in ("Modbus TCP", "NTCIP 1203", "ONVIF", "RTSP"):
        assert protocol in text
