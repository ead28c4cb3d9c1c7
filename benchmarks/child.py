"""The parent side of a benchmark's helper process (``python -m benchmarks.publisher``, ``benchmarks.loadgen``):
one JSON command per line on its stdin, one JSON answer per line on its stdout (``{"event": ...}``), its stderr
to a log file. It exits when its stdin closes.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from benchmarks.errors import BenchmarkError


def log_tail(log: IO[bytes] | None, path: Path, lines: int) -> str:
    """The last ``lines`` lines of a child's log file ``path`` (``log``, its open handle, flushed first)."""
    if log is not None and not log.closed:
        log.flush()
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class JsonLinesChild:
    """``python -m <module>`` in ``cwd``, talking JSON lines; ``what`` names it in errors ("the publisher")."""

    def __init__(self, module: str, what: str, log_path: Path, *, cwd: Path, stop_timeout_s: float) -> None:
        self._module = module
        self._what = what
        self._log_path = log_path
        self._cwd = cwd
        self._stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[str] | None = None
        self._log: IO[bytes] | None = None
        self._events: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None

    def start(self, first_line: str) -> None:
        """Start the child and send it ``first_line`` (its configuration)."""
        self._log = self._log_path.open("wb")
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - one of our benchmark modules, by name
                [sys.executable, "-m", self._module],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                cwd=self._cwd,
                text=True,
                encoding="utf-8",
            )
        except OSError as exc:
            self._log.close()
            raise BenchmarkError(f"cannot start {self._what}: {exc}") from exc
        self._reader = threading.Thread(target=self._read, name=f"{self._module}-stdout", daemon=True)
        self._reader.start()
        self.send_line(first_line)

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise BenchmarkError(f"{self._what} is not running")
        return self._proc.pid

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        for line in proc.stdout:
            self._events.put(line)
        self._events.put(None)  # EOF: the child has exited or closed stdout

    def send_line(self, line: str) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise BenchmarkError(f"{self._what} is not running")
        try:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        except OSError as exc:
            raise BenchmarkError(f"{self._what} stopped reading commands: {exc}\n{self.log_tail()}") from exc

    def send(self, command: dict[str, Any]) -> None:
        self.send_line(json.dumps(command))

    def expect(self, event: str, timeout_s: float) -> dict[str, Any]:
        """Wait up to ``timeout_s`` for the child's next answer and return it; it must be ``event``."""
        try:
            line = self._events.get(timeout=timeout_s)
        except queue.Empty:
            raise BenchmarkError(f"{self._what} did not answer {event!r} within {timeout_s:.0f} s") from None
        if line is None:
            self._events.put(None)
            raise BenchmarkError(f"{self._what} exited before {event!r}:\n{self.log_tail()}")
        answer: dict[str, Any] = json.loads(line)
        if answer.get("event") != event:
            raise BenchmarkError(f"{self._what} answered {answer} instead of {event!r}:\n{self.log_tail()}")
        return answer

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self._log, self._log_path, lines)

    def stop(self) -> None:
        """Close the child's stdin (it exits), SIGKILL it after ``stop_timeout_s``."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            try:
                proc.wait(timeout=self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=self._stop_timeout_s)
            if self._reader is not None:
                self._reader.join(timeout=self._stop_timeout_s)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
