"""Property: for every data payload the hub accepts, the lines it writes read back (tests/unit/hub/lineproto_reader.py,
an independent reader of the line protocol) to exactly the admitted readings, one point each, tagged with the
topic's site and gateway, whatever the payload holds: newlines, commas, quotes, separators, huge numbers.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lineproto_reader import Point, Value, read

from hub.ingest.admission import Admission, AdmissionRules
from hub.ingest.decode import DataDecoder
from hub.ingest.points import HUB_MEASUREMENTS, reading_lines
from wire.v1 import Channel, ContractError, DataBatch, DeviceInfo, MetricValue, State, decode_for

NOW_S = 2_000_000_000.0
NOW_MS = int(NOW_S * 1000)
#: What breaks lines, tags and strings, and what looks like them.
HOSTILE = "\n\r\t ,=\"'\\\u2028\u2029\x00\x85\x7fé#"


def rarely(usual: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual``, and once in 30 draws ``hostile``: a batch holds ~20 names and values, so about half the batches
    carry something hostile and the rest get through whole."""
    # 13, not an end: hypothesis draws the ends of a range more often than the rest, and shrinks toward 0.
    return st.integers(0, 29).flatmap(lambda n: hostile if n == 13 else usual)


def hostile_or(pattern: str, alphabet: str) -> st.SearchStrategy[str]:
    """A valid name, or rarely a hostile one (any of the characters that break lines, or a final newline)."""
    valid = st.from_regex(pattern, fullmatch=True)
    hostile = st.one_of(
        st.text(alphabet=st.sampled_from(alphabet + HOSTILE), min_size=1, max_size=8), valid.map(lambda s: s + "\n")
    )
    return rarely(valid, hostile)


IDS = hostile_or(r"[a-z0-9][a-z0-9-]{0,6}", "az09-Z")
KINDS = rarely(
    st.one_of(st.sampled_from(["air_quality", "weather"]), hostile_or(r"[a-z][a-z0-9_]{0,6}", "az_9")),
    st.sampled_from(sorted(HUB_MEASUREMENTS)),
)
NAMES = hostile_or(r"[a-z][a-z0-9_]{0,6}", "az_9A")
#: Valid values mostly, text full of what the line protocol escapes (quotes, backslashes, commas, spaces, '='),
#: integers past the float range, and now and then what the contract refuses (control characters, NaN).
_FINITE = st.floats(allow_nan=False, allow_infinity=False)
_TEXT = st.text(alphabet=st.sampled_from("ab c,=\"\\#é'Đ"), max_size=12)
VALUES: st.SearchStrategy[Any] = rarely(
    st.one_of(_FINITE, st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1), _TEXT),
    st.one_of(
        st.integers(min_value=2**64, max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(alphabet=st.sampled_from("ab" + HOSTILE), min_size=1, max_size=12),
    ),
)
#: Within admission's window (30 days back, 5 minutes ahead), or rarely just out of it or far off.
TIMES = rarely(
    st.integers(min_value=NOW_MS - 30 * 86_400_000, max_value=NOW_MS + 300_000),
    st.one_of(st.sampled_from([NOW_MS - 30 * 86_400_000 - 1, NOW_MS + 300_001]), st.integers(0, 2**63)),
)
READINGS = st.lists(
    st.fixed_dictionaries(
        {"device": IDS, "kind": KINDS, "ts": TIMES, "metrics": st.dictionaries(NAMES, VALUES, min_size=1, max_size=4)}
    ),
    min_size=1,
    max_size=5,
)
SITES = st.from_regex(r"[a-z0-9][a-z0-9-]{0,6}", fullmatch=True)


def expected_fields(metrics: dict[str, MetricValue]) -> dict[str, Value]:
    """What the line protocol can carry of a reading's metrics: numbers as floats, finite ones only."""
    fields: dict[str, Value] = {}
    for name, value in metrics.items():
        if isinstance(value, bool | str):
            fields[name] = value
        elif isinstance(value, int):
            try:
                fields[name] = float(value)
            except OverflowError:
                continue
        elif math.isfinite(value):
            fields[name] = value
    return fields


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(site=SITES, gateway=SITES, readings=READINGS, seq=rarely(st.integers(1, 9), st.just(0)))
def test_accepted_readings_read_back_exactly_one_point_each(
    site: str, gateway: str, readings: list[dict[str, Any]], seq: int
) -> None:
    raw = json.dumps({"session": "sess-0001", "seq": seq, "readings": readings}).encode()
    try:
        batch = DataDecoder().decode(raw)
    except ContractError:
        try:
            decode_for(Channel.DATA, raw)
        except ContractError:
            event("refused by the contract")
            return  # refused by both: nothing to write
        raise AssertionError("the hub's decoder refused what the contract accepts") from None
    assert isinstance(decode_for(Channel.DATA, raw), DataBatch)  # and accepted by the contract too
    kinds = frozenset(r.kind for r in batch.readings) - HUB_MEASUREMENTS
    admission = Admission(AdmissionRules(kinds=kinds), clock=lambda: NOW_S)
    announced: dict[str, str] = {}
    for r in batch.readings:
        announced.setdefault(r.device, r.kind)
    admission.state(site, gateway, State(online=True, session="sess-0001", devices=[
        DeviceInfo(d, k, "p", 1.0) for d, k in announced.items()
    ]))  # fmt: skip
    admitted, refused = admission.data(site, gateway, batch)
    if refused:
        event("some readings refused by admission")
    if admitted is None:
        event("nothing admitted")
        return
    lines, _ = reading_lines(site, gateway, admitted)
    event(f"{min(len(lines), 3)}+ lines written" if len(lines) >= 3 else f"{len(lines)} lines written")
    assert all("\n" not in line and "\r" not in line for line in lines)
    expected = [
        Point(r.kind, {"device": r.device, "gateway": gateway, "kind": r.kind, "site": site}, fields, r.ts)
        for r in admitted.readings
        if (fields := expected_fields(dict(r.metrics)))
    ]
    assert read("\n".join(lines)) == expected
    for r in admitted.readings:
        assert r.kind not in HUB_MEASUREMENTS
        assert NOW_MS - 30 * 86_400_000 <= r.ts <= NOW_MS + 300_000
