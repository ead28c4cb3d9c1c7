"""What we ship as an example must work: the example gateway config passes `ioc edge check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from ioc.cli import main

ROOT = Path(__file__).parents[2]


def test_example_gateway_config_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["edge", "check", str(ROOT / "edge" / "examples" / "gateway.yaml")]) == 0
    out = capsys.readouterr().out
    assert "edge/examples/gateway.yaml: valid" in out
    for device in ("aq-01", "weather-01", "water-01", "power-01"):
        assert f"  {device}: driver modbus_tcp" in out


def test_bad_config_exits_2_naming_file_device_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = (ROOT / "edge" / "examples" / "gateway.yaml").read_text()
    bad = tmp_path / "gw.yaml"
    bad.write_text(
        example.replace("options: {host: 10.20.7.2, port: 502, unit_id: 3}", "options: {host: 10.20.7.2, port: x}")
    )
    assert main(["edge", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "gw.yaml" in err
    assert "water-01" in err
    assert "port" in err


def test_unknown_subcommand_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["nonsense"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
