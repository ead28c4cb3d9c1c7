"""The hub's HTTP API (FastAPI), served by uvicorn inside the hub's own event loop.

- ``GET /api/v1/health``: ``status`` ``ok`` or ``degraded`` (MQTT connected and InfluxDB reachable), always
  HTTP 200 while the process serves: a degraded hub is alive and recovers by itself, restarting it would not help.
  Open: liveness probes carry no token.
- ``GET /api/v1/ingest/stats``: every counter of the intake and the gauges (:class:`hub.stats.HubStats`).
- ``GET /api/v1/dead-letters?limit=N``: the newest refused messages first. Raw payloads of any gateway: a
  technician token (or admin) that is not limited to wards.
- ``GET /metrics``: the hub's own health in the Prometheus text format (hub/metrics.py).

``/metrics`` and ``/api/v1/ingest/stats`` are open unless ``http.metrics_need_token`` (then a viewer token): counters
only, read by a Prometheus scrape and the benchmarks (docs/api.md).

Every answer carries the security headers, and every ``/api/`` request is checked for its token and body size
before its body is read (hub/routes/guard.py). The OpenAPI document is served at ``/api/v1/openapi.json``; the
HTML docs (Swagger UI, ReDoc) are off: FastAPI loads their scripts from a CDN into the page's origin, the same
origin that holds the operator's token. With ``http.tls_cert_file`` and ``http.tls_key_file`` the API is HTTPS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Annotated, Any, Protocol, Self

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, status
from fastapi.responses import PlainTextResponse
from starlette.types import ASGIApp

from hub.config import HttpSettings
from hub.errors import StartupError
from hub.metrics import render_prometheus
from hub.operations.operations import Operations
from hub.routes import alerts, devices, events, inventory, reports, sites, tokens, web
from hub.routes.cameras import router as cameras_router
from hub.routes.deps import Technician, require
from hub.routes.guard import ApiGate, SecurityHeaders
from hub.routes.kpis import MAX_BODY_BYTES as KPI_MAX_BODY_BYTES
from hub.routes.kpis import router as kpis_router
from hub.routes.models import DeadLettersPage, Health, HealthCounters, InfluxLink, MqttLink
from hub.routes.web import static_files
from hub.stats import HubStats
from hub.storage.deadletter import DeadLetter

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
#: The operations routers, one module per resource.
OPERATIONS_ROUTERS = (
    sites.router,
    devices.router,
    alerts.router,
    inventory.router,
    tokens.router,
    events.router,
    web.router,
    reports.router,
)
#: The routes that take more than ``http.max_body_bytes``: their own documented limits.
ROUTE_BODY_LIMITS = {f"{API_PREFIX}/kpis": KPI_MAX_BODY_BYTES, f"{API_PREFIX}/inventory": inventory.MAX_BODY}
#: ``/api/`` paths served without a token (liveness probes, the API's description).
OPEN_API_PATHS = frozenset({f"{API_PREFIX}/health", f"{API_PREFIX}/openapi.json"})


class PrometheusText(PlainTextResponse):
    """The Prometheus text format 0.0.4 (``GET /metrics``); the OpenAPI documents it as a string of this type."""

    media_type = "text/plain; version=0.0.4"


class HubStatus(Protocol):
    """What the API reads from the running hub."""

    @property
    def mqtt_connected(self) -> bool: ...

    async def influx_reachable(self) -> bool: ...

    def ingest_stats(self) -> HubStats: ...

    @property
    def pending_messages(self) -> int:
        """Messages received and not yet acknowledged (cheap: read four times a second)."""
        ...

    def dead_letters(self, limit: int) -> tuple[int, list[DeadLetter]]:
        """(how many dead letters since start, the newest ``limit`` of those still kept)."""
        ...


def intake_check(hub: HubStatus, max_pending_messages: int) -> Callable[[], bool]:
    """Whether the hub hears the gateways now: connected to the broker and not holding back messages (with
    ``max_pending_messages`` unacknowledged the broker sends no more). The health monitor's keep-alive verdicts
    wait while it does not (hub/health/monitor.py); composed here, where the hub and its services meet."""

    def intake_ok() -> bool:
        return hub.mqtt_connected and hub.pending_messages < max_pending_messages

    return intake_ok


class HubApp(FastAPI):
    """FastAPI with :class:`SecurityHeaders` around its whole stack, so that the answers of Starlette's own error
    handler (500), outermost of the stack a FastAPI app builds, carry the headers too."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


