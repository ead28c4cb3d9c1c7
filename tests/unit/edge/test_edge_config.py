"""The gateway config: every error names the file (or variable), the device and the field; env beats file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.config import DeviceConfig, EdgeConfig, load_config
from edge.errors import ConfigError

EXAMPLE = Path(__file__).parents[3] / "edge" / "examples" / "gateway.yaml"


@pytest.fixture(autouse=True)
def _no_edge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own IOC_EDGE_* variables must not leak into these cases."""
    for name in list(os.environ):
        if name.upper().startswith("IOC_EDGE_"):
            monkeypatch.delenv(name)


def device(device_id: str, **overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": device_id,
        "driver": "modbus_tcp",
        "profile": "xy-md02",
        "interval_s": 5,
        "options": {"host": "10.0.0.2", "port": 502, "unit_id": 1},
    }
    entry.update(overrides)
    return entry


def base_doc() -> dict[str, Any]:
    return {
        "site": "site-a",
        "gateway": "gw-1",
        "broker": {"host": "127.0.0.1", "username": "site-a.gw-1", "password": "file-secret"},
        "devices": [device("aq-1"), device("aq-2")],
    }


def write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc, encoding="utf-8")
    return path


# The errors a file alone produces (unknown keys, bad ids, missing fields, bad driver options, duplicate ids,
# secrets never echoed, files that are not YAML) are golden cases: tests/golden/edge_check/<case>/.


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "absent.yaml")


def test_environment_beats_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, base_doc())
    monkeypatch.setenv("IOC_EDGE_BROKER__PASSWORD", "env-secret")
    monkeypatch.setenv("IOC_EDGE_BROKER__PORT", "1999")
    monkeypatch.setenv("IOC_EDGE_PUBLISH__MAX_DELAY_MS", "250")
    config = load_config(path)
    assert config.broker.password is not None
    assert config.broker.password.get_secret_value() == "env-secret"
    assert config.broker.port == 1999
    assert config.publish.max_delay_ms == 250
    # The rest of each section still comes from the file.
    assert config.broker.host == "127.0.0.1"
    assert config.broker.username == "site-a.gw-1"
    assert [d.id for d in config.devices] == ["aq-1", "aq-2"]


def test_a_bad_environment_value_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, base_doc())
    monkeypatch.setenv("IOC_EDGE_BROKER__KEEPALIVE_S", "often")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "environment variable IOC_EDGE_BROKER__KEEPALIVE_S: broker.keepalive_s:" in str(info.value)


@pytest.mark.parametrize("variable", ["IOC_EDGE_BROKRE__HOST", "IOC_EDGE_DEVICE"])
def test_an_unknown_environment_variable_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    path = write(tmp_path, base_doc())
    monkeypatch.setenv(variable, "x")
    with pytest.raises(ConfigError, match=f"environment variable {variable}: unknown setting"):
        load_config(path)


def test_defaults_and_plan(tmp_path: Path) -> None:
    doc = base_doc()
    doc["devices"].append(device("aq-3", interval_s=60, timeout_s=4.5, profile="pm-sensor-rs485"))
    config = load_config(write(tmp_path, doc))
    assert config.broker.port == 1883
    assert config.broker.keepalive_s == 30
    assert config.broker.connect_timeout_s == 10
    assert config.broker.tls is False
    assert (config.publish.max_batch, config.publish.max_delay_ms) == (500, 1000)
    # The outbox is bounded in bytes; a cap on the count of readings is only there if asked for.
    assert (config.publish.outbox_max_bytes, config.publish.outbox_max) == (256 * 1024 * 1024, None)
    plans = config.device_plans()
    assert [(p.id, p.kind, p.interval_s, p.timeout_s) for p in plans] == [
        ("aq-1", "weather", 5, 5),
        ("aq-2", "weather", 5, 5),
        ("aq-3", "air_quality", 60, 4.5),
    ]
    assert plans[2].describe()[1].strip().startswith("fc4 input")
    assert config.device_plans() is plans  # built once, reused by the agent


def test_poll_timeout_default_is_the_interval_capped_at_10_s() -> None:
    short = DeviceConfig(id="a", driver="modbus_tcp", profile="xy-md02", interval_s=2)
    long = DeviceConfig(id="b", driver="modbus_tcp", profile="xy-md02", interval_s=60)
    assert (short.poll_timeout_s, long.poll_timeout_s) == (2, 10)


def test_the_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert isinstance(config, EdgeConfig)
    assert len(config.devices) == 4
    assert {p.kind for p in config.device_plans()} == {"air_quality", "weather", "water_level", "power_meter"}


def test_environment_names_are_case_insensitive_and_sections_take_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, base_doc())
    monkeypatch.setenv("ioc_edge_broker__Port", "2001")
    monkeypatch.setenv("IOC_EDGE_SELF_METRICS", '{"enabled": false}')
    monkeypatch.setenv(
        "IOC_EDGE_DEVICES",
        '[{"id": "env-1", "driver": "modbus_tcp", "profile": "xy-md02", '
        '"interval_s": 2, "options": {"host": "10.0.0.9"}}]',
    )
    config = load_config(path)
    assert config.broker.port == 2001
    assert config.self_metrics.enabled is False
    assert [(d.id, d.interval_s) for d in config.devices] == [("env-1", 2)]  # a list is replaced whole


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"IOC_EDGE_BROKER": "{host: x"}, "environment variable IOC_EDGE_BROKER: not valid JSON"),
        ({"IOC_EDGE_BROKER__": "x"}, "environment variable IOC_EDGE_BROKER__: empty name"),
        (
            {"IOC_EDGE_DEVICES": "[]", "IOC_EDGE_DEVICES__ID": "x"},
            "environment variable IOC_EDGE_DEVICES__ID: 'devices' is also set whole by another variable",
        ),
        ({"IOC_EDGE_BROKER__TLSS": "true"}, "environment variable IOC_EDGE_BROKER__TLSS: broker.tlss: unknown key"),
    ],
)
def test_bad_environment_variables_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    path = write(tmp_path, base_doc())
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
