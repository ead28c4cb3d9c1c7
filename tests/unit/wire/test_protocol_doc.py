"""docs/protocol.md and the code agree: every JSON example in the document is valid for the JSON Schema and
for the decoder of the channel whose section it sits in."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from wire import jsonschema as wire_schema
from wire import v1

DOC = Path(__file__).parents[3] / "docs" / "protocol.md"

#: section heading (first backticked word) -> channel
SECTIONS = {
    "state": v1.Channel.STATE,
    "data": v1.Channel.DATA,
    "event": v1.Channel.EVENT,
    "snapshot": v1.Channel.SNAPSHOT,
}


def examples() -> list[tuple[str, str]]:
    """(section name, JSON text) for each ```json block, with the section it appears under."""
    found: list[tuple[str, str]] = []
    section = ""
    for block in re.split(r"^## ", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE):
        heading = re.match(r"`([a-z/]+)`", block)
        section = heading.group(1) if heading else ""
        found += [(section, m) for m in re.findall(r"```json\n(.*?)```", block, flags=re.DOTALL)]
    return found


def channel_of(section: str, doc: dict[str, Any]) -> v1.Channel:
    if section in SECTIONS:
        return SECTIONS[section]
    # The commands section holds both directions: an ack has a status, a command an action.
    return v1.Channel.CMD_ACK if "status" in doc else v1.Channel.CMD


def test_the_document_has_examples_for_every_channel() -> None:
    channels = {channel_of(s, json.loads(t)) for s, t in examples()}
    assert channels == set(v1.Channel)


@pytest.mark.parametrize(("section", "text"), examples())
def test_doc_example_is_valid(section: str, text: str) -> None:
    doc = json.loads(text)
    channel = channel_of(section, doc)
    schema = wire_schema.schema()
    ref = schema["x-topics"][channel.value]["$ref"]
    jsonschema.validate(doc, {**schema, "$ref": ref})
    decoded = v1.decode_for(channel, text.encode())
    assert isinstance(decoded, v1.CHANNEL_TYPES[channel])


def test_schema_refuses_what_the_decoder_refuses() -> None:
    schema = wire_schema.schema()
    bad = {
        "v": 1,
        "session": "k3J9xQ2mPzA1",
        "seq": 1,
        "readings": [{"device": "AQ 1", "kind": "x", "ts": 1, "metrics": {}}],
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, {**schema, "$ref": "#/$defs/DataBatch"})
    with pytest.raises(v1.ContractError):
        v1.decode(json.dumps(bad).encode(), v1.DataBatch)
