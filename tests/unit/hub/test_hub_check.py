"""``ioc hub check``: the settings, rules and inventory checked without starting anything; ``--env-file`` reads a
systemd environment file as the unit would get it; secrets are never printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub.cli import read_env_file
from hub.errors import ConfigError


def run_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("IOC_HUB_")}
    return subprocess.run(
        [sys.executable, "-m", "ioc.cli", "hub", "check", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_good_settings_are_described_without_secrets(tmp_path: Path) -> None:
    env_file = tmp_path / "hub.env"
    env_file.write_text(
        "# rendered by the hub role\n"
        'IOC_HUB_MQTT__HOST="broker.city.example"\n'
        "IOC_HUB_MQTT__ALLOW_PLAIN_TCP=true\n"
        'IOC_HUB_MQTT__USERNAME="hub"\n'
        'IOC_HUB_MQTT__PASSWORD="s3cr\\"et"\n'
        'IOC_HUB_REGISTRY__URL="sqlite:////var/lib/ioc-hub/hub.db"\n'
        "IOC_HUB_INFLUX__DATABASE=city\n",
        encoding="utf-8",
    )
    # A variable of the calling shell must not leak into what the unit would get.
    result = run_check("--env-file", str(env_file), env={"IOC_HUB_MQTT__PORT": "not-a-port"})
    assert result.returncode == 0, result.stderr
    assert "broker     mqtt://broker.city.example:1883 as hub" in result.stdout
    assert "database city" in result.stdout
    assert "operations what this hub stores" in result.stdout
    assert "sqlite:////var/lib/ioc-hub/hub.db" in result.stdout
    assert result.stdout.endswith("settings ok\n")
    assert "s3cr" not in result.stdout + result.stderr


def test_a_shared_group_needs_observe_and_says_which_side_this_hub_plays(tmp_path: Path) -> None:
    env_file = tmp_path / "hub.env"
    env_file.write_text("IOC_HUB_MQTT__SHARED_GROUP=hubs\n", encoding="utf-8")
    result = run_check("--env-file", str(env_file))
    assert result.returncode == 2
    assert "mqtt.shared_group is set: set mqtt.observe to 'all' on the one hub" in result.stderr
    env_file.write_text("IOC_HUB_MQTT__SHARED_GROUP=hubs\nIOC_HUB_MQTT__OBSERVE=all\n", encoding="utf-8")
    result = run_check("--env-file", str(env_file))
    assert result.returncode == 0, result.stderr
    assert ", shared group hubs" in result.stdout
    assert "operations every gateway, on its own connection (the operations hub)" in result.stdout


def test_the_api_is_https_when_the_tls_files_are_set(tmp_path: Path) -> None:
    plain = run_check(env={"IOC_HUB_HTTP__HOST": "10.0.0.5", "IOC_HUB_HTTP__PORT": "8443"})
    assert plain.returncode == 0, plain.stderr
    assert "api        http://10.0.0.5:8443\n" in plain.stdout
    cert, key = tmp_path / "hub.crt", tmp_path / "hub.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")  # only named: check reads neither file
    key.write_text("-----BEGIN PRIVATE KEY-----\n", encoding="utf-8")
    tls = {"IOC_HUB_HTTP__TLS_CERT_FILE": str(cert), "IOC_HUB_HTTP__TLS_KEY_FILE": str(key)}
    result = run_check(env={"IOC_HUB_HTTP__HOST": "10.0.0.5", "IOC_HUB_HTTP__PORT": "8443", **tls})
    assert result.returncode == 0, result.stderr
    assert "api        https://10.0.0.5:8443\n" in result.stdout
    assert "api        http://" not in result.stdout


def test_postgres_password_is_masked(tmp_path: Path) -> None:
    result = run_check(env={"IOC_HUB_REGISTRY__URL": "postgresql+psycopg://ioc:hunter2@db.city/ioc"})
    assert result.returncode == 0, result.stderr
    assert "postgresql+psycopg://ioc:***@db.city/ioc" in result.stdout
    assert "hunter2" not in result.stdout


def test_url_without_user_and_unsupported_database(tmp_path: Path) -> None:
    masked = run_check(env={"IOC_HUB_REGISTRY__URL": "postgresql+psycopg://:hunter2@db.city/ioc"})
    assert masked.returncode == 0, masked.stderr
    assert "hunter2" not in masked.stdout
    refused = run_check(env={"IOC_HUB_REGISTRY__URL": "mysql://ioc:hunter2@db.city/ioc"})
    assert refused.returncode == 2
    assert "registry.url" in refused.stderr
    assert "hunter2" not in refused.stderr


def test_bad_value_in_the_env_file_exits_2_naming_file_variable_and_field(tmp_path: Path) -> None:
    env_file = tmp_path / "hub.env"
    env_file.write_text('IOC_HUB_MQTT__PORT="abc"\n', encoding="utf-8")
    result = run_check("--env-file", str(env_file))
    assert result.returncode == 2
    assert f"ioc hub check: {env_file}: " in result.stderr
    assert "IOC_HUB_MQTT__PORT: mqtt.port" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_rules_file_is_a_config_error(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: x\n    kind: nonsense\n", encoding="utf-8")
    result = run_check(env={"IOC_HUB_ALERTS__RULES_FILE": str(rules)})
    assert result.returncode == 2
    assert str(rules) in result.stderr
    assert "Traceback" not in result.stderr


def test_the_example_rules_pass(tmp_path: Path) -> None:
    example = Path(__file__).parents[3] / "hub" / "alerts" / "example-rules.yaml"
    result = run_check(env={"IOC_HUB_ALERTS__RULES_FILE": str(example)})
    assert result.returncode == 0, result.stderr
    assert f"rules      {example}" in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('A="x y"\n', {"A": "x y"}),
        ("A='it''s'\n", {"A": "it''s"}),
        ('A="back\\\\slash \\"q\\" $HOME"\n', {"A": 'back\\slash "q" $HOME'}),
        ("export B=plain\n\n# c\n; d\n", {"B": "plain"}),
        ("C=\n", {"C": ""}),
    ],
)
def test_env_file_lines(tmp_path: Path, text: str, expected: dict[str, str]) -> None:
    path = tmp_path / "x.env"
    path.write_text(text, encoding="utf-8")
    assert read_env_file(path) == expected


def test_env_file_garbage_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text("A=1\nthis is not a variable\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"x\.env:2: not a KEY=value line"):
        read_env_file(path)
    with pytest.raises(ConfigError, match="cannot read"):
        read_env_file(tmp_path / "missing.env")
