"""A load generator of simulated gateways publishing the wire contract, in a process of its own.

Child side: ``python -m benchmarks.loadgen`` reads one JSON line of :class:`LoadConfig` on stdin, connects one
MQTT 5 connection per gateway account (a minimal asyncio publisher on the hub's codec, :mod:`hub.mqtt.codec`; QoS 1),
publishes each gateway's birth (retained, announcing its devices; the probe gateway's announces ``probe-d0``: the hub
stores data only for the devices a gateway's birth announced), waits for their PUBACKs and answers
``{"event": "ready", "sessions": [...]}`` (the births' sessions, by which the parent finds them stored). On
``{"cmd": "go"}`` it publishes ``data`` batches for ``duration_s`` at ``rate`` messages/s in total (0: as fast
as the outstanding cap allows), round robin over the gateways, waits for every PUBACK and answers
``{"event": "done", ...}`` with the counts (:class:`LoadResult`), then exits.

Each gateway has its own session and ``seq`` (1, 2, ...). Reading ``k`` (0-based within a gateway) is device
``{gateway}-d{k % devices}`` at ``base_ts_ms + k // devices``: no two readings of a device share a timestamp, so no
point overwrites another and ``count(value)`` in InfluxDB must equal the readings sent. Device ids are unique across
gateways, as in a city's registry (the same id under several gateways would be one device moving between them on
every message, which the hub's health monitor follows at a cost no real deployment sees). Measurement ``bench_load``,
metrics ``value`` (float) and ``ok`` (bool).

Optional: every ``bad_every``-th message is malformed instead (cycling through not-JSON, a contract violation
and a wrong type; counted as ``bad_sent``, never part of the readings), and a probe message (measurement
``bench_probe``, device ``probe-d0``, field ``n``, ``ts`` = wall-clock publish time in ms) every
``probe_interval_s`` on the probe gateway, from which the parent measures publish-to-queryable latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from benchmarks.child import JsonLinesChild
from benchmarks.errors import BenchmarkError
from hub.mqtt import codec
from ioc.stack.mosquitto import gateway_client_id
from wire.v1 import MAX_DEVICES_PER_GATEWAY, DeviceInfo, State, encode

log = logging.getLogger(__name__)

LOAD_MEASUREMENT: Final = "bench_load"
PROBE_MEASUREMENT: Final = "bench_probe"
#: Not the probe gateway's own id (``probe``), which the hub keeps for the agent's own readings (kind ``agent``).
PROBE_DEVICE: Final = "probe-d0"
CONNECT_TIMEOUT_S: Final = 10.0
STOP_TIMEOUT_S: Final = 15.0
_BAD_PAYLOADS: Final = (
    b"{not json",
    b'{"session": "x", "seq": 1, "readings": []}',  # contract: session too short, no readings
    b'{"session": "bad-session-1", "seq": "one", "readings": [{}]}',  # wrong types
)


@dataclass(frozen=True, slots=True)
class GatewayAccount:
    site: str
    gateway: str
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class LoadConfig:
    host: str
    port: int
    gateways: list[GatewayAccount]
    rate: float
    """Messages per second over all gateways; 0: as fast as possible."""
    readings_per_message: int
    duration_s: float
    devices: int = 100
    base_ts_ms: int = 0
    """0: the wall clock at start, minus ten minutes."""
    bad_every: int = 0
    probe: GatewayAccount | None = None
    probe_interval_s: float = 0.25
    max_outstanding: int = 20_000
    """Published but not yet PUBACKed, over all gateways: the generator waits above it."""
    ack_timeout_s: float = 120.0
    # Many gateways (benchmarks/scale.py): as a city's agents behave, not only as a firehose.
    keepalive_s: int = 60
    """The connections' MQTT keep-alive."""
    birth_keepalive: bool = False
    """The births promise a data message at least every ``keepalive_s`` (``State.keepalive_s``), as agents' do."""
    device_interval_s: float = 3600.0
    """Each device's poll interval in the births (the hub's inactivity timeout is 3 x this)."""
    reconnect: bool = False
    """A gateway whose connection drops connects again at once (no backoff: after a broker restart, every
    gateway at the same moment, a birth storm) with a new session and birth, and publishes on; messages left
    unacknowledged on the dropped connection are counted as ``abandoned``, turns it missed as ``skipped``."""
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    """One connection's TCP connect plus CONNACK, and all births' PUBACKs."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoadConfig:
        data = json.loads(text)
        data["gateways"] = [GatewayAccount(**g) for g in data["gateways"]]
        if data.get("probe"):
            data["probe"] = GatewayAccount(**data["probe"])
        return cls(**data)


@dataclass(slots=True)
class LoadResult:
    published: int = 0
    """Messages published (bad ones and probes excluded)."""
    acked: int = 0
    readings: int = 0
    bad_sent: int = 0
    probes: int = 0
    first_publish: float = 0.0
    """CLOCK_MONOTONIC."""
    last_publish: float = 0.0
    last_puback: float = 0.0
    started_wall: float = 0.0
    abandoned: int = 0
    """Messages left unacknowledged on connections that dropped (``LoadConfig.reconnect``)."""
    skipped: int = 0
    """Turns of gateways that were reconnecting (``LoadConfig.reconnect``): not published."""
    reconnects: list[float] = field(default_factory=list)
    """CLOCK_MONOTONIC of each reconnect's CONNACK (``LoadConfig.reconnect``)."""
    last_seq: dict[str, int] = field(default_factory=dict)
    """``site/gateway`` -> the last seq sent."""
    readings_by_gateway: dict[str, int] = field(default_factory=dict)


