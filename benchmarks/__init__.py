"""Benchmarks of the hub (``make bench``, ``python -m benchmarks``).

- ``codec``: the per-message CPU path (:func:`benchmarks.codec.run_codec`), in process, one core;
- ``ingest``: end to end through the local stack and the real hub process (:func:`benchmarks.ingest.run_ingest`).

Each benchmark returns a :class:`~benchmarks.results.BenchmarkResult` (one sample per run); see ``README.md``.
"""

from benchmarks.errors import BenchmarkError
from benchmarks.results import BenchmarkResult, RunSample, Stat

__all__ = ["BenchmarkError", "BenchmarkResult", "RunSample", "Stat"]
