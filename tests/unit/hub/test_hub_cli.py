"""``ioc hub``: bad settings stop it with exit code 2 and a message naming the file or variable and the field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_hub_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("IOC_HUB_")}
    return subprocess.run(
        [sys.executable, "-m", "ioc.cli", "hub", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_bad_file_exits_2_naming_file_and_field(tmp_path: Path) -> None:
    config = tmp_path / "hub.yaml"
    config.write_text("mqtt:\n  port: 0\nhttp:\n  prot: 8080\n", encoding="utf-8")
    result = run_hub_cli("--config", str(config))
    assert result.returncode == 2
    assert f"{config}: mqtt.port: Input should be greater than or equal to 1 (got 0)" in result.stderr
    assert f"{config}: http.prot: unknown key" in result.stderr


def test_bad_environment_exits_2_naming_the_variable() -> None:
    result = run_hub_cli(env={"IOC_HUB_BATCH__MAX_IN_FLIGHT": "lots"})
    assert result.returncode == 2
    assert "environment variable IOC_HUB_BATCH__MAX_IN_FLIGHT: batch.max_in_flight" in result.stderr


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = run_hub_cli("--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml: cannot read the config file" in result.stderr
