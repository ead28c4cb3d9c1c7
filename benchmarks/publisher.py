"""The load generator of ``ingest``: a separate process publishing as a gateway, so it does not share the GIL
(or the clock) with the benchmark that waits for the hub.

Child side: ``python -m benchmarks.publisher`` reads one JSON line of :class:`PublisherConfig` on stdin, builds the
workload's payloads, connects with paho-mqtt (MQTT 5, QoS 1, ``max_inflight`` raised) and answers
``{"event": "ready"}``. Then, one JSON command per stdin line:

- ``{"cmd": "birth", "topic": "<state topic>", "payload": "<json>"}``: publish the gateway's birth there,
  retained, answer ``born`` once acked (the hub stores data only for the devices a birth announced);
- ``{"cmd": "probe", "payload": "<json>"}``: publish one message to the data topic, answer ``probed`` once acked;
- ``{"cmd": "go"}``: publish every payload as fast as paho takes them, wait for every PUBACK, answer ``done`` with
  ``first_publish`` and ``last_puback`` (``CLOCK_MONOTONIC`` seconds: one clock for every process on Linux) and
  the counts, then disconnect and exit.

Any failure is answered with ``{"event": "error", "error": "..."}`` and exit status 1. Parent side:
:class:`PublisherProcess`.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from benchmarks.child import JsonLinesChild
from benchmarks.errors import BenchmarkError
from benchmarks.workload import Workload

log = logging.getLogger(__name__)

#: Connecting to the broker (TCP connect plus CONNACK).
CONNECT_TIMEOUT_S: Final = 10.0
#: Waiting for the PUBACK of one probe message.
PROBE_TIMEOUT_S: Final = 10.0
#: How long the parent gives the child to stop after its last answer, before SIGKILL.
STOP_TIMEOUT_S: Final = 10.0


def now() -> float:
    """``CLOCK_MONOTONIC`` in seconds: system-wide on Linux, so the parent can compare it with its own readings."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


@dataclass(frozen=True, slots=True)
class PublisherConfig:
    host: str
    port: int
    username: str
    password: str
    client_id: str
    topic: str
    workload: Workload
    #: paho's cap on QoS 1 messages awaiting PUBACK (its default, 20, would make this a latency benchmark).
    max_inflight: int = 1000
    #: Publishing everything and receiving every PUBACK.
    publish_timeout_s: float = 240.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PublisherConfig:
        data = json.loads(text)
        data["workload"] = Workload(**data["workload"])
        return cls(**data)


# ------------------------------------------------------------------------------------------------ parent side


class PublisherProcess:
    """Runs ``python -m benchmarks.publisher`` with ``config``; stderr goes to ``log_path``.

    ``with PublisherProcess(...) as pub:`` starts it; leaving the block stops it (it exits on stdin EOF; SIGKILL
    after :data:`STOP_TIMEOUT_S`). :meth:`send` a command, :meth:`expect` its answer.
    """

    def __init__(self, config: PublisherConfig, log_path: Path, *, cwd: Path) -> None:
        self._config = config
        self._child = JsonLinesChild(
            "benchmarks.publisher", "the publisher", log_path, cwd=cwd, stop_timeout_s=STOP_TIMEOUT_S
        )

    def __enter__(self) -> Self:
        self._child.start(self._config.to_json())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self._child.pid

    def send_line(self, line: str) -> None:
        self._child.send_line(line)

    def send(self, command: dict[str, Any]) -> None:
        self._child.send(command)

    def expect(self, event: str, timeout_s: float) -> dict[str, Any]:
        """Wait up to ``timeout_s`` for the child's next answer and return it; it must be ``event``."""
        return self._child.expect(event, timeout_s)

    def log_tail(self, lines: int = 20) -> str:
        return self._child.log_tail(lines)

    def stop(self) -> None:
        self._child.stop()


# ------------------------------------------------------------------------------------------------ child side


