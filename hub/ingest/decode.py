"""Decoding ``data`` payloads fast, with exactly the wire contract's verdict.

Profiled: ``wire.v1.decode_for`` spent ~85 % of its time (20 µs of a 10-reading batch here) in the contract's
``pattern`` checks, one regular expression per device id, kind and metric name of every reading, although a
gateway sends the same few names over and over. :class:`DataDecoder` decodes into subclasses of the contract's
structs that keep every other constraint (lengths, ranges, types, checked inside msgspec) but leave out the
patterns, then checks each *distinct* string against the contract's own patterns once and remembers the ones
that passed (bounded sets). Anything it does not accept goes to ``decode_for``, so a refused payload gets the
contract's own error, and nothing the contract refuses is ever accepted (``tests/unit/hub/test_hub_decode.py``
compares both on valid and invalid payloads), with one exception: a JSON object that repeats a key. msgspec keeps
the last value of a repeated key in both; the contract's struct checks the pattern of every occurrence, this one
only of the value kept, so ``{"device": "BAD", "device": "aq-1", ...}`` is refused there and stored as ``aq-1``
here. What is stored is valid either way; no encoder of ours repeats a key.

The result is a :class:`~wire.v1.DataBatch` (a subclass of it) whose readings are :class:`~wire.v1.Reading` instances.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, get_args

import msgspec

from wire.v1 import (
    MAX_METRICS_PER_READING,
    MAX_READINGS_PER_BATCH,
    Channel,
    DataBatch,
    Id,
    Kind,
    MetricName,
    MetricValue,
    Reading,
    SessionId,
    TimestampMs,
    decode_for,
)

#: How many distinct accepted strings of each sort are remembered (then forgotten at once and re-learnt).
KNOWN_CAP: Final = 100_000


def _pattern(annotated: Any) -> re.Pattern[str]:
    """The compiled ``pattern`` of an ``Annotated[str, msgspec.Meta(pattern=...)]`` of the contract."""
    meta = get_args(annotated)[1]
    assert isinstance(meta, msgspec.Meta)
    assert meta.pattern is not None
    return re.compile(meta.pattern)


_ID_RE: Final = _pattern(Id)
_KIND_RE: Final = _pattern(Kind)
_METRIC_RE: Final = _pattern(MetricName)
_SESSION_RE: Final = _pattern(SessionId)


class _LaxReading(Reading, frozen=True):
    """:class:`~wire.v1.Reading` without the patterns (checked by :class:`DataDecoder`)."""

    device: str
    kind: str
    ts: TimestampMs
    metrics: Annotated[dict[str, MetricValue], msgspec.Meta(min_length=1, max_length=MAX_METRICS_PER_READING)]


class _LaxBatch(DataBatch, frozen=True):
    """:class:`~wire.v1.DataBatch` without the patterns (checked by :class:`DataDecoder`)."""

    session: str
    seq: Annotated[int, msgspec.Meta(ge=1)]
    readings: Annotated[  # type: ignore[assignment]  # a list of the subclass; read-only here
        list[_LaxReading], msgspec.Meta(min_length=1, max_length=MAX_READINGS_PER_BATCH)
    ]


class DataDecoder:
    """``decode(payload)``: what ``decode_for(Channel.DATA, payload)`` returns or raises, faster."""

    def __init__(self, known_cap: int = KNOWN_CAP) -> None:
        self._decoder = msgspec.json.Decoder(_LaxBatch)
        self._known_cap = known_cap
        self._ids: set[str] = set()
        self._kinds: set[str] = set()
        self._metrics: set[str] = set()
        self._sessions: set[str] = set()

    def decode(self, payload: bytes) -> DataBatch:
        """The batch; raise :class:`~wire.v1.ContractError` (the contract's own) for a payload it refuses."""
        try:
            batch = self._decoder.decode(payload)
        except msgspec.DecodeError:  # ValidationError included: the contract says why
            return decode_for(Channel.DATA, payload)  # type: ignore[return-value]
        if self._accepted(batch):
            return batch
        return decode_for(Channel.DATA, payload)  # type: ignore[return-value]

    def _accepted(self, batch: _LaxBatch) -> bool:
        if batch.session not in self._sessions and not self._learn(self._sessions, _SESSION_RE, batch.session):
            return False
        ids, kinds, metrics = self._ids, self._kinds, self._metrics
        for reading in batch.readings:
            if reading.device not in ids and not self._learn(ids, _ID_RE, reading.device):
                return False
            if reading.kind not in kinds and not self._learn(kinds, _KIND_RE, reading.kind):
                return False
            for name in reading.metrics:
                if name not in metrics and not self._learn(metrics, _METRIC_RE, name):
                    return False
        return True

    def _learn(self, known: set[str], pattern: re.Pattern[str], value: str) -> bool:
        # msgspec checks a pattern with re.search; so does this, with the same patterns (wire.v1._whole).
        if pattern.search(value) is None:
            return False
        if len(known) >= self._known_cap:
            known.clear()
        known.add(value)
        return True
