"""The contract checks every string whole: no final newline, no control character, no line separator."""

from __future__ import annotations

import msgspec
import pytest

from hub.ingest.decode import DataDecoder
from wire import v1
from wire.v1 import Channel, ContractError, clean_text, decode_for

GOOD = {"device": "aq-01", "kind": "air_quality", "ts": 1_764_331_200_123, "metrics": {"pm25": 1.0, "mode": "auto"}}


def batch(**reading: object) -> bytes:
    return msgspec.json.encode({"session": "sess-0001", "seq": 1, "readings": [{**GOOD, **reading}]})


HOSTILE = [
    pytest.param({"device": "aq-01\n"}, id="device-final-newline"),
    pytest.param({"kind": "air_quality\n"}, id="kind-final-newline"),
    pytest.param({"kind": "alerts\nweather"}, id="kind-inner-newline"),
    pytest.param({"metrics": {"x\n": 1.0}}, id="metric-final-newline"),
    pytest.param({"metrics": {"x": "a\nweather,site=other v=1 1"}}, id="value-newline"),
    pytest.param({"metrics": {"x": "a\rb"}}, id="value-carriage-return"),
    pytest.param({"metrics": {"x": "a\x00b"}}, id="value-nul"),
    pytest.param({"metrics": {"x": "a\x85b"}}, id="value-next-line-c1"),
    pytest.param({"metrics": {"x": "a\u2028b"}}, id="value-line-separator"),
    pytest.param({"metrics": {"x": "a\u2029b"}}, id="value-paragraph-separator"),
    pytest.param({"metrics": {"x": "ends\n"}}, id="value-final-newline"),
]


@pytest.mark.parametrize("reading", HOSTILE)
def test_the_contract_and_the_hubs_fast_decoder_refuse(reading: dict[str, object]) -> None:
    payload = batch(**reading)
    with pytest.raises(ContractError):
        decode_for(Channel.DATA, payload)
    with pytest.raises(ContractError):
        DataDecoder().decode(payload)


def test_plain_text_with_accents_is_accepted() -> None:
    payload = batch(metrics={"note": "Tân Định, quận 1 — ok"})
    assert DataDecoder().decode(payload).readings[0].metrics == {"note": "Tân Định, quận 1 — ok"}


@pytest.mark.parametrize(
    ("struct", "raw"),
    [
        (
            v1.Event,
            b'{"session":"sess-0001","device":"aq-01","type":"device_down","ts":1764331200123,"reason":"x\\ny"}',
        ),
        (v1.State, b'{"online":true,"session":"sess-0001","agent":"0.1\\n"}'),
        (v1.State, b'{"online":false,"session":"sess-0001\\n"}'),
        (
            v1.State,
            b'{"online":true,"session":"sess-0001","devices":[{"id":"a","kind":"k","profile":"p\\u2028","interval_s":1}]}',
        ),
        (v1.CommandAck, b'{"id":"c-1","device":"a","status":"ok","ts":1764331200123,"detail":"\\u0007"}'),
    ],
)
def test_every_text_field_is_checked(struct: type[v1.Payload], raw: bytes) -> None:
    channel = next(c for c, t in v1.CHANNEL_TYPES.items() if t is struct)
    with pytest.raises(ContractError):
        decode_for(channel, raw)


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("plain", 10, "plain"),
        ("a\nb\r\tc\u2028d\x85", 20, "a b  c d "),
        ("x" * 12, 10, "xxxxxxx..."),
    ],
)
def test_clean_text_makes_what_the_contract_accepts(text: str, limit: int, expected: str) -> None:
    assert clean_text(text, limit) == expected
    raw = msgspec.json.encode({"session": "sess-0001", "device": "a", "type": "device_up", "ts": 1_764_331_200_123,
                               "reason": clean_text(text, limit)})  # fmt: skip
    assert decode_for(Channel.EVENT, raw).reason == expected  # type: ignore[union-attr]


def test_check_id_refuses_a_final_newline() -> None:
    with pytest.raises(ContractError):
        v1.check_id("gw-1\n", "gateway")
    assert v1.check_id("gw-1", "gateway") == "gw-1"
