"""Generate the machine-readable JSON Schema of the v1 wire contract from :mod:`wire.v1`.

``python -m wire.jsonschema > docs/protocol-v1.schema.json``; a unit test fails when the committed file
drifts from the code.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from wire import v1


def schema() -> dict[str, Any]:
    """One JSON Schema document with a definition per channel's payload."""
    types = list(v1.CHANNEL_TYPES.values())
    (refs, components) = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:ioc-backbone:wire:v1",
        "title": "IOC edge <-> hub wire contract, v1",
        "description": "Payloads by topic channel; see docs/protocol.md.",
        "x-topics": {
            channel.value: {"topic": f"{v1.TOPIC_ROOT}/{{site}}/{{gateway}}/{channel.value}", **ref}
            for channel, ref in zip(v1.CHANNEL_TYPES, refs, strict=True)
        },
        "x-id-pattern": v1.ID_PATTERN,
        "$defs": components,
    }


def render() -> str:
    return msgspec.json.format(msgspec.json.encode(schema()), indent=2).decode() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
