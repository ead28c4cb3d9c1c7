"""``codec``: the hub's per-message CPU path, in this process, on one core.

Exactly what :meth:`hub.ingest.Pipeline._file` does to a data message after parsing its topic:
``wire.v1.decode_for(Channel.DATA, payload)`` then ``hub.ingest.points.reading_lines(site, gateway, batch)``. The
payloads are encoded before the clock starts; the timed loop does nothing else. Each run checks that it produced
one line per reading fed and dropped no value, so a broken codec cannot pass for a fast one.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from benchmarks.errors import BenchmarkError
from benchmarks.results import BenchmarkResult, RunSample
from benchmarks.workload import Workload
from hub.ingest.points import reading_lines
from wire.v1 import Channel, DataBatch, decode_for

log = logging.getLogger(__name__)

NAME: Final = "codec"
#: Full run: 1,000 messages x 100 readings x 6 metrics per run.
DEFAULT_MESSAGES: Final = 1000
QUICK_MESSAGES: Final = 200
DEFAULT_READINGS_PER_MESSAGE: Final = 100
#: A few devices per gateway, as a small site has.
DEFAULT_DEVICES: Final = 6
SITE: Final = "site-a"
GATEWAY: Final = "gw-1"


def _one_pass(payloads: list[bytes]) -> tuple[float, int, int, int]:
    """Decode and format every payload once: (seconds, readings decoded, lines, values dropped)."""
    readings = lines = dropped = 0
    start = time.perf_counter()
    for payload in payloads:
        batch = decode_for(Channel.DATA, payload)
        if not isinstance(batch, DataBatch):  # the hub dispatches on the type the same way
            raise BenchmarkError(f"decode_for(DATA) returned {type(batch).__name__}")
        batch_lines, batch_dropped = reading_lines(SITE, GATEWAY, batch)
        readings += len(batch.readings)
        lines += len(batch_lines)
        dropped += batch_dropped
    return time.perf_counter() - start, readings, lines, dropped


def run_codec(
    *,
    runs: int,
    messages: int = DEFAULT_MESSAGES,
    readings_per_message: int = DEFAULT_READINGS_PER_MESSAGE,
    devices: int = DEFAULT_DEVICES,
) -> BenchmarkResult:
    """Run the codec benchmark ``runs`` times; raise :class:`BenchmarkError` if a run loses a reading."""
    workload = Workload(messages=messages, readings_per_message=readings_per_message, devices=devices)
    payloads = workload.payloads()
    fed = workload.readings
    result = BenchmarkResult(
        NAME,
        {
            "messages": messages,
            "readings_per_message": readings_per_message,
            "metrics_per_reading": 6,
            "devices": devices,
            "payload_bytes_avg": round(sum(map(len, payloads)) / len(payloads)),
        },
    )
    _one_pass(payloads[: max(1, len(payloads) // 10)])  # warm caches and the allocator; not measured
    for run in range(1, runs + 1):
        seconds, readings, lines, dropped = _one_pass(payloads)
        if readings != fed or lines != fed or dropped:
            raise BenchmarkError(
                f"codec run {run}: fed {fed} readings, decoded {readings}, got {lines} lines, dropped {dropped} values"
            )
        seconds = max(seconds, 1e-9)
        result.samples.append(
            RunSample(
                metrics={
                    "readings_per_s": readings / seconds,
                    "messages_per_s": len(payloads) / seconds,
                    "seconds": seconds,
                },
                counts={"messages": len(payloads), "readings": fed, "lines": lines, "values_dropped": dropped},
            )
        )
        log.info("codec run %d/%d: %.3f s, %.0f readings/s", run, runs, seconds, readings / seconds)
    return result
