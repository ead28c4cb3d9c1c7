"""``ioc edge check`` golden cases: each ``edge_check/<case>/gateway.yaml`` and the exact output of the check.

The check runs in the case folder with the config named ``gateway.yaml`` (so every message names the file
as ``gateway.yaml``, whatever the machine), without the developer's ``IOC_EDGE_*`` variables. ``expected.txt``
holds ``exit: <code>``, then the command's stdout under ``--- stdout`` and its stderr under ``--- stderr``
(a section only when not empty). Adding a case is adding a folder; see ``tests/golden/README.md``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from golden_cases import case_names, check_golden

from edge import cli
from edge.problems import SECRET_FIELDS

SUITE = Path(__file__).parent / "edge_check"
CONFIG = "gateway.yaml"
CASES = case_names(SUITE, CONFIG)


def run_check(folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """``ioc edge check gateway.yaml`` in ``folder``, rendered as ``expected.txt`` holds it."""
    for name in list(os.environ):
        if name.upper().startswith("IOC_EDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(folder)
    parser = argparse.ArgumentParser(prog="ioc edge")
    cli.add_arguments(parser)
    capsys.readouterr()
    code = cli.main(parser.parse_args(["check", CONFIG]))
    out, err = capsys.readouterr()
    rendered = f"exit: {code}\n"
    if out:
        rendered += f"--- stdout\n{out}"
    if err:
        rendered += f"--- stderr\n{err}"
    return rendered


def secret_values(node: Any) -> Iterator[str]:
    """The values under the secret keys (``password``, ``token``...) anywhere in a YAML document, and the
    passwords inside URLs (``rtsp://user:password@host/``)."""
    if isinstance(node, str) and "://" in node:
        password = urlsplit(node).password
        if password:
            yield password
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in SECRET_FIELDS and value is not None:
                yield from (str(v) for v in (value if isinstance(value, list) else [value]))
            else:
                yield from secret_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from secret_values(item)


def test_every_case_folder_has_its_config() -> None:
    """A folder without ``gateway.yaml`` would be skipped silently: a misnamed input fails here instead."""
    assert sorted(p.name for p in SUITE.iterdir() if p.is_dir()) == CASES


@pytest.mark.parametrize("case", CASES)
def test_edge_check(case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder = SUITE / case
    rendered = run_check(folder, monkeypatch, capsys)
    try:
        document = yaml.safe_load((folder / CONFIG).read_text(encoding="utf-8"))
    except yaml.YAMLError:
        document = None
    # Checked before the comparison, so that updating the expected file can never pin an echoed secret.
    for secret in secret_values(document):
        assert secret not in rendered, f"the value of a secret field is echoed: {secret!r}"
    check_golden(folder, rendered)
