"""``ioc demo`` writes an admin API token into ``demo.json`` (``hub_token``): with it the operations API answers
and lists the simulated city's devices going online; without it, 401; the operator page is served."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(240)
def test_demo_writes_a_working_admin_token(tmp_path: Path) -> None:
    state, log = tmp_path / "demo", tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ioc.cli", "demo", "--duration", "120", "--state-dir", str(state)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        path = state / "demo.json"
        deadline = time.monotonic() + 120
        while not path.exists():
            assert proc.poll() is None, f"demo exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no demo.json:\n{log.read_text()}"
            time.sleep(0.2)
        doc: dict[str, Any] = json.loads(path.read_text())
        token = doc["hub_token"]
        assert token.startswith("ioc_")
        assert (path.stat().st_mode & 0o077) == 0  # it holds secrets: owner only
        url, headers = doc["hub_url"], {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/api/v1/devices", timeout=10).status_code == 401
        deadline = time.monotonic() + 60
        while True:
            devices = httpx.get(f"{url}/api/v1/devices?state=online", headers=headers, timeout=10).json()
            if devices["total"] > 0:
                break
            assert time.monotonic() < deadline, f"no device online after 60 s:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        sites = {s["site"] for s in doc["sites"]}
        assert {d["site"] for d in devices["items"]} <= sites
        created = httpx.post(f"{url}/api/v1/tokens", json={"role": "viewer"}, headers=headers, timeout=10)
        assert created.status_code == 201  # the demo token is an admin token
        page = httpx.get(f"{url}/", timeout=10)
        assert page.status_code == 200
        assert "Vận hành thiết bị" in page.text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
