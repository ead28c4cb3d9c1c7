"""Role defaults that must say what the local stack says (the tests run the stack's; production runs the role's)."""

from __future__ import annotations

from pathlib import Path

import yaml

from ioc.stack.mosquitto import MAX_PACKET_SIZE, MAX_QUEUED_MESSAGES

ROLES = Path(__file__).resolve().parents[2] / "ansible" / "roles"


def test_mosquitto_queue_per_session_is_the_local_stacks() -> None:
    defaults = yaml.safe_load((ROLES / "mosquitto/defaults/main.yml").read_text(encoding="utf-8"))
    spec = yaml.safe_load((ROLES / "mosquitto/meta/argument_specs.yml").read_text(encoding="utf-8"))
    documented = spec["argument_specs"]["main"]["options"]["mosquitto_max_queued_messages"]["default"]
    assert defaults["mosquitto_max_queued_messages"] == documented == MAX_QUEUED_MESSAGES


def test_mosquitto_max_packet_size_is_the_local_stacks() -> None:
    defaults = yaml.safe_load((ROLES / "mosquitto/defaults/main.yml").read_text(encoding="utf-8"))
    spec = yaml.safe_load((ROLES / "mosquitto/meta/argument_specs.yml").read_text(encoding="utf-8"))
    documented = spec["argument_specs"]["main"]["options"]["mosquitto_max_packet_size"]["default"]
    assert defaults["mosquitto_max_packet_size"] == documented == MAX_PACKET_SIZE
