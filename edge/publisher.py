"""The uplink: one MQTT 5 connection at a time (aiomqtt), each a new session with birth, will and death.

On every connect the publisher picks a new session id, registers the Last Will ``State(online=False,
reason="connection lost")`` (retained, QoS 1) and publishes the retained birth ``State(online=True, devices=[...])``.
While connected, two pumps run side by side:

- data: batches of up to ``max_batch`` readings and :data:`wire.v1.MAX_MESSAGE_BYTES` bytes (a batch that would
  be larger is cut, :func:`encode_batch`), as ``DataBatch(session, seq=1, 2, 3...)``; a reading leaves
  the outbox only after its QoS 1 publish was acknowledged, so on a disconnect it stays and goes out after the
  reconnect. What was queued when a session's connect attempt began is its backlog, sent marked ``replay``;
  live readings go first (when a batch is full or its oldest has waited ``max_delay_ms``), the backlog
  between them at up to ``replay_rate`` readings/s (:mod:`edge.outbox_replay` on ordering);
- events: device health events, stamped with the current session;
- snapshots (given a :class:`~edge.snapshots.SnapshotBox`): the cameras' JPEGs waiting, oldest first, on the
  ``snapshot`` channel; one leaves the box only once the broker acknowledged it, so one whose publish failed
  goes after the reconnect (unless a newer one of its camera replaced it). Never through the outbox;
- births: when the devices served change while connected (:meth:`Publisher.set_devices`, after a
  ``reload_config`` or a ``set_interval``), a new retained birth of the same session announces them.

Keep-alive promise: given a ``heartbeat`` (the agent's self-metrics sampler), the birth carries
``keepalive_s`` = the connection's MQTT keep-alive, and the data pump keeps it (``docs/protocol.md``): once
:func:`heartbeat_after` seconds passed without a data message, it sends the live readings waiting at once
(not waiting for ``max_delay_ms``), or, when there are none, queues a heartbeat reading and sends that. So a
gateway whose devices poll rarely still publishes on ``data`` at least once per keep-alive, and a hub can take
1.5 x keep-alive of silence as the gateway gone. Without a ``heartbeat`` the birth makes no such promise.

Publish latency: each live batch's readings, from sampling to the PUBACK, go into ``latency``
(:class:`~edge.latency.LatencyWindow`, read by the self-metrics).

Commands: on every connect, before the birth (so a hub that reacts to the birth finds the subscription in
place), the publisher subscribes with QoS 1 to the gateway's own ``.../cmd`` topic and hands every payload
received there, undecoded, to ``on_command`` (an ``async`` callable given to the constructor). It is awaited in
the receive loop, in arrival order: it should hand the payload off quickly (to a queue or a task) and must not
wait for the device. An exception it raises is logged and the next command is still delivered; it never ends
the session. Decoding, policy and the answer belong to the caller, which answers with :meth:`Publisher.publish_ack`
(QoS 1 on ``.../cmd/ack``, never stored on disk: an ack for a command whose session is gone is worth nothing).
Commands sent while the gateway is disconnected are not kept for it (each connect is a clean start).

A lost connection (socket closed, keepalive expired, publish not acknowledged within ``publish_timeout_s``)
ends the session; the broker publishes the will, and the publisher reconnects with capped exponential backoff
and jitter. Disconnect and reconnect are logged once each. Leaving ``async with`` is the clean shutdown: what
is queued is sent for up to ``drain_timeout_s``, then the retained death ``State(online=False,
reason="shutdown")`` with the same session id, then DISCONNECT (so the broker drops the will).

Topics and payloads come only from :mod:`wire.v1` (``topic()``, ``encode()``). aiomqtt errors become
:class:`~edge.errors.UplinkError` here and go no further.

Known limit: aiomqtt ignores the reason code of a PUBACK, so a publish the broker refused (MQTT 5 "not
authorized", e.g. a wrong ACL) counts as sent; the broker's log shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Final, Self

import aiomqtt
import msgspec
from paho.mqtt.reasoncodes import ReasonCode

from common.tasks import cancel_and_wait
from devices.driver import now_ms
from edge.backoff import Backoff
from edge.config import BrokerConfig, PublishConfig
from edge.errors import ConfigError, ConnectionLost, UplinkError
from edge.events import EventQueue
from edge.latency import LatencyWindow
from edge.outbox import Lane, Outbox
from edge.outbox_replay import ReplayLimiter, Step, next_step
from edge.problems import plain_tcp_warning
from edge.session import Session
from edge.snapshots import SnapshotBox
from edge.stats import EdgeStats
from wire.v1 import MAX_MESSAGE_BYTES, QOS, Channel, CommandAck, DataBatch, DeviceInfo, Reading, encode, topic

log = logging.getLogger(__name__)

#: paho-mqtt's own timeout of the TCP connect (``Client.connect_timeout``, default 5 s), which runs before
#: ``connect_timeout_s`` starts counting the wait for CONNACK; the outer guard allows for both.
PAHO_SOCKET_CONNECT_TIMEOUT_S: Final = 5.0
#: After a failed publish on a connection that still looks open, how long the death message may take.
ABANDON_PUBLISH_TIMEOUT_S: Final = 2.0
#: How long the pumps of a session may take to stop once cancelled.
PUMP_STOP_TIMEOUT_S: Final = 5.0
#: Extra time allowed for stopping beyond the drain, death and disconnect timeouts.
STOP_MARGIN_S: Final = 2.0

#: Receives the raw payload of each message on the gateway's ``cmd`` topic (see the module docstring).
CommandHandler = Callable[[bytes], Awaitable[None]]
#: Makes the reading(s) sent when nothing else was for a keep-alive (the agent's self-metrics sample).
Heartbeat = Callable[[], Sequence[Reading]]
#: A heartbeat reading is queued at most this often (when the outbox cannot store it, not in a loop).
HEARTBEAT_RETRY_S: Final = 1.0


def heartbeat_after(keepalive_s: float) -> float:
    """Seconds without a data message after which the pump sends one: the keep-alive less a margin (a fifth,
    at least 1 s) for the publish itself and the hub's clock, so the promise holds with time to spare."""
    return max(keepalive_s - max(1.0, keepalive_s / 5), keepalive_s / 2)


