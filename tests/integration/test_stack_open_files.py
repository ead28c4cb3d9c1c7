"""The local stack's broker serves more clients than the usual soft open-files limit of 1,024 (a shell's default):
ioc.stack.mosquitto.start raises the broker's soft limit to its hard one, as the ansible role's LimitNOFILE does."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ioc.stack.mosquitto import start
from ioc.stack.process import ChildProcess
from ioc.stack.runner import free_ports

SHELL_SOFT_LIMIT = 1024
CLIENTS = 1100


def open_files(pid: int) -> tuple[int, int]:
    """(soft, hard) "Max open files" of ``pid`` as the kernel shows them."""
    for line in Path(f"/proc/{pid}/limits").read_text(encoding="utf-8").splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open files limit in /proc/{pid}/limits")


def connect_packet(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT, clean session, keep-alive 60 s (MQTT 3.1.1, 3.1)."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(cid)) + cid
    return bytes([0x10, len(body)]) + body


def connect(broker: ChildProcess, port: int) -> socket.socket:
    """A TCP connection to the broker, waiting (up to 10 s) for its listener to open."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except ConnectionRefusedError:
            if not broker.running() or time.monotonic() > deadline:
                raise AssertionError(f"the broker does not listen: {broker.log_tail()}") from None
            time.sleep(0.1)


@contextlib.contextmanager
def soft_open_files(limit: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timeout(120)
def test_the_broker_started_with_a_shells_limit_serves_1100_clients(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < CLIENTS + 200:
        pytest.skip(f"the hard open files limit ({hard}) is below what {CLIENTS} clients need")
    (port,) = free_ports(1)
    conf = tmp_path / "mosquitto.conf"
    # As root, "user root" keeps the broker as it was started (as the stack's config does: mosquitto.conf(5)).
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false"]
    conf.write_text("\n".join([*lines, *(["user root"] if os.geteuid() == 0 else [])]) + "\n", encoding="utf-8")
    with soft_open_files(SHELL_SOFT_LIMIT):
        broker = start(conf, tmp_path / "mosquitto.log")
    clients: list[socket.socket] = []
    try:
        assert open_files(broker.pid) == (hard, hard)
        answers = set()
        for i in range(CLIENTS):
            s = connect(broker, port)
            clients.append(s)
            s.sendall(connect_packet(f"c{i}"))
            answers.add(s.recv(4))
        assert answers == {b"\x20\x02\x00\x00"}  # CONNACK, accepted, for every one of them
    finally:
        for s in clients:
            s.close()
        broker.stop()
