"""The real hub as a child process (``python -m ioc.cli hub``), configured by environment variables as in
production, and read through its own HTTP API.

The hub's admission (hub/ingest/admission.py) stores only kinds of ``admission.kinds``: a benchmark that writes
measurements of its own (``bench_load``, ``bench_probe``...) gives them with :func:`admission_env`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

import httpx

from benchmarks.child import log_tail
from benchmarks.errors import BenchmarkError
from hub.ingest.admission import DEFAULT_KINDS
from ioc.stack import StackEndpoints

#: The hub has this long to serve ``/api/v1/health`` with MQTT connected.
START_TIMEOUT_S: Final = 30.0
#: One HTTP call to the hub's API.
HTTP_TIMEOUT_S: Final = 5.0
#: After SIGTERM: the hub's own drain (10 s by default) plus its shutdown, before SIGKILL.
STOP_TIMEOUT_S: Final = 25.0


def admission_env(*kinds: str) -> dict[str, str]:
    """The hub's environment for ``admission.kinds``: the shipped profiles' kinds and ``kinds``."""
    return {"IOC_HUB_ADMISSION__KINDS": json.dumps(sorted({*DEFAULT_KINDS, *kinds}))}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class HubProcess:
    """``with HubProcess(...) as hub:`` starts the hub on ``database`` and waits until its API reports MQTT connected.

    ``client_id`` is the hub's MQTT client id; reuse it across runs on the same broker, as a deployed hub does,
    so the broker keeps one session rather than one abandoned session (still subscribed) per run.
    """

    def __init__(
        self,
        endpoints: StackEndpoints,
        database: str,
        client_id: str,
        log_path: Path,
        *,
        cwd: Path,
        extra_env: dict[str, str] | None = None,
        log_append: bool = False,
    ) -> None:
        user, password = endpoints.credentials("hub")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {
            **os.environ,
            "IOC_HUB_MQTT__HOST": endpoints.mqtt_host,
            "IOC_HUB_MQTT__PORT": str(endpoints.mqtt_port),
            "IOC_HUB_MQTT__USERNAME": user,
            "IOC_HUB_MQTT__PASSWORD": password,
            "IOC_HUB_MQTT__CLIENT_ID": client_id,
            "IOC_HUB_INFLUX__URL": endpoints.influx_url,
            "IOC_HUB_INFLUX__DATABASE": database,
            "IOC_HUB_HTTP__HOST": "127.0.0.1",
            "IOC_HUB_HTTP__PORT": str(self.port),
            **(extra_env or {}),
        }
        self._log_mode = "ab" if log_append else "wb"
        self._log_path = log_path
        self._cwd = cwd
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(timeout=HTTP_TIMEOUT_S)
        self.returncode: int | None = None

    def __enter__(self) -> Self:
        self._log = self._log_path.open(self._log_mode)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "ioc.cli", "hub"],
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=self._cwd,
            )
        except OSError as exc:
            self._log.close()
            raise BenchmarkError(f"cannot start the hub: {exc}") from exc
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise BenchmarkError("the hub is not running")
        return self._proc.pid

    def check_alive(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise BenchmarkError(f"the hub exited unexpectedly:\n{self.log_tail()}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                health = self._http.get(f"{self.url}/api/v1/health").json()
            except (httpx.HTTPError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if health.get("status") == "ok":
                    return
                last = str(health)
            time.sleep(0.1)
        raise BenchmarkError(f"the hub was not ready within {START_TIMEOUT_S:.0f} s ({last}):\n{self.log_tail()}")

    def stats(self) -> dict[str, Any]:
        """``GET /api/v1/ingest/stats``."""
        try:
            response = self._http.get(f"{self.url}/api/v1/ingest/stats")
            response.raise_for_status()
            data: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            self.check_alive()
            raise BenchmarkError(f"GET {self.url}/api/v1/ingest/stats failed: {exc}") from exc
        return data

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self._log, self._log_path, lines)

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is drained, acknowledged or flushed."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
            self.returncode = proc.returncode
        self._close()

    def stop(self) -> int | None:
        """SIGTERM (a graceful drain), SIGKILL after :data:`STOP_TIMEOUT_S`; return the exit status."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
            self.returncode = proc.returncode
        self._close()
        return self.returncode

    def _close(self) -> None:
        """The HTTP client and the log, once the process is gone."""
        self._http.close()
        if self._log is not None:
            self._log.close()
            self._log = None
