"""Role defaults that must say what the local stack says (the tests run the stack's; production runs the role's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from hub.config import BatchSettings
from ioc.stack.mosquitto import MAX_PACKET_SIZE, SESSION_LIMITS

ROLES = Path(__file__).resolve().parents[2] / "ansible" / "roles"


def role_defaults(role: str) -> dict[str, Any]:
    defaults: dict[str, Any] = yaml.safe_load((ROLES / role / "defaults/main.yml").read_text(encoding="utf-8"))
    return defaults


def documented_default(role: str, variable: str) -> object:
    spec = yaml.safe_load((ROLES / role / "meta/argument_specs.yml").read_text(encoding="utf-8"))
    return spec["argument_specs"]["main"]["options"][variable]["default"]


@pytest.mark.parametrize(
    ("variable", "local_stack"),
    [
        ("mosquitto_max_packet_size", MAX_PACKET_SIZE),
        ("mosquitto_max_queued_messages", SESSION_LIMITS.max_queued_messages),
        ("mosquitto_max_queued_bytes", SESSION_LIMITS.max_queued_bytes),
        ("mosquitto_max_inflight_bytes", SESSION_LIMITS.max_inflight_bytes),
    ],
)
def test_mosquitto_default_is_the_local_stacks(variable: str, local_stack: int) -> None:
    assert role_defaults("mosquitto")[variable] == documented_default("mosquitto", variable) == local_stack


def test_the_rendered_broker_config_bounds_each_session_as_the_local_stack_does() -> None:
    """The role's mosquitto.conf, rendered with its defaults, has the local stack's three session lines."""
    context = {
        **role_defaults("mosquitto"),
        "ansible_managed": "managed",
        "mosquitto_dynsec_path": "/etc/mosquitto/dynamic-security.json",
        "mosquitto_data_dir": "/var/lib/mosquitto",
        "mosquitto_cert_dir": "/etc/mosquitto/certs",
    }
    template = (ROLES / "mosquitto/templates/mosquitto.conf.j2").read_text(encoding="utf-8")
    lines = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(context).splitlines()
    bounds = [line for line in lines if line.startswith(("max_queued_", "max_inflight_"))]
    assert bounds == SESSION_LIMITS.config_lines()


def test_the_brokers_in_flight_bytes_are_the_hubs_unacknowledged_cap() -> None:
    """What a connected hub holds unacknowledged (at most ``batch.max_pending_bytes``) does not eat into the
    session's queue: ioc/stack/mosquitto.py, MAX_INFLIGHT_BYTES."""
    assert SESSION_LIMITS.max_inflight_bytes == BatchSettings().max_pending_bytes
