"""What both golden suites share: the case folders, the exact comparison, and the deliberate update mode.

A suite is a folder of case folders (``tests/golden/<suite>/<case>/``), each holding its input and
``expected.txt``; the suite's test module renders the case and calls :func:`check_golden`. With
``IOC_GOLDEN_UPDATE=1`` the rendering is written to ``expected.txt`` instead, and the test fails all the same
(saying what it wrote), so a run in update mode can never pass: review the diff in git, then run again without it.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Final

import pytest

#: The environment variable that rewrites every ``expected.txt`` the run renders.
UPDATE_VARIABLE: Final = "IOC_GOLDEN_UPDATE"
EXPECTED: Final = "expected.txt"


def case_names(suite: Path, input_name: str) -> list[str]:
    """The case folders of ``suite``: every folder holding ``input_name``, sorted by name."""
    return sorted(p.name for p in suite.iterdir() if (p / input_name).is_file())


def updating() -> bool:
    return os.environ.get(UPDATE_VARIABLE, "") not in ("", "0")


def check_golden(folder: Path, actual: str) -> None:
    """``actual`` must equal ``folder/expected.txt`` byte for byte; a mismatch fails with a unified diff."""
    expected_path = folder / EXPECTED
    if updating():
        expected_path.write_text(actual, encoding="utf-8")
        pytest.fail(
            f"{UPDATE_VARIABLE} is set: wrote {expected_path.name} of {folder.name}; never passes in update mode"
        )
    if not expected_path.is_file():
        pytest.fail(f"{folder.name} has no {EXPECTED}: write it with {UPDATE_VARIABLE}=1 and review it")
    expected = expected_path.read_text(encoding="utf-8")
    if actual != expected:
        diff = difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=f"{folder.name}/{EXPECTED}",
            tofile=f"{folder.name} (rendered now)",
        )
        pytest.fail("".join(diff), pytrace=False)
