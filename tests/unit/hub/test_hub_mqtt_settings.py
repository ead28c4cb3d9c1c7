"""The hub's broker settings: TLS required for a broker off this machine unless ``mqtt.allow_plain_tcp`` (then a
warning at start); one account per connection (intake, observer, commands), the intake's where one is unset."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from hub_settings_support import hub_env_only

from hub.config import MqttSettings, load_settings
from hub.errors import ConfigError
from hub.mqtt.intake import IntakeQueue, MqttIntake


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("IOC_HUB_")}
    return subprocess.run(
        [sys.executable, "-m", "ioc.cli", "hub", "check"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_ioc_hub_check_refuses_plain_tcp_to_a_remote_broker_naming_the_field() -> None:
    result = run_check({"IOC_HUB_MQTT__HOST": "broker.city.example"})
    assert result.returncode == 2
    assert (
        "settings: mqtt.tls: is off for the broker 'broker.city.example', which is not on loopback: turn mqtt.tls "
        "on (passwords and data would cross the network in the clear), or set mqtt.allow_plain_tcp for a private "
        "network" in result.stderr
    )


def test_ioc_hub_check_accepts_tls_or_the_explicit_allowance() -> None:
    for extra in ({"IOC_HUB_MQTT__TLS": "true"}, {"IOC_HUB_MQTT__ALLOW_PLAIN_TCP": "true"}):
        result = run_check({"IOC_HUB_MQTT__HOST": "10.1.2.3", **extra})
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_needs_no_tls(host: str) -> None:
    assert MqttSettings(host=host).tls is False


async def test_the_intake_warns_at_start_when_plain_tcp_to_a_remote_broker_is_allowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never routed; the warning comes before any connection attempt.
    settings = MqttSettings(host="192.0.2.1", allow_plain_tcp=True, connect_timeout_s=0.5, client_id="hub-t")
    with caplog.at_level(logging.WARNING, logger="hub.mqtt"):
        async with MqttIntake(settings, IntakeQueue(10)):
            pass
    expected = (
        "MQTT: plain TCP to the broker 192.0.2.1, which is not on loopback (mqtt.allow_plain_tcp): the hub's "
        "passwords and every gateway's data cross the network in the clear"
    )
    assert [r.getMessage() for r in caplog.records if "plain TCP" in r.getMessage()] == [expected]


def test_each_connection_has_its_own_account_and_falls_back_to_the_intakes() -> None:
    s = MqttSettings(
        username="hub",
        password="a",
        observer_username="hub-observe",
        observer_password="b",
        command_username="hub-cmd",
        command_password="c",
    )
    assert s.credentials("intake") == ("hub", "a")
    assert s.credentials("observer") == ("hub-observe", "b")
    assert s.credentials("command") == ("hub-cmd", "c")
    only = MqttSettings(username="hub", password="a")
    assert only.credentials("observer") == only.credentials("command") == ("hub", "a")


def test_an_account_half_set_is_refused_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    env = hub_env_only(monkeypatch, {"IOC_HUB_MQTT__COMMAND_USERNAME": "hub-cmd"})
    with pytest.raises(ConfigError) as err:
        load_settings(None, env)
    expected = "environment variable IOC_HUB_MQTT__COMMAND_USERNAME: mqtt.command_username: and mqtt.command_password"
    assert f"{expected} are set together" in str(err.value)


def test_placeholder_passwords_of_the_other_accounts_are_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    env = hub_env_only(
        monkeypatch,
        {
            "IOC_HUB_MQTT__HOST": "broker.city.example",
            "IOC_HUB_MQTT__TLS": "true",
            "IOC_HUB_MQTT__OBSERVER_USERNAME": "hub-observe",
            "IOC_HUB_MQTT__OBSERVER_PASSWORD": "changeme",
        },
    )
    with pytest.raises(ConfigError) as err:
        load_settings(None, env)
    assert "mqtt.observer_password: is a placeholder secret" in str(err.value)
    assert "changeme" not in str(err.value)