def monotonic() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


# ------------------------------------------------------------------------------------------------ child side
# A minimal MQTT 5 publisher on asyncio (the codec is the hub's, :mod:`hub.mqtt.codec`): paho-mqtt, one client
# thread per gateway, topped out at ~5-6k messages/s here, below the rates the benchmark must offer. Each
# gateway connection writes the PUBLISH packets of a whole tick with one ``write``, keeps at most the broker's
# Receive Maximum unacknowledged (from its CONNACK; Mosquitto sends its ``max_inflight_messages``), and counts
# the PUBACKs: only a PUBACK with a success reason code counts as sent.


class _Gateway(asyncio.Protocol):
    def __init__(self, account: GatewayAccount, counter: _AckCounter) -> None:
        self.account = account
        self.topic = f"ioc/v1/{account.site}/{account.gateway}/data"
        self._topic_field = len(self.topic).to_bytes(2, "big") + self.topic.encode()
        self.session = f"load-{secrets.token_hex(6)}"
        self.seq = 0
        self.k = 0
        self.device_prefix = f"{account.gateway}-d".encode()
        self.quota = 65535
        self.inflight = 0
        self._next_id = 0
        self._counter = counter
        self._buf = b""
        self._out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[bytes] = loop.create_future()
        self.error = ""
        #: Set by :meth:`keep_connected`: where to connect again, and the birth's devices.
        self._again: tuple[str, int, LoadConfig, list[tuple[str, str]], LoadResult] | None = None
        self._reconnecting = False
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        try:
            packets, used = codec.parse_packets(buf)
        except codec.MqttProtocolError as exc:
            self._fail(f"malformed packet from the broker: {exc}")
            return
        self._buf = buf[used:]
        counter = self._counter
        for packet in packets:
            if not isinstance(packet, codec.Packet):
                continue  # a PUBLISH: the generator subscribes to nothing
            if packet.type == codec.PUBACK:
                self.inflight -= 1
                if len(packet.body) > 2 and packet.body[2] >= 0x80:
                    counter.rejected += 1
                    if not counter.rejection:
                        counter.rejection = codec.reason_text(packet.body[2])
                else:
                    counter.count += 1
                counter.last = monotonic()
            elif packet.type == codec.CONNACK and not self.connack.done():
                self.connack.set_result(packet.body)
            elif packet.type == codec.DISCONNECT:
                code, reason = codec.decode_disconnect(packet.body)
                self._fail(f"the broker disconnected {self.account.username}: {codec.reason_text(code)} {reason}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._again is not None and not self.closing:
            if not self.connack.done():
                self.connack.set_exception(BenchmarkError(f"{self.account.username}: connection lost before CONNACK"))
            self._counter.abandoned += self.inflight
            self.inflight = 0
            self._out = []
            self._buf = b""
            if not self._reconnecting:
                task = asyncio.get_running_loop().create_task(self._reconnect())
                _RECONNECTS.add(task)
                task.add_done_callback(_RECONNECTS.discard)
            return
        self._fail(f"connection of {self.account.username} lost: {exc or 'closed by the broker'}")

    def keep_connected(
        self, host: str, port: int, config: LoadConfig, devices: list[tuple[str, str]], result: LoadResult
    ) -> None:
        """From now on a dropped connection is connected again (``LoadConfig.reconnect``)."""
        self._again = (host, port, config, devices, result)

    async def _reconnect(self) -> None:
        """Connect again until it works (every 0.2 s: the broker may not listen yet), with a new session, and
        publish its birth (retained)."""
        assert self._again is not None
        host, port, config, devices, result = self._again
        self._reconnecting = True
        try:
            await self._connect_again(host, port, config, devices, result)
        finally:
            self._reconnecting = False

    async def _connect_again(
        self, host: str, port: int, config: LoadConfig, devices: list[tuple[str, str]], result: LoadResult
    ) -> None:
        while not self.closing:
            self.connack = asyncio.get_running_loop().create_future()
            self.error = ""
            try:
                await self.connect(host, port, keepalive_s=config.keepalive_s, timeout_s=config.connect_timeout_s)
            except BenchmarkError:
                if self.transport is not None:
                    self.transport.abort()
                await asyncio.sleep(0.2)
                continue
            result.reconnects.append(monotonic())
            self.session = f"load-{secrets.token_hex(6)}"
            self.seq = 0
            self._counter.births += 1  # its PUBACK is not a data message's
            self.birth(devices, config.keepalive_s if config.birth_keepalive else None, config.device_interval_s)
            self.flush()
            return

    def _fail(self, why: str) -> None:
        if not self.error:
            self.error = why
        if not self.connack.done():
            self.connack.set_exception(BenchmarkError(why))
        if self.transport is not None:
            self.transport.abort()

    async def connect(
        self, host: str, port: int, *, keepalive_s: int = 60, timeout_s: float = CONNECT_TIMEOUT_S
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                await loop.create_connection(lambda: self, host, port)
                assert self.transport is not None
                self.transport.write(
                    codec.encode_connect(
                        # The broker binds a gateway's account to the agent's client id (ioc/stack/mosquitto.py).
                        gateway_client_id(self.account.site, self.account.gateway),
                        keepalive_s=keepalive_s,
                        clean_start=True,
                        username=self.account.username,
                        password=self.account.password,
                    )
                )
                connack = codec.decode_connack(await self.connack)
        except (OSError, TimeoutError) as exc:
            raise BenchmarkError(f"cannot connect to {host}:{port}: {exc or type(exc).__name__}") from exc
        if connack.reason_code >= 0x80:
            raise BenchmarkError(
                f"the broker refused {self.account.username}: {codec.reason_text(connack.reason_code)}"
            )
        quota = connack.properties.get(codec.RECEIVE_MAXIMUM)
        if isinstance(quota, int):
            self.quota = quota

    def add(self, payload: bytes) -> None:
        """Queue one QoS 1 PUBLISH of ``payload`` (written by :meth:`flush`)."""
        self._next_id = self._next_id % 65535 + 1
        body_len = len(self._topic_field) + 3 + len(payload)
        self._out.append(
            b"\x32"
            + codec.encode_varint(body_len)
            + self._topic_field
            + self._next_id.to_bytes(2, "big")
            + b"\x00"
            + payload
        )
        self.inflight += 1

    def birth(self, devices: list[tuple[str, str]], keepalive_s: int | None = None, interval_s: float = 3600.0) -> None:
        """Queue the retained birth of this session announcing ``devices`` (id, kind), each polled every
        ``interval_s``, promising data every ``keepalive_s`` if given (written by :meth:`flush`)."""
        state = State(
            online=True,
            session=self.session,
            ts=int(time.time() * 1000),
            agent="loadgen",
            devices=[DeviceInfo(device, kind, "bench", interval_s) for device, kind in devices],
            keepalive_s=keepalive_s,
        )
        self._next_id = self._next_id % 65535 + 1
        topic = f"ioc/v1/{self.account.site}/{self.account.gateway}/state"
        self._out.append(codec.encode_publish(topic, encode(state), qos=1, packet_id=self._next_id, retain=True))
        self.inflight += 1

    def flush(self) -> None:
        if self._out:
            if self.error or self.transport is None:
                raise BenchmarkError(self.error or "not connected")
            self.transport.write(b"".join(self._out))
            self._out = []

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.write(codec.DISCONNECT_PACKET)
            self.transport.close()


#: Reconnect tasks running (a reference each, so none is collected mid-way).
_RECONNECTS: set[asyncio.Task[None]] = set()


class _AckCounter:
    def __init__(self) -> None:
        self.abandoned = 0
        #: Births of reconnected gateways (published during the load, acknowledged like data).
        self.births = 0
        self.count = 0
        self.rejected = 0
        self.rejection = ""
        self.last = 0.0


def _batch(client: _Gateway, config: LoadConfig, base_ts: int) -> bytes:
    client.seq += 1
    devices = config.devices
    parts = []
    for _ in range(config.readings_per_message):
        k = client.k
        client.k += 1
        parts.append(
            b'{"device":"%s%d","kind":"bench_load","ts":%d,"metrics":{"value":%d.5,"ok":true}}'
            % (client.device_prefix, k % devices, base_ts + k // devices, k)
        )
    return b'{"session":"%s","seq":%d,"readings":[%s]}' % (client.session.encode(), client.seq, b",".join(parts))


async def _announce(clients: list[_Gateway], probe: _Gateway | None, config: LoadConfig, counter: _AckCounter) -> None:
    """Every gateway's birth, acknowledged by the broker; the counter is reset afterwards (births are not load)."""
    if config.devices > MAX_DEVICES_PER_GATEWAY:
        raise BenchmarkError(f"{config.devices} devices: a birth announces at most {MAX_DEVICES_PER_GATEWAY}")
    keepalive = config.keepalive_s if config.birth_keepalive else None
    for client in clients:
        client.birth(gateway_devices(client, config), keepalive, config.device_interval_s)
    if probe is not None:
        probe.birth([(PROBE_DEVICE, PROBE_MEASUREMENT)], keepalive)
    everyone = [*clients, *([probe] if probe else [])]
    for client in everyone:
        client.flush()
    deadline = monotonic() + config.connect_timeout_s
    while counter.count + counter.rejected < len(everyone):
        errors = [c.error for c in everyone if c.error]
        if errors:
            raise BenchmarkError(errors[0])
        if monotonic() > deadline:
            raise BenchmarkError(
                f"{counter.count} of {len(everyone)} births acknowledged within {config.connect_timeout_s} s"
            )
        await asyncio.sleep(0.01)
    if counter.rejected:
        raise BenchmarkError(f"the broker refused {counter.rejected} births ({counter.rejection})")
    counter.count = 0
    counter.last = 0.0


def gateway_devices(client: _Gateway, config: LoadConfig) -> list[tuple[str, str]]:
    """(device id, kind) of the devices a generated gateway announces."""
    return [(f"{client.device_prefix.decode()}{i}", LOAD_MEASUREMENT) for i in range(config.devices)]


def run_load(config: LoadConfig, go: threading.Event | None = None, stop: threading.Event | None = None) -> LoadResult:
    """Connect, (wait for ``go``,) publish for ``duration_s`` (or until ``stop``), wait for the PUBACKs; the
    counts."""
    return asyncio.run(_run_load(config, go, stop))


async def _run_load(config: LoadConfig, go: threading.Event | None, stop: threading.Event | None = None) -> LoadResult:  # noqa: PLR0912, PLR0915 - one timed loop, in one place
    counter = _AckCounter()
    clients = [_Gateway(account, counter) for account in config.gateways]
    probe = _Gateway(config.probe, counter) if config.probe else None
    everyone = [*clients, *([probe] if probe else [])]
    result = LoadResult()
    try:
        await asyncio.gather(
            *(
                c.connect(config.host, config.port, keepalive_s=config.keepalive_s, timeout_s=config.connect_timeout_s)
                for c in everyone
            )
        )
        last_connack = monotonic()
        quota = min(c.quota for c in everyone)
        log.info("%d gateways connected; the broker's Receive Maximum: %d per connection", len(clients), quota)
        await _announce(clients, probe, config, counter)
        log.info("%d births published (retained) and acknowledged", len(everyone))
        if config.reconnect:
            for c in clients:
                c.keep_connected(config.host, config.port, config, gateway_devices(c, config), result)
        _answer(
            "ready",
            gateways=len(clients),
            receive_maximum=quota,
            sessions=[c.session for c in everyone],
            last_connack=last_connack,
        )
        if go is not None:
            await asyncio.to_thread(go.wait)
        base_ts = config.base_ts_ms or int(time.time() * 1000) - 600_000
        result.started_wall = time.time()
        start = result.first_publish = monotonic()
        end = start + config.duration_s
        sent = 0  # all messages published (bad and probes included): what the outstanding cap counts
        next_probe = start
        g = 0
        n_clients = len(clients)
        skipped = 0  # turns of reconnecting gateways (LoadConfig.reconnect)
        dirty: set[_Gateway] = set()  # the gateways with packets to write this tick: 5,000 are too many to visit
        while True:
            now = monotonic()
            if now >= end or (stop is not None and stop.is_set()):
                break
            if probe is not None and now >= next_probe and probe.inflight < probe.quota:
                result.probes += 1
                ts = int(time.time() * 1000)
                probe.seq += 1
                probe.add(
                    b'{"session":"%s","seq":%d,"readings":[{"device":"%s","kind":"%s","ts":%d,'
                    % (probe.session.encode(), probe.seq, PROBE_DEVICE.encode(), PROBE_MEASUREMENT.encode(), ts)
                    + b'"metrics":{"n":%d}}]}' % result.probes
                )
                probe.flush()
                sent += 1
                next_probe += config.probe_interval_s
            target = int(config.rate * (now - start)) + 1 if config.rate > 0 else sent + 500
            burst = 0
            blocked = 0
            while sent + skipped < target and burst < 2000 and blocked < n_clients:
                if (
                    sent + counter.births - counter.count - counter.rejected - counter.abandoned
                    >= config.max_outstanding
                ):
                    break
                client = clients[g]
                g = (g + 1) % n_clients
                if client.transport is None and config.reconnect:
                    skipped += 1  # its turn passes: the rate holds over time, with no catching up afterwards
                    continue
                if client.inflight >= client.quota:
                    blocked += 1
                    continue
                blocked = 0
                index = result.published + result.bad_sent + 1
                if config.bad_every and index % config.bad_every == 0:
                    client.add(_BAD_PAYLOADS[(index // config.bad_every) % len(_BAD_PAYLOADS)])
                    result.bad_sent += 1
                else:
                    client.add(_batch(client, config, base_ts))
                    result.published += 1
                sent += 1
                burst += 1
                dirty.add(client)
            for client in dirty:
                if client.transport is not None or not config.reconnect:
                    client.flush()
            dirty.clear()
            # Yield to the loop (PUBACKs are read there); sleep when on target or out of quota.
            await asyncio.sleep(0.001 if sent >= target or burst == 0 else 0)
        result.last_publish = monotonic()
        deadline = monotonic() + config.ack_timeout_s
        while counter.count + counter.rejected + counter.abandoned < sent + counter.births and monotonic() < deadline:
            if any(c.error for c in everyone) and not config.reconnect:
                break
            await asyncio.sleep(0.01)
        acked, result.last_puback = counter.count - counter.births, counter.last
        result.abandoned, result.skipped = counter.abandoned, skipped
        if counter.rejected:
            log.error("the broker refused %d publishes (%s)", counter.rejected, counter.rejection)
        result.acked = acked - result.probes - result.bad_sent
        for c in clients:
            name = f"{c.account.site}/{c.account.gateway}"
            result.last_seq[name] = c.seq
            result.readings_by_gateway[name] = c.k
        result.readings = sum(result.readings_by_gateway.values())
        errors = [c.error for c in everyone if c.error and not (config.reconnect and c.transport is not None)]
        if errors:
            raise BenchmarkError(errors[0])
    finally:
        for c in everyone:
            with contextlib.suppress(Exception):
                c.close()
    return result


def _answer(event: str, **data: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


def child_main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s loadgen %(levelname)s %(message)s")
    try:
        config = LoadConfig.from_json(sys.stdin.readline())
        go = threading.Event()
        stop = threading.Event()

        def wait_go() -> None:
            for line in sys.stdin:
                command = json.loads(line).get("cmd")
                if command == "go":
                    go.set()
                elif command == "stop":
                    stop.set()
            if not go.is_set():
                os._exit(1)  # the parent went away before "go"
            stop.set()

        threading.Thread(target=wait_go, daemon=True).start()
        result = run_load(config, go, stop)
        _answer("done", **asdict(result))
    except (BenchmarkError, ValueError, KeyError, TypeError, OSError) as exc:
        log.exception("load generator failed")
        _answer("error", error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


# ------------------------------------------------------------------------------------------------ parent side


class LoadProcess:
    """``with LoadProcess(config, log_path, cwd=...) as load:`` starts the generator and waits until it is ready;
    :meth:`go` starts publishing, :meth:`wait_done` returns its :class:`LoadResult`."""

    def __init__(self, config: LoadConfig, log_path: Path, *, cwd: Path, ready_timeout_s: float = 30.0) -> None:
        self._config = config
        self._ready_timeout_s = ready_timeout_s
        self._child = JsonLinesChild(
            "benchmarks.loadgen", "the load generator", log_path, cwd=cwd, stop_timeout_s=STOP_TIMEOUT_S
        )
        #: The sessions of the gateways' births (the probe gateway's last), once ready.
        self.sessions: list[str] = []
        #: The whole "ready" answer (``last_connack``: CLOCK_MONOTONIC of the last gateway's CONNACK).
        self.ready_info: dict[str, Any] = {}

    def __enter__(self) -> Self:
        self._child.start(self._config.to_json())
        try:
            self.ready_info = self._child.expect("ready", self._ready_timeout_s)
        except BaseException:
            self._child.stop()
            raise
        self.sessions = list(self.ready_info["sessions"])
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._child.stop()

    @property
    def pid(self) -> int:
        return self._child.pid

    def go(self) -> None:
        self._child.send({"cmd": "go"})

    def stop(self) -> None:
        """Stop publishing before ``duration_s`` is over (:meth:`wait_done` then has the counts)."""
        self._child.send({"cmd": "stop"})

    def wait_done(self, timeout_s: float) -> LoadResult:
        data = self._child.expect("done", timeout_s)
        data.pop("event")
        return LoadResult(**data)

    def log_tail(self, lines: int = 20) -> str:
        return self._child.log_tail(lines)


if __name__ == "__main__":
    sys.exit(child_main())
