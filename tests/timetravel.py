"""Run the tests on another day: ``IOC_TEST_TRAVEL`` moves the wall clock of the test process (pytest plugin).

    IOC_TEST_TRAVEL=+366d TZ=Pacific/Kiritimati pytest tests/unit     # a year and a day ahead, at UTC+14
    IOC_TEST_TRAVEL=2028-02-29T23:30:00+00:00 pytest tests/unit       # half an hour before a leap day ends

A test that writes a fixed date and reads a window relative to now, or that assumes UTC, passes on the day it
was written and fails here (``make timeless``, part of ``make test``). time-machine moves ``time.time``,
``datetime.now`` and the other wall-clock functions at the C level, so a ``clock=time.time`` default bound
at import moves too; the clock keeps ticking from the destination (``tick=True``). ``time.monotonic`` is not
moved (asyncio's timers keep working). Only the test process moves: Mosquitto, InfluxDB and PostgreSQL keep
the machine's time, so this is for the tiers that run without them (``tests/unit``).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

_OFFSET = re.compile(r"^([+-])(\d+)d$")
_travel: time_machine.travel | None = None


def destination(value: str, now: datetime) -> datetime:
    """``+Nd`` / ``-Nd`` from ``now``, or an ISO 8601 time with its UTC offset."""
    match = _OFFSET.match(value)
    if match:
        days = int(match[2]) * (1 if match[1] == "+" else -1)
        return now + timedelta(days=days)
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise pytest.UsageError(f"IOC_TEST_TRAVEL={value!r}: give a UTC offset (e.g. +00:00) or +Nd")
    return when


def pytest_configure(config: pytest.Config) -> None:
    global _travel  # noqa: PLW0603 - one travel per test process, started and stopped by pytest's hooks
    value = os.environ.get("IOC_TEST_TRAVEL", "")
    if not value:
        return
    _travel = time_machine.travel(destination(value, datetime.now(UTC)), tick=True)
    _travel.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    global _travel  # noqa: PLW0603
    if _travel is not None:
        _travel.stop()
        _travel = None


def pytest_report_header(config: pytest.Config) -> str | None:
    value = os.environ.get("IOC_TEST_TRAVEL", "")
    return f"time travel: IOC_TEST_TRAVEL={value}, now {datetime.now(UTC).isoformat()}" if value else None