def create_app(hub: HubStatus, operations: Operations | None = None) -> FastAPI:
    """The API app, reading everything from ``hub``; the operations routes (hub/routes/) and every route that
    needs a token use ``operations`` (without it they answer 503). The ``http`` settings are the operations'
    (the defaults without them)."""
    app = HubApp(
        title="IOC hub",
        version="1",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    http = operations.settings.http if operations is not None else HttpSettings()
    counters_need_token = operations is not None and http.metrics_need_token
    app.add_middleware(
        ApiGate,
        max_body_bytes=http.max_body_bytes,
        route_limits=ROUTE_BODY_LIMITS,
        authenticate=operations.tokens.authenticate if operations is not None else None,
        open_paths=OPEN_API_PATHS if counters_need_token else OPEN_API_PATHS | {f"{API_PREFIX}/ingest/stats"},
    )
    if operations is not None:
        operations.health.watch_intake(intake_check(hub, operations.settings.batch.max_pending_messages))
    counters_access = [Depends(require("viewer"))] if counters_need_token else []

    @app.get(f"{API_PREFIX}/health", response_model=Health)
    async def health() -> Health:
        influx_ok = await hub.influx_reachable()
        mqtt_ok = hub.mqtt_connected
        stats = hub.ingest_stats()
        return Health(
            status="ok" if mqtt_ok and influx_ok else "degraded",
            mqtt=MqttLink(connected=mqtt_ok),
            influx=InfluxLink(reachable=influx_ok),
            counters=HealthCounters(
                messages_received=stats.messages_received,
                lines_written=stats.lines_written,
                dead_letters=stats.dead_letters_total,
                pending_messages=stats.pending_messages,
                write_retries=stats.write_retries,
            ),
        )

    # ``lanes``, ``overflow_by_gateway`` and ``observer`` are left out for a hub that has none (no other field of
    # the snapshot is ever null).
    @app.get(
        f"{API_PREFIX}/ingest/stats",
        dependencies=counters_access,
        response_model=HubStats,
        response_model_exclude_none=True,
    )
    async def ingest_stats() -> HubStats:
        return hub.ingest_stats()

    @app.get(f"{API_PREFIX}/dead-letters", response_model=DeadLettersPage)
    async def dead_letters(
        principal: Technician, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> DeadLettersPage:
        """The newest refused messages, raw payloads included: technician or admin, every ward."""
        if principal.wards is not None:
            # A refused message may have no valid topic, hence no site or ward to filter on; and its payload is
            # whatever was sent. So only tokens that may see every ward read them.
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                "dead letters hold raw messages of every ward: this needs a token not limited to wards",
            )
        total, items = hub.dead_letters(limit)
        return DeadLettersPage(total=total, items=items)

    @app.get("/metrics", response_class=PrometheusText, dependencies=counters_access)
    async def metrics() -> PrometheusText:
        """The hub's own health in the Prometheus text format (hub/metrics.py)."""
        return PrometheusText(render_prometheus(hub.ingest_stats()))

    # Operations: registry, health, alerts, commands, tokens, live events, the operator page at /.
    app.state.operations = operations
    for router in OPERATIONS_ROUTERS:
        app.include_router(router)
    app.include_router(kpis_router)  # POST /api/v1/kpis (hub/routes/kpis.py), technician role
    app.include_router(cameras_router)  # cameras and their snapshots (hub/routes/cameras.py), viewer role
    app.mount("/ui", static_files(), name="ui")

    return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The hub owns SIGINT/SIGTERM (hub.cli); uvicorn would install its own and re-raise them on exit.
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP (base_events.
    # _set_nodelay); with proto 0 Nagle stays on, and every small answer waited ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise StartupError(f"the API cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def _check_tls_files(settings: HttpSettings) -> None:
    """Load the certificate and key once, as uvicorn will, so that a bad pair stops the start naming the fields
    (uvicorn would fail inside its serving task with the bare OpenSSL error)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    except (ssl.SSLError, OSError) as exc:
        raise StartupError(
            f"http.tls_cert_file {settings.tls_cert_file} and http.tls_key_file {settings.tls_key_file}: "
            f"not a PEM certificate and its private key ({exc})"
        ) from exc


class ApiServer:
    """Serves ``app`` on ``settings.host:port`` as a task of the running loop; port 0 picks a free port."""

    def __init__(self, app: FastAPI, settings: HttpSettings, *, start_timeout_s: float = 10.0) -> None:
        self._app = app
        self._settings = settings
        self._start_timeout_s = start_timeout_s
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host = self._settings.host
        scheme = "https" if self._settings.tls else "http"
        return f"{scheme}://[{host}]:{self.port}" if ":" in host else f"{scheme}://{host}:{self.port}"

    async def __aenter__(self) -> Self:
        s = self._settings
        tls: dict[str, Any] = {}
        if s.tls_cert_file is not None and s.tls_key_file is not None:
            _check_tls_files(s)
            tls = {"ssl_certfile": str(s.tls_cert_file), "ssl_keyfile": str(s.tls_key_file)}
        sock = _bind(s.host, s.port)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,  # keep the process's logging setup
            access_log=False,
            timeout_graceful_shutdown=5,
            **tls,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="hub-api")
        try:
            async with asyncio.timeout(self._start_timeout_s):
                while not self._server.started:
                    if self._task.done():
                        break
                    await asyncio.sleep(0.02)
        except TimeoutError:
            pass
        if not self._server.started:
            await self._stop()
            sock.close()
            raise StartupError(f"the API did not start on {self.url} within {self._start_timeout_s} s")
        log.info("hub API listening on %s", self.url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            problem = ""
            try:
                await asyncio.wait_for(self._task, 10)
            except TimeoutError:
                problem = "did not stop within 10 s"
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - uvicorn exits with SystemExit on startup failure
                problem = f"failed: {exc!r}"
            if problem:
                log.error("the API server %s", problem)
            self._task = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The serving task, to notice if it dies."""
        return self._task
