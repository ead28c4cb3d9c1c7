"""Hub settings: defaults, sources and their priority, and errors that name the file or variable and the field."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hub_settings_support import hub_env_only, write_hub_yaml

from hub.config import HubSettings, load_settings
from hub.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    hub_env_only(monkeypatch)


def test_defaults() -> None:
    s = load_settings()
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.session_expiry_s, s.mqtt.shared_group) == ("127.0.0.1", 1883, 3600, None)
    assert s.mqtt.client_id == f"ioc-hub-{socket.gethostname()}"
    assert (s.influx.url, s.influx.database, s.influx.timeout_s, s.influx.api) == (
        "http://127.0.0.1:8086",
        "ioc",
        10.0,
        "v1",
    )
    assert (s.batch.max_lines, s.batch.max_delay_ms, s.batch.max_in_flight, s.batch.max_pending_messages) == (
        5000,
        250,
        2,
        20000,
    )
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8080)


def test_file_then_environment_overrides_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_hub_yaml(tmp_path, "mqtt:\n  port: 1999\n  username: hub\ninflux:\n  url: http://db:8086/\n")
    monkeypatch.setenv("IOC_HUB_MQTT__PORT", "2000")
    monkeypatch.setenv("IOC_HUB_HTTP__PORT", "0")
    s = load_settings(path)
    assert s.mqtt.port == 2000  # environment wins
    assert s.mqtt.username == "hub"  # the file's other keys in the same section stay
    assert s.influx.url == "http://db:8086"  # trailing slash removed
    assert s.http.port == 0


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("mqtt:\n  port: 99999\n", "hub.yaml: mqtt.port: Input should be less than or equal to 65535 (got 99999)"),
        ("mqtt:\n  hsot: broker\n", "hub.yaml: mqtt.hsot: unknown key"),
        ("mqt:\n  host: broker\n", "hub.yaml: mqt: unknown key"),
        ("batch:\n  max_lines: 0\n", "hub.yaml: batch.max_lines: Input should be greater than or equal to 1"),
        ("influx:\n  url: db:8086\n", "hub.yaml: influx.url: must be an http:// or https:// URL"),
        ("influx:\n  api: v3\n", "hub.yaml: influx.api: Input should be 'v1' or 'v2'"),
        ("mqtt:\n  shared_group: Hubs!\n", "hub.yaml: mqtt.shared_group: String should match pattern"),
        ("mqtt:\n  shared_group: hubs\n", "mqtt.shared_group is set: set mqtt.observe to 'all' on the one hub"),
        ("mqtt:\n  observe: everything\n", "hub.yaml: mqtt.observe: Input should be 'share', 'all' or 'none'"),
        (
            f"mqtt:\n  shared_group: hubs\n  observe: all\n  client_id: {'h' * 125}\n",
            "mqtt.client_id is too long for mqtt.observe 'all'",
        ),
        (
            "mqtt:\n  ca_file: /nonexistent/ca.pem\n  tls: true\n",
            "hub.yaml: mqtt.ca_file: Path does not point to a file",
        ),
    ],
)
def test_file_errors_name_the_file_and_the_field(tmp_path: Path, yaml_text: str, expected: str) -> None:
    path = write_hub_yaml(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert expected.replace("hub.yaml", str(path)) in str(info.value)


def test_environment_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOC_HUB_MQTT__PORT", "abc")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "environment variable IOC_HUB_MQTT__PORT: mqtt.port: Input should be a valid integer" in str(info.value)


def test_unknown_environment_keys_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOC_HUB_MQTT__HSOT", "broker")
    with pytest.raises(ConfigError, match=r"environment variable IOC_HUB_MQTT__HSOT: mqtt\.hsot: unknown key"):
        load_settings()
    monkeypatch.delenv("IOC_HUB_MQTT__HSOT")
    monkeypatch.setenv("IOC_HUB_MQTTT__HOST", "broker")
    with pytest.raises(ConfigError, match=r"environment variable IOC_HUB_MQTTT__HOST: unknown setting section 'mqttt'"):
        load_settings()


def test_yaml_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write_hub_yaml(tmp_path, "mqtt: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(write_hub_yaml(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_settings(tmp_path / "missing.yaml")
    assert load_settings(write_hub_yaml(tmp_path, "")) == HubSettings()


@pytest.mark.parametrize("secret_field", ["mqtt", "influx"])
def test_placeholder_secret_refused_unless_broker_on_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret_field: str
) -> None:
    yaml_text = {
        "mqtt": "mqtt:\n  host: broker.city.example\n  tls: true\n  password: changeme\n",
        "influx": "mqtt:\n  host: broker.city.example\n  tls: true\ninflux:\n  password: changeme\n",
    }[secret_field]
    path = write_hub_yaml(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert f"{path}: {secret_field}.password: is a placeholder secret" in str(info.value)
    assert "changeme" not in str(info.value)  # never echo a secret
    monkeypatch.setenv("IOC_HUB_MQTT__HOST", "127.0.0.1")
    assert load_settings(path).mqtt.host == "127.0.0.1"


def test_placeholder_secret_from_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOC_HUB_MQTT__HOST", "10.0.0.5")
    monkeypatch.setenv("IOC_HUB_MQTT__TLS", "true")
    monkeypatch.setenv("IOC_HUB_INFLUX__PASSWORD", "ChangeMe")
    with pytest.raises(ConfigError, match=r"environment variable IOC_HUB_INFLUX__PASSWORD: influx\.password: is a"):
        load_settings()


def test_password_values_are_never_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write_hub_yaml(tmp_path, "mqtt:\n  password: [s3cret-list]\n"))
    assert "mqtt.password" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_tls_ca_file_requires_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ConfigError, match=r"mqtt: mqtt\.ca_file is set but mqtt\.tls is off"):
        load_settings(write_hub_yaml(tmp_path, f"mqtt:\n  ca_file: {ca}\n"))
