"""The one error of the benchmarks: a run that could not measure what it claims to (lost points, a dead child...)."""

from __future__ import annotations


class BenchmarkError(Exception):
    """A benchmark run failed; the message says what was expected and what was seen."""
