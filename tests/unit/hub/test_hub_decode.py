"""The fast data decoder gives exactly the contract's verdict: the same batch, or the same error."""

from __future__ import annotations

import json

import msgspec
import pytest

from hub.ingest.decode import DataDecoder
from wire.v1 import Channel, ContractError, DataBatch, Reading, decode_for

TS = 1_764_300_000_000


def batch(**changes: object) -> bytes:
    reading: dict[str, object] = {"device": "aq-01", "kind": "air_quality", "ts": TS, "metrics": {"pm25": 12.5}}
    body: dict[str, object] = {"session": "sess-0001", "seq": 1, "readings": [reading]}
    for key, value in changes.items():
        if key.startswith("r_"):
            reading[key[2:]] = value
        else:
            body[key] = value
    return json.dumps(body).encode()


CASES = [
    batch(),
    batch(r_metrics={"pm25": 1, "ok": True, "label": "x" * 1024, "t": -3.5}),
    batch(replay=True, v=1),
    batch(readings=[{"device": f"d-{i}", "kind": "k", "ts": TS + i, "metrics": {"v": i}} for i in range(50)]),
    # Each of these breaks one constraint the contract checks.
    batch(session="short"),
    batch(session="has space in it"),
    batch(session="sess-0001\n"),  # '$' before a final newline: re.search accepts it; msgspec too
    batch(seq=0),
    batch(v=2),
    batch(readings=[]),
    batch(r_device="Upper"),
    batch(r_device="-lead"),
    batch(r_device="d" * 65),
    batch(r_device="dev\n"),
    batch(r_kind="1kind"),
    batch(r_kind="k" * 33),
    batch(r_ts=946_684_799_999),
    batch(r_ts=4_102_444_800_000),
    batch(r_metrics={}),
    batch(r_metrics={"Bad": 1}),
    batch(r_metrics={"ok": 1, "bad-name": 2}),
    batch(r_metrics={"m": "x" * 1025}),
    batch(r_metrics={"m": None}),
    batch(r_metrics={"m": [1]}),
    batch(r_metrics={f"m{i}": i for i in range(257)}),
    batch(r_extra=1),
    b"{not json",
    b"[]",
    b'{"session": "sess-0001", "seq": "1", "readings": []}',
]


@pytest.mark.parametrize("payload", CASES, ids=range(len(CASES)))
def test_the_fast_decoder_agrees_with_the_contract(payload: bytes) -> None:
    decoder = DataDecoder()
    for _ in range(2):  # the second time from the remembered names
        try:
            expected = decode_for(Channel.DATA, payload)
        except ContractError as exc:
            error = str(exc)
        else:
            error = ""
        if error:
            with pytest.raises(ContractError) as got:
                decoder.decode(payload)
            assert str(got.value) == error
            continue
        result = decoder.decode(payload)
        assert isinstance(result, DataBatch)
        assert all(isinstance(r, Reading) for r in result.readings)
        assert msgspec.to_builtins(result) == msgspec.to_builtins(expected)


def test_a_name_learnt_from_a_good_batch_does_not_let_a_bad_one_through() -> None:
    decoder = DataDecoder(known_cap=2)
    for n in range(10):  # the sets are cleared when full and learn again
        decoder.decode(batch(r_device=f"d-{n}", r_metrics={f"m{n}": 1}))
    with pytest.raises(ContractError, match=r"readings\[0\]\.device"):
        decoder.decode(batch(r_device="BAD"))


def test_a_repeated_key_is_the_one_documented_difference() -> None:
    """msgspec keeps a repeated key's last value in both decoders; the contract's struct also checks the pattern of
    the earlier occurrence, the fast one does not (hub/ingest/decode.py says so). What is stored is valid."""
    payload = (
        b'{"v": 1, "session": "sess-0001", "seq": 1, "readings": '
        b'[{"device": "BAD", "device": "aq-1", "kind": "air_quality", "ts": 1764331200000, "metrics": {"pm25": 1.0}}]}'
    )
    with pytest.raises(ContractError):
        decode_for(Channel.DATA, payload)
    [reading] = DataDecoder().decode(payload).readings
    assert reading.device == "aq-1"
