"""The ``snapshot`` channel of the v1 contract: a camera's JPEG, bounded in size, with why it was taken."""

from __future__ import annotations

import base64

import msgspec
import pytest

from wire import jsonschema, v1

TS = 1_764_331_200_123  # 2025-11-28T12:00:00.123Z
SESSION = "s3ss10n-abc"
#: Not a whole JPEG: the contract bounds the bytes, the hub checks the image (hub/snapshots/jpeg.py).
JPEG = b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9"


def snapshot_json(**overrides: object) -> bytes:
    doc: dict[str, object] = {
        "v": 1,
        "session": SESSION,
        "device": "cam-01",
        "ts": TS,
        "jpeg": base64.b64encode(JPEG).decode(),
        "trigger": "periodic",
    }
    doc.update(overrides)
    return msgspec.json.encode(doc)


def test_snapshot_round_trip_carries_the_bytes_as_base64() -> None:
    snap = v1.Snapshot(
        session=SESSION,
        device="cam-01",
        ts=TS,
        jpeg=JPEG,
        trigger=v1.SnapshotTrigger.PROBLEM,
        problems=["image_black", "image_frozen"],
        width=640,
        height=360,
    )
    raw = v1.encode(snap)
    assert base64.b64encode(JPEG) in raw
    back = v1.decode_for(v1.Channel.SNAPSHOT, raw)
    assert back == snap
    assert isinstance(back, v1.Snapshot)
    assert back.trigger is v1.SnapshotTrigger.PROBLEM


def test_snapshot_defaults() -> None:
    snap = v1.decode(snapshot_json(), v1.Snapshot)
    assert (snap.v, snap.problems, snap.width, snap.height) == (1, [], None, None)
    assert snap.jpeg == JPEG


def test_the_largest_jpeg_is_accepted_and_fits_a_message() -> None:
    jpeg = b"\xff\xd8" + b"\x00" * (v1.MAX_SNAPSHOT_BYTES - 4) + b"\xff\xd9"
    raw = snapshot_json(jpeg=base64.b64encode(jpeg).decode(), problems=["image_covered"] * v1.MAX_SNAPSHOT_PROBLEMS)
    assert len(v1.decode(raw, v1.Snapshot).jpeg) == v1.MAX_SNAPSHOT_BYTES
    assert len(raw) < 140_000 < v1.MAX_MESSAGE_BYTES


@pytest.mark.parametrize(
    ("overrides", "error_fragment"),
    [
        ({"jpeg": base64.b64encode(b"\xff" * (v1.MAX_SNAPSHOT_BYTES + 1)).decode()}, "$.jpeg"),
        ({"jpeg": ""}, "$.jpeg"),
        ({"jpeg": "not base64!"}, "$.jpeg"),
        ({"jpeg": [255, 216]}, "$.jpeg"),
        ({"trigger": "manual"}, "$.trigger"),
        ({"trigger": None}, "$.trigger"),
        ({"device": "Cam 1"}, "$.device"),
        ({"ts": TS // 1000}, "$.ts"),
        ({"session": "short"}, "$.session"),
        ({"problems": ["Image Black"]}, "$.problems"),
        ({"problems": ["image_black"] * (v1.MAX_SNAPSHOT_PROBLEMS + 1)}, "$.problems"),
        ({"width": 0}, "$.width"),
        ({"height": 65_536}, "$.height"),
        ({"v": 2}, "$.v"),
    ],
)
def test_snapshot_violations_are_refused_with_the_path(overrides: dict[str, object], error_fragment: str) -> None:
    with pytest.raises(v1.ContractError, match="Snapshot") as info:
        v1.decode_for(v1.Channel.SNAPSHOT, snapshot_json(**overrides))
    assert error_fragment in str(info.value)


def test_snapshot_topic() -> None:
    topic = v1.topic("site-a", "gw-1", v1.Channel.SNAPSHOT)
    assert topic == "ioc/v1/site-a/gw-1/snapshot"
    assert v1.parse_topic(topic) == v1.Topic("site-a", "gw-1", v1.Channel.SNAPSHOT)
    assert v1.subscription(v1.Channel.SNAPSHOT) == "ioc/v1/+/+/snapshot"


def test_schema_documents_the_snapshot_channel() -> None:
    schema = jsonschema.schema()
    assert schema["x-topics"]["snapshot"] == {"topic": "ioc/v1/{site}/{gateway}/snapshot", "$ref": "#/$defs/Snapshot"}
    jpeg = schema["$defs"]["Snapshot"]["properties"]["jpeg"]
    # base64 of 96 KiB is 128 KiB of text
    assert (jpeg["contentEncoding"], jpeg["maxLength"]) == ("base64", 4 * v1.MAX_SNAPSHOT_BYTES // 3)
    assert schema["$defs"]["SnapshotTrigger"]["enum"] == ["cleared", "periodic", "problem"]