def client_id(site: str, gateway: str) -> str:
    """Stable per gateway: a reconnect takes over a half-open old connection at once (and fires its will
    before the new birth), instead of leaving it to expire after the keepalive, maybe after our new birth.
    ``{site}.{gateway}``: ids cannot hold a dot, so no two gateways share one (with a dash, site ``a-b`` gateway
    ``c`` and site ``a`` gateway ``b-c`` would; each could then knock the other offline)."""
    return f"ioc-edge-{site}.{gateway}"


def tls_context(broker: BrokerConfig) -> ssl.SSLContext | None:
    """The TLS context of the broker connection (None without TLS). Loads the CA file once, at start."""
    if not broker.tls:
        return None
    try:
        return ssl.create_default_context(cafile=str(broker.ca_file) if broker.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"broker.ca_file: cannot load {broker.ca_file}: {exc}") from exc


#: Encodes one reading as it appears inside a batch (to measure a batch over the limit).
_encode_reading: Final = msgspec.json.Encoder().encode


class ReadingTooLarge(ValueError):
    """One reading alone encodes to more than the message limit: no batch can carry it."""


def encode_batch(
    session_id: str, seq: int, readings: Sequence[Reading], *, replay: bool, max_bytes: int = MAX_MESSAGE_BYTES
) -> tuple[bytes, int]:
    """The ``DataBatch`` of the longest prefix of ``readings`` that encodes to at most ``max_bytes``, and how
    many readings it holds (the rest go in the next batch). Raise :class:`ReadingTooLarge` when even the first
    reading alone is too large.

    Batches are counted in readings (``publish.max_batch``) but the contract bounds a message in bytes
    (:data:`wire.v1.MAX_MESSAGE_BYTES`; the broker and the hub refuse more). The common case costs one encode;
    only a batch over the limit has its readings measured one by one, and is cut where the bytes run out.
    """
    payload = encode(DataBatch(session=session_id, seq=seq, readings=list(readings), replay=replay))
    if len(payload) <= max_bytes:
        return payload, len(readings)
    sizes = [len(_encode_reading(r)) for r in readings]
    # The batch is its envelope plus the readings joined by commas (msgspec writes JSON without spaces).
    envelope = len(payload) - sum(sizes) - (len(sizes) - 1)
    total = envelope - 1
    count = 0
    for size in sizes:
        if total + size + 1 > max_bytes:
            break
        total += size + 1
        count += 1
    if count == 0:
        raise ReadingTooLarge(
            f"a reading of device {readings[0].device!r} encodes to {sizes[0]} bytes, "
            f"more than a message may hold ({max_bytes} bytes with its batch)"
        )
    payload = encode(DataBatch(session=session_id, seq=seq, readings=list(readings[:count]), replay=replay))
    return payload, count


