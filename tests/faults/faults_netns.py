"""An edge agent's uplink through a network namespace of the case's own, cut silently by taking the namespace's
loopback down (:class:`NamespaceLink`).

Inside the namespace the agent connects to the namespace's own 127.0.0.1, where one end of
``netns_bridge.py`` listens and carries the connection over a Unix socket (a file: it crosses namespaces) to the
other end, outside, which connects to the broker. No address beyond loopback is used anywhere. ``ip link set lo
down`` in the namespace then drops the agent's packets without a reset or a FIN: neither the agent nor the broker
is told, each finds out by its own keep-alive, as with a cut cable or a dead mobile link.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

import pytest

from ioc.stack import StackEndpoints
from ioc.stack.packages import find_binary

BRIDGE: Final = Path(__file__).with_name("netns_bridge.py")
#: Where the agent connects inside the namespace (its loopback is its own, so any port is free).
PORT_INSIDE: Final = 18830
READY_TIMEOUT_S: Final = 10.0


class NamespaceLink:
    """``with NamespaceLink(ep) as link:`` a namespace bridged to the broker; :meth:`command` runs a program inside
    it, :meth:`cut` and :meth:`restore` take its link down and up. Skipped, with what failed, where namespaces
    cannot be made."""

    def __init__(self, ep: StackEndpoints) -> None:
        self.ep = ep
        self.name = f"iocf-{secrets.token_hex(3)}"
        ip = find_binary("ip")
        if ip is None:
            pytest.skip("no ip(8) (iproute2): cannot make a network namespace")
        self._ip = str(ip)
        # A short path: a Unix socket's path is limited to 107 bytes.
        self._folder = Path(tempfile.mkdtemp(prefix="iocf-"))
        self.socket = self._folder / "bridge.sock"
        self._procs: list[subprocess.Popen[bytes]] = []
        self._made = False

    @property
    def port(self) -> int:
        return PORT_INSIDE

    def _run(self, *args: str) -> None:
        done = subprocess.run([self._ip, *args], capture_output=True, timeout=30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")

    def __enter__(self) -> Self:
        try:
            self._run("netns", "add", self.name)
        except RuntimeError as exc:
            shutil.rmtree(self._folder, ignore_errors=True)
            pytest.skip(f"cannot make a network namespace here: {exc}")
        self._made = True
        try:
            self._run("-n", self.name, "link", "set", "lo", "up")
            self._start([sys.executable, str(BRIDGE), "unix-to-tcp", str(self.socket), str(self.ep.mqtt_port)])
            self._start(self.command([sys.executable, str(BRIDGE), "tcp-to-unix", str(PORT_INSIDE), str(self.socket)]))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _start(self, argv: list[str]) -> None:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._procs.append(proc)
        stdout: IO[bytes] | None = proc.stdout
        assert stdout is not None
        line = stdout.readline()  # the bridge prints "ready" once it listens, or exits
        if line.strip() != b"ready":
            raise RuntimeError(f"the bridge {argv} did not start (exit {proc.poll()})")

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: the pid is the program's)."""
        return [self._ip, "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        self._run("-n", self.name, "link", "set", "lo", "down")

    def restore(self) -> None:
        self._run("-n", self.name, "link", "set", "lo", "up")

    def close(self) -> None:
        for proc in self._procs:
            proc.kill()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        self._procs.clear()
        if self._made:
            with contextlib.suppress(RuntimeError):
                self._run("netns", "del", self.name)
            self._made = False
        shutil.rmtree(self._folder, ignore_errors=True)
