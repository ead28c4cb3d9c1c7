"""Composition of the hub: intake -> pipeline -> writer, and the API, with one explicit lifecycle.

Start order (and, reversed, stop order), by :class:`contextlib.AsyncExitStack`:

1. the InfluxDB writer (HTTP client),
2. the operations side (registry, health, alerts, commands, API tokens: ``Operations``),
3. the dead-letter quarantine, the spill, and the lanes (one per gateway, with their overflow files),
4. the MQTT intake (a task on the event loop, hub/mqtt/intake.py; connects and reconnects by itself),
5. camera snapshots, and with ``mqtt.observe: all`` the observer feed and its own connection,
6. the pipeline task; on stop: the intake stops handing over, the pipeline drains the queue, writes what is
   pending and acknowledges it, within ``batch.drain_timeout_s`` (what is left stays in the broker's session),
7. the periodic jobs (``hub_health`` points, VN_AQI, alert figures, camera availability),
8. the API server.

So a graceful stop is: API down, intake stops, pending batches flushed and acked, then the MQTT disconnect
(the collected acks are written first, then the DISCONNECT), then the HTTP client closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Self
from zoneinfo import ZoneInfo

from common.tasks import cancel_and_wait, running
from hub.alerts.series import RESOLVE_TARGETS_S, AlertSeriesJob
from hub.api import ApiServer, create_app
from hub.config import HubSettings
from hub.errors import HubError
from hub.ingest import Observer, Pipeline, RetryPolicy
from hub.ingest.admission import Admission
from hub.ingest.lanes import FairQueue
from hub.ingest.observe import ObserverFeed
from hub.metrics import HealthReporter, render_prometheus
from hub.mqtt.intake import IntakeQueue, MqttIntake
from hub.operations.aqi import AqiJob
from hub.operations.operations import Operations
from hub.reports.series import AvailabilitySeriesJob
from hub.routes.cameras import snapshot_events
from hub.snapshots.intake import SnapshotIntake
from hub.snapshots.running import running_snapshots
from hub.stats import HubStats, InfluxStats, LaneStats, MqttStats, ObserverStats, SnapshotStats
from hub.storage.deadletter import DeadLetter, Quarantine
from hub.storage.influx import InfluxWriter
from hub.storage.spill import Spill

log = logging.getLogger(__name__)


class Hub:
    """The running hub. ``async with Hub(settings) as hub:`` runs it until the block exits."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self._stack: contextlib.AsyncExitStack | None = None
        self._writer: InfluxWriter | None = None
        self._intake: MqttIntake | None = None
        self._pipeline: Pipeline | None = None
        self._pipeline_task: asyncio.Task[None] | None = None
        self._api: ApiServer | None = None
        self._operations: Operations | None = None
        self._observer_feed: ObserverFeed | None = None
        self._observer_intake: MqttIntake | None = None
        self._lanes: FairQueue | None = None

    async def __aenter__(self) -> Self:  # noqa: PLR0915 - the composition root: each component in start order
        s = self.settings
        async with contextlib.AsyncExitStack() as stack:
            self._writer = await stack.enter_async_context(InfluxWriter(s.influx))
            await self._writer.prepare()  # logs the InfluxDB version; v1: creates the database where allowed
            # Admission's rules, with the field types InfluxDB already holds (a restart forgets none of them).
            rules = s.admission.rules()
            stored_types = await self._writer.field_types()
            admission_rules = dataclasses.replace(rules, field_types={**stored_types, **rules.field_types})
            # The operations side (registry, health, alerts, commands, API tokens); entered before the intake, so it
            # stops after the intake and the drain.
            self._operations = await stack.enter_async_context(Operations(s, self._writer))
            quarantine = Quarantine(s.dead_letters.keep, s.dead_letters.payload_bytes, s.dead_letters.path)
            stack.callback(quarantine.close)
            spill = None
            if s.spill.dir is not None:
                spill = Spill(s.spill.dir, max_bytes=s.spill.max_bytes, segment_bytes=s.spill.segment_bytes)
                stack.callback(spill.close)
            # One lane per gateway between the intake and the pipeline (hub/ingest/lanes.py): made before the
            # intake, left after it (its overflow files keep what the pipeline has not stored).
            lanes = await stack.enter_async_context(
                FairQueue(
                    s.batch.queue_size,
                    s.mqtt.queue_max_bytes,
                    quantum_bytes=s.lanes.quantum_bytes,
                    lane_max_bytes=s.lanes.max_bytes,
                    lane_max_pending_bytes=s.lanes.max_pending_bytes,
                    overflow_dir=s.overflow_dir,
                    overflow_lane_max_bytes=s.lanes.overflow_gateway_max_bytes,
                    overflow_max_bytes=s.lanes.overflow_max_bytes,
                )
            )
            self._lanes = lanes
            self._intake = await stack.enter_async_context(
                MqttIntake(s.mqtt, lanes, receive_maximum=s.batch.max_pending_messages + s.batch.queue_size)
            )
            lanes.bind(self._intake)
            self._pipeline = Pipeline(
                lanes,
                lanes,
                self._writer,
                max_lines=s.batch.max_lines,
                max_delay_ms=s.batch.max_delay_ms,
                max_in_flight=s.batch.max_in_flight,
                max_pending_messages=s.batch.max_pending_messages,
                max_pending_bytes=s.batch.max_pending_bytes,
                retry=RetryPolicy(s.influx.retry_initial_s, s.influx.retry_max_s),
                dead_letters=quarantine,
                spill=spill,
                max_metrics_per_device=s.cardinality.max_metrics_per_device,
                spill_after_s=s.spill.slow_write_s,
                enrichment_tags=s.cardinality.enrichment_tags,
                admission=Admission(admission_rules),
            )
            # Before the drain is pushed: the store writes what the pipeline queued before it stopped.
            snapshots = await self._start_snapshots(stack)
            # Before the pipeline runs, so that no retained birth is missed. What feeds the operations side:
            # mqtt.observe (share: what this hub stores; all: an unshared observer connection; none: nothing).
            observe = s.mqtt.observe_mode
            # Refusals of admission reach the operations side from the same place its observations come from.
            if observe == "share":
                self._pipeline.add_observer(self._operations.observe)
                self._pipeline.add_refusal_observer(self._operations.on_refusal)
            elif observe == "all":
                observer_queue = IntakeQueue(s.batch.queue_size, s.mqtt.queue_max_bytes)
                feed_admission = Admission(admission_rules)
                self._observer_feed = ObserverFeed(observer_queue, [self._operations.observe], feed_admission)
                self._observer_feed.add_refusal_observer(self._operations.on_refusal)
                self._operations.on_owners(feed_admission.set_owners, feed_admission.update_owners)
                await stack.enter_async_context(running(self._observer_feed.run(), "hub-observer-feed"))
                self._observer_intake = await stack.enter_async_context(
                    MqttIntake(s.mqtt, observer_queue, observer=True)
                )
            self._operations.on_enrichment(self._pipeline.set_enrichment)
            self._operations.on_owners(self._pipeline.set_owners, self._pipeline.update_owners)
            self._pipeline_task = asyncio.create_task(self._pipeline.run(), name="hub-pipeline")
            stack.push_async_callback(self._drain)
            if s.metrics.interval_s > 0:  # hub_health points (hub/metrics.py); stopped before the pipeline drains
                reporter = HealthReporter(
                    self.ingest_stats,
                    self._writer,
                    instance=s.metrics.instance or s.mqtt.client_id,
                    interval_s=s.metrics.interval_s,
                )
                await stack.enter_async_context(running(reporter.run(), "hub-health-report"))
            if s.aqi.enabled:  # VN_AQI every aqi.interval_s (hub/operations/aqi.py); stops before the pipeline drains
                aqi = AqiJob(s.aqi, s.influx, self._writer.write)
                stack.push_async_callback(aqi.aclose)  # its InfluxDB query client, closed after the task
                await stack.enter_async_context(running(aqi.run(), "hub-vn-aqi"))
            if s.alerts.series_interval_s > 0:  # alert figures for the boards (hub/alerts/series.py), same lifetime
                series = AlertSeriesJob(
                    self._operations.db,
                    self._writer.write,
                    self._operations.registry,
                    interval_s=s.alerts.series_interval_s,
                    targets=dict(RESOLVE_TARGETS_S) | {str(k): v for k, v in s.alerts.resolve_targets_s.items()},
                )
                await stack.enter_async_context(running(series.run(), "hub-alert-series"))
            if s.reports.series_interval_s > 0:  # this month's camera availability (hub/reports/series.py)
                availability = AvailabilitySeriesJob(
                    self._operations.db,
                    self._writer.write,
                    self._operations.registry,
                    tz=ZoneInfo(s.reports.timezone),
                    interval_s=s.reports.series_interval_s,
                )
                await stack.enter_async_context(running(availability.run(), "hub-camera-availability"))
            app = create_app(self, self._operations)
            app.state.kpi_sink = self._writer  # POST /api/v1/kpis stores through the hub's writer (hub/routes/kpis.py)
            app.state.snapshots = snapshots.store  # the cameras' routes read it (hub/routes/cameras.py)
            self._api = await stack.enter_async_context(ApiServer(app, s.http))
            log.info(
                "hub started: InfluxDB %s %s (api %s, gzip %s); batches of up to %d lines or %d ms, "
                "%d writes in flight, at most %d unacknowledged messages; API %s",
                s.influx.url,
                self._writer.target,
                s.influx.api,
                "on" if s.influx.gzip else "off",
                s.batch.max_lines,
                s.batch.max_delay_ms,
                s.batch.max_in_flight,
                s.batch.max_pending_messages,
                self._api.url,
            )
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        log.info("hub stopped")

    async def _start_snapshots(self, stack: contextlib.AsyncExitStack) -> SnapshotIntake:
        """Camera snapshots (hub/snapshots/): checked by the pipeline's hook, written by the store's own thread,
        each new one announced on the live event stream."""
        pipeline, operations = self._pipeline, self._operations
        assert pipeline is not None
        assert pipeline.admission is not None
        assert operations is not None
        registry = operations.registry

        def registry_kind(device: str) -> str | None:
            found = registry.devices.get(device)
            return (found.kind or None) if found is not None else None

        snapshots = await stack.enter_async_context(
            running_snapshots(self.settings.snapshots, pipeline.admission, registry_kind)
        )
        snapshots.store.subscribe(snapshot_events(operations))
        pipeline.snapshots = snapshots
        return snapshots

    async def _drain(self) -> None:
        intake, pipeline, task = self._intake, self._pipeline, self._pipeline_task
        if intake is None or pipeline is None or task is None:
            return
        intake.stop_accepting()
        if self._lanes is not None:
            self._lanes.stop_reading_back()
        pipeline.close()
        timeout = self.settings.batch.drain_timeout_s
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            left = pipeline.gauges()["pending_messages"]
            log.warning(
                "stop: %d messages not stored within %g s; left unacknowledged, the broker redelivers them",
                left,
                timeout,
            )
            await cancel_and_wait([task])
        except Exception:
            log.exception("the pipeline failed while draining")

    # ------------------------------------------------------------------------------------------ status

    @property
    def http_port(self) -> int:
        """The port the API actually listens on (useful with ``http.port: 0``)."""
        return self._api.port if self._api is not None else 0

    @property
    def api_url(self) -> str:
        return self._api.url if self._api is not None else ""

    @property
    def intake(self) -> MqttIntake:
        if self._intake is None:
            raise HubError("the hub is not running")
        return self._intake

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            raise HubError("the hub is not running")
        return self._pipeline

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer(site, gateway, payload)`` for every decoded message this hub's operations side sees
        (``mqtt.observe``: what it stores, or every gateway's through the observer connection; cheap calls only:
        hub.ingest)."""
        if self._observer_feed is not None:
            self._observer_feed.add_observer(observer)
        else:
            self.pipeline.add_observer(observer)

    def set_enrichment(self, mapping: Mapping[str, Mapping[str, str]]) -> None:
        """Replace the ``device -> {tag: value}`` enrichment of stored lines (allow-listed tags; hub.ingest)."""
        self.pipeline.set_enrichment(mapping)

    @property
    def operations(self) -> Operations:
        """The operations side: registry, health, alerts, commands, API tokens."""
        if self._operations is None:
            raise HubError("the hub is not running")
        return self._operations

    @property
    def mqtt_connected(self) -> bool:
        return self._intake is not None and self._intake.connected

    async def influx_reachable(self) -> bool:
        return self._writer is not None and await self._writer.ping()

    @property
    def pending_messages(self) -> int:
        return self.pipeline.pending_messages

    def ingest_stats(self) -> HubStats:
        lanes, observer, snapshots = self._lanes, None, None
        if self._observer_feed is not None:
            connected = self._observer_intake is not None and self._observer_intake.connected
            observer = ObserverStats(connected=connected, **self._observer_feed.counters)
        if self.pipeline.snapshots is not None:
            store = self.pipeline.snapshots.store
            done = store.counters
            snapshots = SnapshotStats(
                files=store.total_files,
                bytes=store.total_bytes,
                cameras=store.cameras,
                queued=store.queued,
                stored=done.stored,
                stored_bytes=done.stored_bytes,
                replaced=done.replaced,
                dropped_queue_full=done.dropped_queue_full,
                write_errors=done.write_errors,
                removed_age=done.removed_age,
                removed_total_bytes=done.removed_bytes,
                removed_camera_bound=done.removed_device_bound,
            )
        return HubStats(
            **dict(self.pipeline.snapshot()),
            mqtt=MqttStats(connected=self.mqtt_connected, **self.intake.counters),
            lanes=LaneStats(**lanes.gauges(), **lanes.counters) if lanes is not None else None,
            overflow_by_gateway=lanes.overflow_by_gateway() if lanes is not None else None,
            influx=InfluxStats(writes_failing=not self.pipeline.storage_ok),
            observer=observer,
            snapshots=snapshots,
        )

    def metrics_text(self) -> str:
        """The hub's own health in the Prometheus text format (``GET /metrics``)."""
        return render_prometheus(self.ingest_stats())

    def dead_letters(self, limit: int) -> tuple[int, list[DeadLetter]]:
        ring = self.pipeline.dead_letters
        return ring.total, ring.latest(limit)

    async def wait_failed(self) -> None:
        """Return (raising its error) only if a component task ends on its own: the pipeline or the API."""
        tasks = [t for t in (self._pipeline_task, self._api.task if self._api else None) if t is not None]
        if not tasks:
            return
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise HubError(f"{task.get_name()} failed: {task.exception()!r}") from task.exception()
        raise HubError(f"{', '.join(t.get_name() for t in done)} stopped unexpectedly")


async def run_hub(settings: HubSettings, stop: asyncio.Event, *, on_ready: Callable[[Hub], None] | None = None) -> None:
    """Run the hub until ``stop`` is set, then stop it gracefully. ``on_ready`` gets the started hub."""
    async with Hub(settings) as hub:
        if on_ready is not None:
            on_ready(hub)
        stopper = asyncio.create_task(stop.wait(), name="hub-stop")
        failure = asyncio.create_task(hub.wait_failed(), name="hub-watch")
        try:
            await asyncio.wait({stopper, failure}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([stopper, failure])
        if failure.done() and not failure.cancelled():
            failure.result()
