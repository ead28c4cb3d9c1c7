"""``ioc demo`` keeps its secrets in ``demo.json`` (0600): the terminal shows where they are, never the broker
passwords or the hub's admin API token."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(180)
def test_the_terminal_shows_where_the_secrets_are_and_none_of_them(tmp_path: Path) -> None:
    state, log = tmp_path / "state", tmp_path / "terminal.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ioc.cli", "demo", "--duration", "120", "--sites", "1", "--state-dir", str(state)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while "Stop with Ctrl-C" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=40)
        finally:
            if proc.poll() is None:
                proc.kill()
    secrets_file = state / "demo.json"
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    doc = json.loads(secrets_file.read_text())
    accounts = doc["mqtt"]["accounts"]
    assert set(accounts) == {"hub", "hub-observe", "hub-cmd", "admin"}
    secrets = [doc["hub_token"], *(a["password"] for a in accounts.values())]
    assert all(len(s) >= 16 for s in secrets)
    terminal = log.read_text()
    leaked = [s for s in secrets if s in terminal]
    assert leaked == [], "a secret was printed to the terminal"
    assert f"secrets      {secrets_file}  (owner only: the API token and the broker passwords)" in terminal
    shown = json.loads(terminal[terminal.index("{\n") : terminal.index("\n}\n") + 2])  # the printed document
    assert shown["hub_token"] == f"(in {secrets_file})"
    assert {a["password"] for a in shown["mqtt"]["accounts"].values()} == {f"(in {secrets_file})"}
    assert shown["mqtt"]["accounts"]["admin"]["username"] == "admin"
    # Nothing else in the state folder that holds a secret is readable by others either.
    for path in (state / "stack" / "credentials.json", state / "stack" / "dynamic-security.json"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    for path in state.glob("edge-*.yaml"):
        assert path.stat().st_mode & 0o777 == 0o600, path