def _answer(event: str, **data: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


class _Publisher:
    def __init__(self, config: PublisherConfig) -> None:
        import paho.mqtt.client as paho  # noqa: PLC0415 - only the child process needs paho
        from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

        self._config = config
        self._paho = paho
        self._connected = threading.Event()
        self._refused = ""
        self._lock = threading.Lock()
        self._acked = 0
        self._target = 0
        self._all_acked = threading.Event()
        self.last_puback = 0.0
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=config.client_id, protocol=paho.MQTTv5, reconnect_on_failure=False
        )
        client.username_pw_set(config.username, config.password)
        client.max_inflight_messages_set(config.max_inflight)
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        self._client = client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
        self._connected.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._lock:
            self._acked += 1
            if self._acked == self._target:
                self.last_puback = now()
                self._all_acked.set()

    @property
    def acked(self) -> int:
        with self._lock:
            return self._acked

    def connect(self) -> None:
        c = self._config
        try:
            self._client.connect(c.host, c.port, keepalive=60)
        except OSError as exc:
            raise BenchmarkError(f"cannot connect to {c.host}:{c.port}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT_S):
            raise BenchmarkError(f"no CONNACK from {c.host}:{c.port} within {CONNECT_TIMEOUT_S:.0f} s")
        if self._refused:
            raise BenchmarkError(f"the broker refused {c.username}: {self._refused}")

    def _publish(self, payload: bytes | str, topic: str | None = None, *, retain: bool = False) -> None:
        info = self._client.publish(topic or self._config.topic, payload, qos=1, retain=retain)
        if info.rc != self._paho.MQTT_ERR_SUCCESS:
            raise BenchmarkError(f"publish failed: {self._paho.error_string(info.rc)}")

    def _arm(self, target: int) -> None:
        """Expect the total of PUBACKs to reach ``target``: call before publishing, so no ack is missed."""
        with self._lock:
            self._target = target
            self._all_acked.clear()

    def _wait(self, timeout_s: float) -> None:
        if not self._all_acked.wait(timeout_s):
            raise BenchmarkError(f"only {self.acked} of {self._target} PUBACKs within {timeout_s:.0f} s")

    def probe(self, payload: str, topic: str | None = None, *, retain: bool = False) -> None:
        """Publish one message (to the data topic unless ``topic``) and wait for its PUBACK."""
        self._arm(self.acked + 1)
        self._publish(payload, topic, retain=retain)
        self._wait(PROBE_TIMEOUT_S)

    def publish_all(self, payloads: list[bytes]) -> dict[str, Any]:
        before = self.acked
        self._arm(before + len(payloads))
        first = now()
        for payload in payloads:
            self._publish(payload)
        published = now()
        self._wait(self._config.publish_timeout_s)
        return {
            "first_publish": first,
            "last_publish": published,
            "last_puback": self.last_puback,
            "published": len(payloads),
            "acked": self.acked - before,
        }

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def child_main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s publisher %(levelname)s %(message)s")
    publisher: _Publisher | None = None
    try:
        config = PublisherConfig.from_json(sys.stdin.readline())
        payloads = config.workload.payloads()
        log.info("%d payloads, %d bytes", len(payloads), sum(map(len, payloads)))
        publisher = _Publisher(config)
        publisher.connect()
        _answer("ready", messages=len(payloads), payload_bytes=sum(map(len, payloads)))
        for line in sys.stdin:
            command = json.loads(line)
            if command["cmd"] == "birth":
                publisher.probe(command["payload"], command["topic"], retain=True)
                _answer("born")
            elif command["cmd"] == "probe":
                publisher.probe(command["payload"])
                _answer("probed")
            elif command["cmd"] == "go":
                result = publisher.publish_all(payloads)
                log.info("published %d, acked %d", result["published"], result["acked"])
                _answer("done", **result)
                break
            else:
                _answer("error", error=f"unknown command {command!r}")
                return 1
    except (BenchmarkError, ValueError, KeyError, TypeError) as exc:
        log.exception("publisher failed")
        _answer("error", error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        if publisher is not None:
            publisher.close()
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
