"""Table-driven cases for the v1 wire contract: what is accepted, what is refused, and why."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from wire import jsonschema, v1

TS = 1_764_331_200_123  # 2025-11-28T12:00:00.123Z
SESSION = "s3ss10n-abc"


def batch_json(**overrides: object) -> bytes:
    doc: dict[str, object] = {
        "v": 1,
        "session": SESSION,
        "seq": 7,
        "readings": [{"device": "aq-01", "kind": "air_quality", "ts": TS, "metrics": {"pm25": 12.5}}],
    }
    doc.update(overrides)
    return msgspec.json.encode(doc)


def test_data_batch_round_trip_keeps_every_value_type() -> None:
    batch = v1.DataBatch(
        session=SESSION,
        seq=1,
        replay=True,
        readings=[
            v1.Reading(
                device="aq-01", kind="air_quality", ts=TS, metrics={"pm25": 12.5, "n": 3, "ok": True, "mode": "run"}
            )
        ],
    )
    decoded = v1.decode(v1.encode(batch), v1.DataBatch)
    assert decoded == batch
    metrics = decoded.readings[0].metrics
    assert type(metrics["n"]) is int
    assert type(metrics["ok"]) is bool
    assert type(metrics["pm25"]) is float


def test_hand_written_payload_from_protocol_doc_decodes() -> None:
    raw = (
        b'{"v":1,"session":"k3J9xQ2mPzA1","seq":42,"replay":false,"readings":['
        b'{"device":"aq-01","kind":"air_quality","ts":1764331200123,"metrics":{"pm25":35.2,"pm10":61.0}}]}'
    )
    batch = v1.decode(raw, v1.DataBatch)
    assert batch.seq == 42
    assert batch.readings[0].metrics == {"pm25": 35.2, "pm10": 61.0}


@pytest.mark.parametrize(
    ("overrides", "error_fragment"),
    [
        ({"seq": 0}, "$.seq"),
        ({"session": "short"}, "$.session"),
        ({"readings": []}, "$.readings"),
        ({"v": 2}, "$.v"),
        ({"readings": [{"device": "AQ_01", "kind": "air_quality", "ts": TS, "metrics": {"x": 1}}]}, "device"),
        ({"readings": [{"device": "aq-01", "kind": "Air", "ts": TS, "metrics": {"x": 1}}]}, "kind"),
        ({"readings": [{"device": "aq-01", "kind": "air_quality", "ts": TS // 1000, "metrics": {"x": 1}}]}, "ts"),
        ({"readings": [{"device": "aq-01", "kind": "air_quality", "ts": TS * 1000, "metrics": {"x": 1}}]}, "ts"),
        ({"readings": [{"device": "aq-01", "kind": "air_quality", "ts": TS, "metrics": {}}]}, "metrics"),
        ({"readings": [{"device": "aq-01", "kind": "air_quality", "ts": TS, "metrics": {"PM 2.5": 1}}]}, "metrics"),
        ({"readings": [{"device": "aq-01", "kind": "air_quality", "ts": TS, "metrics": {"x": [1]}}]}, "metrics"),
        ({"readings": [{"device": "aq-01", "kind": "air_quality", "ts": TS, "metrics": {"x": None}}]}, "metrics"),
        ({"readings": [{"device": "aq-01", "ts": TS, "metrics": {"x": 1}}]}, "kind"),
    ],
)
def test_contract_violations_are_refused_with_the_path(overrides: dict[str, object], error_fragment: str) -> None:
    with pytest.raises(v1.ContractError, match="DataBatch") as info:
        v1.decode(batch_json(**overrides), v1.DataBatch)
    assert error_fragment in str(info.value)


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"[]", b"\xff\xfe", b'{"v":1}'])
def test_garbage_is_a_contract_error_not_a_crash(raw: bytes) -> None:
    with pytest.raises(v1.ContractError):
        v1.decode_for(v1.Channel.DATA, raw)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    batch = v1.decode(batch_json(future_field={"x": 1}), v1.DataBatch)
    assert batch.seq == 7


def test_oversized_string_metric_is_refused() -> None:
    big = "x" * (v1.MAX_STRING_VALUE + 1)
    readings = [{"device": "d-1", "kind": "display", "ts": TS, "metrics": {"message": big}}]
    with pytest.raises(v1.ContractError):
        v1.decode(batch_json(readings=readings), v1.DataBatch)


def test_will_and_birth_share_the_state_type() -> None:
    will = v1.decode(b'{"v":1,"online":false,"session":"k3J9xQ2mPzA1","reason":"connection lost"}', v1.State)
    assert will.online is False
    assert will.ts is None
    birth = v1.State(
        online=True,
        session="k3J9xQ2mPzA1",
        ts=TS,
        agent="0.1.0",
        devices=[v1.DeviceInfo(id="aq-01", kind="air_quality", profile="pm-sensor", interval_s=5.0)],
    )
    assert v1.decode(v1.encode(birth), v1.State) == birth


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("ioc/v1/site-a/gw-1/data", v1.Topic("site-a", "gw-1", v1.Channel.DATA)),
        ("ioc/v1/site-a/gw-1/state", v1.Topic("site-a", "gw-1", v1.Channel.STATE)),
        ("ioc/v1/q1/gw-9/cmd/ack", v1.Topic("q1", "gw-9", v1.Channel.CMD_ACK)),
    ],
)
def test_parse_topic(topic: str, expected: v1.Topic) -> None:
    assert v1.parse_topic(topic) == expected
    assert str(expected) == topic


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("ioc/v2/site-a/gw-1/data", "not under"),
        ("ioc/v1/site-a/gw-1/telemetry", "unknown channel"),
        ("ioc/v1/Site-A/gw-1/data", "site"),
        ("ioc/v1/site-a/gw_1/data", "gateway"),
        ("ioc/v1/site-a", "not under"),
        ("ioc/v1/site-a/gw-1/cmd/ack/x", "unknown channel"),
    ],
)
def test_parse_topic_refuses(topic: str, reason: str) -> None:
    with pytest.raises(v1.ContractError, match=reason):
        v1.parse_topic(topic)


def test_topic_builders() -> None:
    assert v1.topic("site-a", "gw-1", v1.Channel.CMD_ACK) == "ioc/v1/site-a/gw-1/cmd/ack"
    assert v1.subscription(v1.Channel.DATA) == "ioc/v1/+/+/data"
    assert v1.shared("hubs", v1.subscription(v1.Channel.DATA)) == "$share/hubs/ioc/v1/+/+/data"
    with pytest.raises(v1.ContractError, match="gateway"):
        v1.topic("site-a", "gw/1", v1.Channel.DATA)


def test_committed_json_schema_matches_the_code() -> None:
    committed = Path(__file__).parents[3] / "docs" / "protocol-v1.schema.json"
    assert committed.read_text(encoding="utf-8") == jsonschema.render(), "run `make schema` and commit"


def test_command_ack_carries_timeout_status_and_a_result() -> None:
    ack = v1.CommandAck(
        id="c-1", device="pm-01", status=v1.AckStatus.TIMEOUT, ts=1_764_331_300_000, result={"pm2_5": 12.5}
    )
    back = v1.decode(v1.encode(ack), v1.CommandAck)
    assert back.status is v1.AckStatus.TIMEOUT
    assert back.result == {"pm2_5": 12.5}


def test_command_ack_result_names_are_checked_like_metric_names() -> None:
    bad = b'{"v":1,"id":"c-1","device":"pm-01","status":"ok","ts":1764331300000,"result":{"Bad Name":1}}'
    with pytest.raises(v1.ContractError, match="result"):
        v1.decode(bad, v1.CommandAck)
