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


def with_change(change: Any) -> dict[str, Any]:
    doc = base_doc()
    change(doc)
    return doc


def _set_device(index: int, **fields: Any) -> Any:
    def change(doc: dict[str, Any]) -> None:
        doc["devices"][index].update(fields)

    return change


def _set_option(index: int, **options: Any) -> Any:
    def change(doc: dict[str, Any]) -> None:
        doc["devices"][index]["options"].update(options)

    return change


# (case id, change to the valid document, substrings the error message must contain)
ERROR_CASES: list[tuple[str, Any, list[str]]] = [
    ("unknown top-level key", lambda d: d.update(brokr={}), ["gateway.yaml: brokr: unknown key"]),
    (
        "unknown key in a device",
        _set_device(1, colour="red"),
        ["gateway.yaml: devices[1] (id 'aq-2'): colour: unknown key"],
    ),
    ("unknown broker key", lambda d: d["broker"].update(hots="x"), ["gateway.yaml: broker.hots: unknown key"]),
    ("bad site id", lambda d: d.update(site="Site A"), ["gateway.yaml: site: String should match pattern"]),
    ("bad gateway id", lambda d: d.update(gateway="gw/1"), ["gateway.yaml: gateway: String should match pattern"]),
    (
        "bad device id",
        _set_device(1, id="AQ_2"),
        ["gateway.yaml: devices[1] (id 'AQ_2'): id: String should match pattern"],
    ),
    ("bad broker port type", lambda d: d["broker"].update(port="mqtt"), ["gateway.yaml: broker.port: Input should be"]),
    (
        "bad option port type",
        _set_option(1, port="five-oh-two"),
        ["gateway.yaml: devices[1] (id 'aq-2'): options.port: Input should be a valid integer"],
    ),
    (
        "unknown option",
        _set_option(0, colour="red"),
        ["gateway.yaml: devices[0] (id 'aq-1'): options.colour: unknown key"],
    ),
    (
        "missing option",
        lambda d: d["devices"][1]["options"].pop("host"),
        ["gateway.yaml: devices[1] (id 'aq-2'): options.host: missing (required)"],
    ),
    (
        "duplicate device id",
        _set_device(1, id="aq-1"),
        ["gateway.yaml: devices[1] (id 'aq-1'): id: duplicate device id (already used by devices[0])"],
    ),
    (
        "unknown driver",
        _set_device(1, driver="modbus_udp"),
        ["gateway.yaml: devices[1] (id 'aq-2'): driver: unknown driver 'modbus_udp'", "modbus_tcp"],
    ),
    (
        "unknown profile",
        _set_device(1, profile="no-such-meter"),
        ["gateway.yaml: devices[1] (id 'aq-2'): profile: unknown profile 'no-such-meter'", "xy-md02"],
    ),
    (
        "missing interval",
        lambda d: d["devices"][1].pop("interval_s"),
        ["gateway.yaml: devices[1] (id 'aq-2'): interval_s: missing (required)"],
    ),
    (
        "device without an id is named by index",
        lambda d: d["devices"][1].pop("id"),
        ["gateway.yaml: devices[1]: id: missing (required)"],
    ),
    (
        "zero interval",
        _set_device(0, interval_s=0),
        ["gateway.yaml: devices[0] (id 'aq-1'): interval_s: Input should be greater than or equal to 0.1"],
    ),
    ("ca_file without tls", lambda d: d["broker"].update(ca_file=__file__), ["broker.ca_file is set but broker.tls"]),
    (
        "batch larger than the outbox",
        lambda d: d.update(publish={"max_batch": 1000, "outbox_max": 10}),
        ["gateway.yaml: publish: publish.outbox_max is smaller than publish.max_batch"],
    ),
    ("missing broker", lambda d: d.pop("broker"), ["gateway.yaml: broker: missing (required)"]),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_config_errors_name_file_device_and_field(tmp_path: Path, change: Any, expected: list[str]) -> None:
    path = write(tmp_path, with_change(change))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value).replace(str(path), "gateway.yaml")
    for part in expected:
        assert part in message


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    doc = base_doc()
    doc["devices"][0]["options"]["port"] = "x"
    doc["devices"][1]["profile"] = "nope"
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert "devices[0] (id 'aq-1'): options.port:" in lines[0]
    assert "devices[1] (id 'aq-2'): profile: unknown profile 'nope'" in lines[1]


def test_a_password_is_never_echoed(tmp_path: Path) -> None:
    doc = base_doc()
    doc["broker"]["password"] = ["hunter2"]
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "broker.password" in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("site: [unclosed", "not valid YAML"), ("- a\n- b\n", "top level must be a mapping")],
    ids=["bad yaml", "not a mapping"],
)
def test_unreadable_documents(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path)
    assert str(path) in str(info.value)


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
