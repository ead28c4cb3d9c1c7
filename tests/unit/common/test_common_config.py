"""common.config: the YAML file as a mapping, unknown environment sections refused, loopback hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import is_loopback, read_yaml_mapping, refuse_unknown_env


class LoaderError(Exception):
    """Stands for a loader's own config error (edge.errors.ConfigError, hub.errors.ConfigError)."""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("# only a comment\n", {}),
        ("site: a\nport: 1883\n", {"site": "a", "port": 1883}),
        ("1: one\n2.5: x\n", {"1": "one", "2.5": "x"}),  # keys as text
        ("mqtt:\n  host: h\n", {"mqtt": {"host": "h"}}),
    ],
)
def test_reads_the_top_level_mapping(tmp_path: Path, text: str, expected: dict[str, object]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    assert read_yaml_mapping(path, top_level="(a, b)", error=LoaderError) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "{path}: the top level must be a mapping (site, gateway)"),
        ("just text\n", "{path}: the top level must be a mapping (site, gateway)"),
        ("site: [unclosed\n", "{path}: not valid YAML: "),
    ],
)
def test_a_bad_file_is_the_callers_error_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LoaderError) as caught:
        read_yaml_mapping(path, top_level="(site, gateway)", error=LoaderError)
    assert str(caught.value).startswith(message.format(path=path))
    if "YAML" in message:
        assert "while parsing a flow sequence" in str(caught.value)


def test_a_missing_file_is_the_callers_error(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(LoaderError) as caught:
        read_yaml_mapping(path, top_level="(a)", error=LoaderError)
    assert str(caught.value) == f"{path}: cannot read the config file: No such file or directory"
    assert isinstance(caught.value.__cause__, FileNotFoundError)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"PATH": "/bin", "IOC_HUBX": "other prefix, other program"},
        {"IOC_HUB_MQTT__HOST": "h", "ioc_hub_influx__url": "u", "IOC_HUB_Mqtt": "{}"},
    ],
)
def test_known_sections_and_other_variables_pass(env: dict[str, str]) -> None:
    refuse_unknown_env(env, "IOC_HUB_", ["mqtt", "influx"], noun="setting section", error=LoaderError)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"IOC_HUB_MQTTT__HOST": "h"},
            "environment variable IOC_HUB_MQTTT__HOST: unknown setting section 'mqttt' (known: influx, mqtt)",
        ),
        (
            {"IOC_HUB_ZZ": "1", "IOC_HUB_AA__X": "1", "IOC_HUB_MQTT__HOST": "h"},
            "environment variable IOC_HUB_AA__X: unknown setting section 'aa' (known: influx, mqtt)",
        ),
        (
            {"ioc_hub_Influxx": "{}"},
            "environment variable ioc_hub_Influxx: unknown setting section 'influxx' (known: influx, mqtt)",
        ),
    ],
)
def test_an_unknown_section_is_refused_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(LoaderError) as caught:
        refuse_unknown_env(env, "IOC_HUB_", ["mqtt", "influx"], noun="setting section", error=LoaderError)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LocalHost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("broker.example", False),
        ("localhost.example", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