class Publisher:
    """``async with Publisher(...):`` keeps a broker session up in a background task; leaving shuts it down."""

    def __init__(
        self,
        *,
        site: str,
        gateway: str,
        broker: BrokerConfig,
        publish: PublishConfig,
        devices: Sequence[DeviceInfo],
        outbox: Outbox,
        events: EventQueue,
        stats: EdgeStats,
        agent_version: str,
        rng: random.Random | None = None,
        on_command: CommandHandler | None = None,
        heartbeat: Heartbeat | None = None,
        latency: LatencyWindow | None = None,
        snapshots: SnapshotBox | None = None,
    ) -> None:
        self._broker = broker
        self._publish_config = publish
        self._devices = list(devices)
        #: Set by :meth:`set_devices`: the session's birth pump publishes a new birth.
        self._devices_changed = asyncio.Event()
        self._heartbeat = heartbeat
        self._latency = latency
        self._outbox = outbox
        self._events = events
        self._snapshots = snapshots
        self._stats = stats
        self._agent = agent_version
        self._rng = rng
        self._client_id = client_id(site, gateway)
        self._state_topic = topic(site, gateway, Channel.STATE)
        self._data_topic = topic(site, gateway, Channel.DATA)
        self._event_topic = topic(site, gateway, Channel.EVENT)
        self._cmd_topic = topic(site, gateway, Channel.CMD)
        self._ack_topic = topic(site, gateway, Channel.CMD_ACK)
        self._snapshot_topic = topic(site, gateway, Channel.SNAPSHOT)
        self._on_command = on_command
        self._client: aiomqtt.Client | None = None
        self._tls = tls_context(broker)
        self._where = f"{broker.host}:{broker.port}{' (TLS)' if broker.tls else ''}"
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: The session of the current connection (None while disconnected).
        self.session: Session | None = None

    def set_devices(self, devices: Sequence[DeviceInfo]) -> None:
        """The devices served changed: announce them in a new retained birth of the current session (at once
        if connected; otherwise the next connect's birth carries them). Changes in quick succession (a reload
        touching several devices) are announced together; the same devices again announce nothing."""
        devices = list(devices)
        if devices == self._devices:
            return
        self._devices = devices
        self._devices_changed.set()

    async def rebirth(self) -> str:
        """Publish a fresh birth of the current session now (the ``rebirth`` command), returning once the broker
        has it: what was published. :class:`UplinkError` when not connected (the next connect's birth follows)."""
        client, session = self._client, self.session
        if client is None or session is None:
            raise UplinkError("not connected to the broker; the next connect publishes a birth")
        await self._publish_birth(client, session, again=True)
        return f"birth {session.births} of session {session.id} published ({len(self._devices)} devices)"

    @property
    def keepalive_s(self) -> int | None:
        """The ``keepalive_s`` of the birth: the promise of a data message at least that often, if kept."""
        return self._broker.keepalive_s if self._heartbeat is not None else None

    # ------------------------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        if self._broker.plain_tcp_to_remote:
            log.warning(plain_tcp_warning(self._broker.host))
        self._task = asyncio.create_task(self._run(), name="edge-publisher")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        budget = (
            self._publish_config.drain_timeout_s
            + 2 * self._broker.publish_timeout_s
            + self._broker.connect_timeout_s
            + PAHO_SOCKET_CONNECT_TIMEOUT_S
            + STOP_MARGIN_S
        )
        done, _ = await asyncio.wait({task}, timeout=budget)
        if not done:
            log.warning("the publisher did not stop within %.0f s; cancelling it", budget)
            await cancel_and_wait([task], PUMP_STOP_TIMEOUT_S)

    async def _run(self) -> None:
        backoff = Backoff(self._broker.reconnect_min_s, self._broker.reconnect_max_s, self._rng)
        connected_before = False
        down_since: float | None = None  # monotonic; set while the uplink is down
        while not self._stopping.is_set():
            session = Session()
            # What is queued now is this session's backlog (replayed, marked as such); what is put during the
            # connect attempt is already live, so the first polls of a starting agent are not a replay.
            await self._outbox.start_backlog()
            try:
                client = await self._connect(session)
            except Exception as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning(
                        "cannot reach the broker at %s: %s (retrying with backoff)",
                        self._where,
                        exc,
                        exc_info=not isinstance(exc, UplinkError),
                    )
                else:
                    log.debug("broker at %s still unreachable: %s", self._where, exc)
                await self._pause(backoff.next())
                continue
            backoff.reset()
            if connected_before:
                self._stats.reconnects += 1
                log.info(
                    "reconnected to %s after %.1f s (session %s, %d readings waiting)",
                    self._where,
                    time.monotonic() - (down_since or time.monotonic()),
                    session.id,
                    len(self._outbox),
                )
            else:
                log.info("connected to %s as %s (session %s)", self._where, self._client_id, session.id)
            connected_before = True
            down_since = None
            try:
                await self._serve(client, session)
            except UplinkError as exc:
                down_since = time.monotonic()
                log.warning("lost the broker connection (session %s): %s; reconnecting", session.id, exc)
                await self._pause(backoff.next())
            except Exception:
                # A bug must not end the uplink for good: log it loudly, then start a new session.
                down_since = time.monotonic()
                log.exception("unexpected error in the broker session %s; reconnecting", session.id)
                await self._pause(backoff.next())
            else:
                return

    async def _pause(self, delay_s: float) -> None:
        """Sleep ``delay_s``, or less if the publisher is asked to stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stopping.wait()

    # ------------------------------------------------------------------------------------------- one session

    async def _connect(self, session: Session) -> aiomqtt.Client:
        broker = self._broker
        will = aiomqtt.Will(topic=self._state_topic, payload=encode(session.will()), qos=QOS, retain=True)
        client = aiomqtt.Client(
            broker.host,
            broker.port,
            username=broker.username,
            password=broker.password.get_secret_value() if broker.password is not None else None,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            keepalive=broker.keepalive_s,
            timeout=broker.connect_timeout_s,
            tls_context=self._tls,
        )
        try:
            # aiomqtt bounds the wait for CONNACK by `timeout`; the guard also covers the TCP/TLS connect.
            async with asyncio.timeout(broker.connect_timeout_s + PAHO_SOCKET_CONNECT_TIMEOUT_S + 1.0):
                await client.__aenter__()
        except TimeoutError as exc:
            raise UplinkError(f"no connection within {broker.connect_timeout_s:g} s") from exc
        except aiomqtt.MqttError as exc:
            raise UplinkError(str(exc) or type(exc).__name__) from exc
        return client

    async def _serve(self, client: aiomqtt.Client, session: Session) -> None:
        """Run one session until a stop (clean shutdown, returns) or a failure (raises, after ending it)."""
        self.session = session
        self._client = client
        try:
            await self._session(client, session)
        except Exception as exc:
            self._client = None
            await self._abandon(client, session, "" if isinstance(exc, ConnectionLost) else str(exc))
            raise
        finally:
            self._client = None
            self.session = None

    async def _session(self, client: aiomqtt.Client, session: Session) -> None:
        """Birth, then the pumps until the link fails (:class:`UplinkError`) or a stop (then the clean shutdown)."""
        await self._subscribe_commands(client)
        await self._publish_birth(client, session)
        tasks = {
            asyncio.create_task(self._watch(client), name="edge-mqtt-watch"),
            asyncio.create_task(self._pump_data(client, session), name="edge-mqtt-data"),
            asyncio.create_task(self._pump_events(client, session), name="edge-mqtt-events"),
            asyncio.create_task(self._pump_births(client, session), name="edge-mqtt-births"),
        }
        if self._snapshots is not None:
            tasks.add(
                asyncio.create_task(self._pump_snapshots(client, session, self._snapshots), name="edge-mqtt-snapshots")
            )
        stopper = asyncio.create_task(self._stopping.wait(), name="edge-mqtt-stop")
        try:
            done, _ = await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait({*tasks, stopper}, PUMP_STOP_TIMEOUT_S)
        failed = [t for t in done if t is not stopper and not t.cancelled() and t.exception() is not None]
        if failed:
            raise _as_uplink_error(failed[0])
        await self._shut_down(client, session)

    async def _publish_birth(self, client: aiomqtt.Client, session: Session, *, again: bool = False) -> None:
        """The retained birth with the devices served now (cleared first: a change made while it is being
        published gets a birth of its own)."""
        self._devices_changed.clear()
        devices = self._devices
        await self._publish(
            client, self._state_topic, encode(session.birth(self._agent, devices, self.keepalive_s)), True
        )
        self._stats.births_sent += 1
        log.info("published %sbirth (session %s, %d devices)", "a new " if again else "", session.id, len(devices))

    async def _pump_births(self, client: aiomqtt.Client, session: Session) -> None:
        while True:
            await self._devices_changed.wait()
            await self._publish_birth(client, session, again=True)

    async def _subscribe_commands(self, client: aiomqtt.Client) -> None:
        """Subscribe (QoS 1) to the gateway's own ``cmd`` topic; a refusal (ACL) is logged, not fatal."""
        try:
            granted = await client.subscribe(self._cmd_topic, qos=QOS, timeout=self._broker.publish_timeout_s)
        except aiomqtt.MqttError as exc:
            raise UplinkError(f"subscribe to {self._cmd_topic} failed: {exc}") from exc
        # paho gives MQTT 5 reason codes (``is_failure``) or, for 3.1.1, granted QoS ints (0x80 = failure).
        refused = not granted or any(
            code.is_failure if isinstance(code, ReasonCode) else code >= 0x80 for code in granted
        )
        if refused:
            log.warning("the broker refused the subscription to %s (%s): no commands", self._cmd_topic, granted)

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Deliver commands; end (with :class:`UplinkError`) when the connection drops (aiomqtt reports it to
        message readers)."""
        try:
            async for message in client.messages:
                if str(message.topic) != self._cmd_topic:
                    log.debug("ignoring a message on %s", message.topic)
                    continue
                await self._deliver_command(message.payload)
        except aiomqtt.MqttError as exc:
            cause = f" ({exc.__cause__})" if exc.__cause__ else ""
            raise ConnectionLost(f"connection lost{cause}") from exc
        raise ConnectionLost("connection closed")

    async def _deliver_command(self, payload: object) -> None:
        self._stats.commands_received += 1
        if self._on_command is None:
            log.warning("a command arrived on %s but this agent has no command handler", self._cmd_topic)
            return
        data = payload if isinstance(payload, bytes) else str(payload or "").encode()
        try:
            await self._on_command(data)
        except Exception:
            log.exception("the command handler failed on a message of %d bytes", len(data))

    async def publish_ack(self, ack: CommandAck) -> bool:
        """Publish a command's outcome (QoS 1, on ``.../cmd/ack``) and wait for the broker's PUBACK.

        Returns False, without raising, when there is no connection or the publish failed (the session's own
        pumps notice a lost link). Acks are not stored: one whose connection is gone is not resent.
        """
        client = self._client
        if client is None:
            return False
        try:
            await self._publish(client, self._ack_topic, encode(ack))
        except UplinkError as exc:
            log.warning("could not send the ack of command %s: %s", ack.id, exc)
            return False
        self._stats.acks_sent += 1
        return True

    async def _pump_data(self, client: aiomqtt.Client, session: Session) -> None:
        """Live readings first, the backlog under the replay rate limit (:mod:`edge.outbox_replay`)."""
        outbox = self._outbox
        config = self._publish_config
        max_delay_s = config.max_delay_ms / 1000
        backlog = outbox.lane_len(Lane.BACKLOG)
        if backlog:
            log.info("replaying %d readings held in the outbox (session %s)", backlog, session.id)
        limiter = ReplayLimiter(config.replay_rate, config.max_batch, time.monotonic())
        quiet_limit = None if self.keepalive_s is None else heartbeat_after(self.keepalive_s)
        last_sent = time.monotonic()  # the birth was just acknowledged
        heartbeat_at = -HEARTBEAT_RETRY_S
        while True:
            now = time.monotonic()
            enqueued_at = outbox.live_enqueued_at()
            step = next_step(
                live=outbox.lane_len(Lane.LIVE),
                live_waited_s=0.0 if enqueued_at is None else now - enqueued_at,
                backlog=outbox.lane_len(Lane.BACKLOG),
                limiter=limiter,
                max_batch=config.max_batch,
                max_delay_s=max_delay_s,
                now=now,
            )
            if step.lane is None and quiet_limit is not None:
                due = last_sent + quiet_limit
                if now >= due:
                    # The keep-alive promise: send what is live now, or a heartbeat if nothing is.
                    if not outbox.lane_len(Lane.LIVE) and now - heartbeat_at >= HEARTBEAT_RETRY_S:
                        heartbeat_at = now
                        await outbox.put(self._heartbeat_readings())
                    step = Step(Lane.LIVE, config.max_batch) if outbox.lane_len(Lane.LIVE) else Step(None, wait_s=0.05)
                else:
                    step = Step(None, wait_s=due - now if step.wait_s is None else min(step.wait_s, due - now))
            if step.lane is None:
                await outbox.wait(step.wait_s)
                continue
            sent = await self._send_batch(client, session, step.lane, step.limit)
            if not sent:  # counted but not readable yet (a write in flight): do not spin
                await outbox.wait(0.05)
                continue
            last_sent = time.monotonic()
            if step.lane is Lane.BACKLOG:
                limiter.take(sent, last_sent)
                if not outbox.lane_len(Lane.BACKLOG):
                    log.info("replay done (session %s)", session.id)

    def _heartbeat_readings(self) -> Sequence[Reading]:
        if self._heartbeat is None:
            return []
        try:
            readings = self._heartbeat()
        except Exception:  # a broken sampler must not end the session; the next due time tries again
            log.exception("the keep-alive heartbeat failed")
            return []
        self._stats.heartbeats_sent += 1
        return readings

    async def _send_batch(self, client: aiomqtt.Client, session: Session, lane: Lane, limit: int) -> int:
        """Publish the oldest readings of ``lane`` as one batch, then commit them. A backlog batch is marked
        ``replay``: all its readings were held back (sampled before this session's connect attempt began)."""
        queued = await self._outbox.peek(limit, lane)
        if not queued:
            return 0
        replay = lane is Lane.BACKLOG
        readings = [q.reading for q in queued]
        try:
            payload, count = encode_batch(session.id, session.last_seq + 1, readings, replay=replay)
        except ReadingTooLarge as exc:
            # Never sendable (the broker would close the connection over it, again and again): drop it, loudly.
            log.error("dropping a reading that no message can carry: %s", exc)  # noqa: TRY400 - no traceback
            await self._outbox.commit(queued[0].position, lane)
            self._stats.values_dropped += 1  # a whole reading that broke the contract's size
            return 1
        session.next_seq()  # the seq just encoded
        queued, readings = queued[:count], readings[:count]
        await self._publish(client, self._data_topic, payload)
        # Sent once the broker acknowledged it: counted before the outbox's commit is awaited, so that a stop's
        # deadline cancelling that await (the commit itself still runs on the outbox's thread) cannot leave a batch
        # out of the outbox and out of the counters both.
        self._stats.readings_sent += count
        if replay:
            self._stats.readings_replayed += count
        self._stats.batches_sent += 1
        if self._latency is not None and not replay:
            acked_ms = now_ms()
            self._latency.add(acked_ms - r.ts for r in readings)
        await self._outbox.commit(queued[-1].position, lane)
        return count

    async def _pump_events(self, client: aiomqtt.Client, session: Session) -> None:
        while True:
            await self._events.wait()
            await self._send_event(client, session)

    async def _send_event(self, client: aiomqtt.Client, session: Session) -> None:
        event = self._events.first()
        if event is None:
            return
        await self._publish(client, self._event_topic, encode(event.to_wire(session.id)))
        self._events.remove_first(event)
        self._stats.events_sent += 1

    async def _pump_snapshots(self, client: aiomqtt.Client, session: Session, snapshots: SnapshotBox) -> None:
        while True:
            await snapshots.wait()
            snapshot = snapshots.first()
            if snapshot is None:
                continue
            await self._publish(client, self._snapshot_topic, encode(snapshot.to_wire(session.id)))
            snapshots.remove(snapshot)
            self._stats.snapshots_sent += 1

    async def _publish(
        self, client: aiomqtt.Client, to: str, payload: bytes, retain: bool = False, timeout_s: float | None = None
    ) -> None:
        """One QoS 1 publish, returning once the broker acknowledged it."""
        timeout = self._broker.publish_timeout_s if timeout_s is None else timeout_s
        try:
            await client.publish(to, payload, qos=QOS, retain=retain, timeout=timeout)
        except aiomqtt.MqttError as exc:
            raise UplinkError(f"publish on {to} failed: {exc}") from exc

    async def _shut_down(self, client: aiomqtt.Client, session: Session) -> None:
        """Clean shutdown: send what is queued (bounded), then the death, then DISCONNECT."""
        await self._drain(client, session)
        try:
            await self._publish(client, self._state_topic, encode(session.death()), retain=True)
        except UplinkError as exc:
            log.warning("could not publish the shutdown state (session %s): %s", session.id, exc)
        else:
            log.info("published shutdown state (session %s)", session.id)
        await self._disconnect(client)

    async def _drain(self, client: aiomqtt.Client, session: Session) -> None:
        limit = self._publish_config.drain_timeout_s
        try:
            async with asyncio.timeout(limit):
                # Readings a stopping device task was still writing are sent too, not left for the next start.
                await self._outbox.settle()
                while len(self._events):
                    await self._send_event(client, session)
                for lane in (Lane.LIVE, Lane.BACKLOG):  # no rate limit: the drain is bounded in time
                    while self._outbox.lane_len(lane):
                        if not await self._send_batch(client, session, lane, self._publish_config.max_batch):
                            break
        except (TimeoutError, UplinkError) as exc:
            log.warning(
                "shutdown: %d readings and %d events not sent (%s)",
                len(self._outbox),
                len(self._events),
                f"not within {limit:g} s" if isinstance(exc, TimeoutError) else exc,
            )

    async def _abandon(self, client: aiomqtt.Client, session: Session, failure: str) -> None:
        """End a failed session. If the socket still looks open (a publish was not acknowledged in time), say
        so in a death message first: it is queued on the stream before DISCONNECT, which drops the will."""
        if failure:
            with contextlib.suppress(UplinkError):
                await self._publish(
                    client,
                    self._state_topic,
                    encode(session.death(f"uplink error: {failure}")),
                    retain=True,
                    timeout_s=ABANDON_PUBLISH_TIMEOUT_S,
                )
        await self._disconnect(client)

    async def _disconnect(self, client: aiomqtt.Client) -> None:
        try:
            # aiomqtt bounds the wait for the disconnect by its `timeout` (connect_timeout_s); this is a guard.
            async with asyncio.timeout(self._broker.connect_timeout_s + 1.0):
                await client.__aexit__(None, None, None)
        except (TimeoutError, aiomqtt.MqttError) as exc:
            log.debug("disconnect: %s", exc)


def _as_uplink_error(task: asyncio.Task[object]) -> UplinkError:
    exc = task.exception()
    if isinstance(exc, UplinkError):
        return exc
    log.error("%s failed unexpectedly", task.get_name(), exc_info=exc)
    return UplinkError(f"{task.get_name()} failed: {type(exc).__name__}: {exc}")
