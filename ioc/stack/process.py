"""One child process of the local stack: started with its output in a log file, stopped for sure.

Children are started in their own session (a Ctrl-C in the terminal reaches the runner, which then stops them
in order) and, on Linux, with ``PR_SET_PDEATHSIG`` = SIGTERM so that they die if the runner itself dies
without cleaning up (SIGKILL, crash). Caveat from prctl(2): the signal is sent when the *thread* that started the
child exits, so start a stack from a thread that outlives it (the main thread, or a pytest session).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from common.child_process import die_with_parent
from ioc.stack.errors import StackError

log = logging.getLogger(__name__)

#: How long :meth:`ChildProcess.stop` waits after SIGTERM before it sends SIGKILL.
DEFAULT_STOP_TIMEOUT_S = 10.0
#: How many log lines an error message carries.
LOG_TAIL_LINES = 20


def tail(path: Path, lines: int = LOG_TAIL_LINES, start: int = 0) -> str:
    """The last ``lines`` lines of a log file after byte ``start`` ("" if it does not exist)."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as f:
            f.seek(start)
            return "".join(deque(f, maxlen=lines))
    except OSError:
        return ""


class ChildProcess:
    """A started program whose stdout and stderr go to ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        user: tuple[int, int] | None = None,
    ) -> None:
        """``user``: (uid, gid) to run as, without supplementary groups (a root runner starting a program that
        refuses root). The credentials change before ``preexec_fn`` sets the parent-death signal, which a change
        of credentials would otherwise clear (prctl(2))."""
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log_file: IO[bytes] = log_path.open("ab")
        # The log is appended to across runs; tails and errors show only this run's lines.
        self._log_start = self._log_file.tell()
        as_user: dict[str, Any] = {}
        if user is not None:
            as_user = {"user": user[0], "group": user[1], "extra_groups": []}
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - argv is built by the stack runner from resolved binaries
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                close_fds=True,
                start_new_session=True,
                preexec_fn=die_with_parent(os.getpid()),  # noqa: PLW1509 - only prctl + getppid, no locks
                **as_user,
            )
        except OSError as exc:
            self._log_file.close()
            raise StackError(f"could not start {name} ({self.argv[0]}): {exc}") from exc
        log.debug("started %s (pid %d): %s", name, self._proc.pid, " ".join(self.argv))

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the child has exited, else None."""
        return self._proc.poll()

    def running(self) -> bool:
        return self._proc.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        self._log_file.flush()
        return tail(self.log_path, lines, self._log_start)

    def failure(self, what: str) -> StackError:
        """A :class:`StackError` saying ``what`` went wrong, with the exit status and the log's tail."""
        status = self.returncode
        state = "still running" if status is None else f"exited with status {status}"
        return StackError(
            f"{self.name} {what} ({state}); last lines of {self.log_path}:\n{self.log_tail().rstrip() or '(empty)'}"
        )

    def kill(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """SIGKILL at once (a crash, no chance to save state) and reap the child. Idempotent."""
        try:
            if self._proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
                try:
                    self._proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired as exc:
                    raise StackError(f"{self.name} (pid {self.pid}) survived SIGKILL for {timeout:.0f} s") from exc
        finally:
            self._log_file.close()

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Idempotent; always reaps the child."""
        try:
            if self._proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", self.name, self.pid, timeout)
                    with contextlib.suppress(ProcessLookupError):
                        self._proc.kill()
                    try:
                        self._proc.wait(timeout=timeout)
                    except subprocess.TimeoutExpired as exc:
                        raise StackError(f"{self.name} (pid {self.pid}) survived SIGKILL for {timeout:.0f} s") from exc
            log.debug("%s (pid %d) stopped with status %s", self.name, self.pid, self._proc.returncode)
        finally:
            self._log_file.close()
