"""The InfluxDB writer: line protocol POSTed over HTTP with the hub's own client (:mod:`hub.storage.httpclient`), to
the v1 or the v2 write API.

- ``api: v1`` (default): ``POST {url}/write?db={database}&precision=ms``, basic auth when a username is set.
  Works on InfluxDB 1.x, on 2.x through a DBRP mapping and on 3.x.
- ``api: v2``: ``POST {url}/api/v2/write?org={org}&bucket={bucket}&precision=ms`` with
  ``Authorization: Token {token}``. Works on InfluxDB 2.x, 3.x and Cloud.

Both send the body optionally gzip-compressed (``Content-Encoding: gzip``). Which API, path, query and headers
is decided once, when the writer is made (docs/storage.md). Connections are kept alive and reused.

Outcomes, translated at this boundary:

- ``204``: stored.
- ``400`` (unparsable line, field type conflict; InfluxDB 1.x may have stored the other lines: "partial write"),
  ``413`` (body too large) and, on v2, ``422`` (points refused, e.g. outside the retention period; the others
  stored): :class:`~hub.errors.StorageRejected` with InfluxDB's own error text (``error`` in v1's JSON body,
  ``message`` in v2's).
- everything else (connection refused, timeout, ``5xx``, ``429``, ``401``/``403`` credentials, ``404`` database,
  org or bucket not found, an answer that is not valid HTTP): :class:`~hub.errors.StorageUnavailable`. The data
  is fine; an operator or time fixes the rest, so the pipeline retries and holds the acknowledgements. Refused
  credentials are also logged here, once until a write succeeds again, since only an operator can fix them.

``Retry-After`` (sent by v2 with ``429``/``503``) is not honoured: the pipeline's capped backoff paces retries.

At start (:meth:`InfluxWriter.prepare`) the server's version is read from ``/ping``'s ``X-Influxdb-Version``
header and logged, and with the v1 API the database (and, if ``influx.retention`` is set, a DEFAULT retention
policy ``ioc_retention``) is created through ``POST /query`` where the account may. Neither is fatal: an
unreachable InfluxDB is what the spill is for, and a refused ``CREATE`` is logged for the operator.

Reads (:class:`InfluxQuery`) go over the same client: InfluxQL through ``GET /query?db=...&q=...&epoch=ms`` with the
credentials the writer sends, on v1 to ``database``, on v2/3 to ``bucket`` through its DBRP mapping (InfluxDB 2.x
"/query" 1.x compatibility API). Any failure to get a JSON answer is :class:`~hub.errors.StorageUnavailable`.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote, urlencode

from hub.config import InfluxSettings
from hub.errors import ConfigError, StorageError, StorageRejected, StorageUnavailable
from hub.storage.httpclient import HttpClient, HttpConnectionError, HttpError, HttpTimeout, Response

log = logging.getLogger(__name__)

#: Bodies larger than this are compressed in a worker thread (zlib releases the GIL) to keep the loop free.
_COMPRESS_IN_THREAD_BYTES: Final = 256 * 1024
#: Level 1: most of the size gain of gzip on line protocol for a fraction of the CPU of level 6.
_GZIP_LEVEL: Final = 1
_MAX_ERROR_TEXT: Final = 1024
_LINE_PROTOCOL: Final = "text/plain; charset=utf-8"
#: Default limit of a query's answer: InfluxDB answers a query in one JSON body (without ``chunked=true``), and
#: the VN_AQI job's hourly means of six pollutants over two days are ~4.4 KB per site (~4.4 MB for 1,000 sites),
#: above the 1 MiB the client allows by default for the writer's short error answers.
MAX_QUERY_ANSWER_BYTES: Final = 64 * 1024 * 1024


def _error_text(response: Response) -> str:
    """InfluxDB's error message from its JSON body (v1: ``error``, v2: ``message``), else the start of the body."""
    text = response.body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text[:_MAX_ERROR_TEXT].strip() or response.reason
    if isinstance(data, dict):
        for key in ("error", "message"):
            if isinstance(data.get(key), str):
                return str(data[key])[:_MAX_ERROR_TEXT]
    return text[:_MAX_ERROR_TEXT]


@dataclass(frozen=True, slots=True)
class _WritePlan:
    """Where and how to write, decided once from the settings."""

    #: Path and URL-encoded query of every write, e.g. ``/write?db=ioc&precision=ms``.
    target: str
    #: Sent with every request: the credentials, if any.
    auth_headers: dict[str, str]
    #: Sent with every write: the credentials and, with gzip on, ``Content-Encoding``.
    write_headers: dict[str, str]
    #: Answers that refuse the data itself.
    rejected: frozenset[int]
    #: What a 404 means, e.g. "no database 'ioc'".
    not_found: str
    #: Where the lines go, for logs: "database 'ioc'" or "org 'city' bucket 'ioc'".
    where: str


def _plan(s: InfluxSettings) -> _WritePlan:
    auth: dict[str, str] = {}
    if s.api == "v2":
        # The config check guarantees all three for v2; this narrows the types.
        if s.token is None or s.org is None or s.bucket is None:
            raise StorageError("influx.api is 'v2' but influx.token, influx.org or influx.bucket is missing")
        path, params = "/api/v2/write", {"org": s.org, "bucket": s.bucket, "precision": "ms"}
        auth["Authorization"] = f"Token {s.token.get_secret_value()}"
        # 422: points refused (outside retention, schema), the others stored (InfluxDB 2.x write docs).
        rejected = frozenset({400, 413, 422})
        where = f"org {s.org!r} bucket {s.bucket!r}"
        not_found = f"no {where}"
    else:
        path, params = "/write", {"db": s.database, "precision": "ms"}
        if s.username is not None:
            password = s.password.get_secret_value() if s.password else ""
            auth["Authorization"] = "Basic " + base64.b64encode(f"{s.username}:{password}".encode()).decode("ascii")
        rejected = frozenset({400, 413})
        where = f"database {s.database!r}"
        not_found = f"no {where}"
    write_headers = {**auth, "Content-Encoding": "gzip"} if s.gzip else auth
    return _WritePlan(
        target=f"{path}?{urlencode(params, quote_via=quote)}",
        auth_headers=auth,
        write_headers=write_headers,
        rejected=rejected,
        not_found=not_found,
        where=where,
    )


class InfluxWriter:
    """Writes line protocol to one InfluxDB database or bucket. Use as ``async with InfluxWriter(settings) as w``."""

    def __init__(self, settings: InfluxSettings) -> None:
        self._settings = settings
        self._client: HttpClient | None = None
        self._plan = _plan(settings)
        self._auth_refused = False

    @property
    def target(self) -> str:
        """Where the lines go, for logs: ``database 'ioc'`` (v1) or ``org 'city' bucket 'ioc'`` (v2)."""
        return self._plan.where

    async def __aenter__(self) -> Self:
        try:
            self._client = HttpClient(self._settings.url)
        except ValueError as exc:
            raise ConfigError(f"influx.url: {exc}") from exc
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def _http(self) -> HttpClient:
        if self._client is None:
            raise StorageError("InfluxWriter used outside 'async with'")
        return self._client

    async def write(self, body: bytes) -> None:
        """Store ``body`` (line protocol, newline-separated). See the module docstring for the errors."""
        content = body
        if self._settings.gzip:
            if len(body) > _COMPRESS_IN_THREAD_BYTES:
                content = await asyncio.to_thread(gzip.compress, body, _GZIP_LEVEL)
            else:
                content = gzip.compress(body, _GZIP_LEVEL)
        url, plan, timeout_s = self._settings.url, self._plan, self._settings.timeout_s
        try:
            response = await self._http.post(
                plan.target, content, plan.write_headers, timeout_s=timeout_s, content_type=_LINE_PROTOCOL
            )
        except HttpTimeout as exc:
            raise StorageUnavailable(f"InfluxDB at {url} did not answer within {timeout_s} s") from exc
        except HttpConnectionError as exc:
            raise StorageUnavailable(f"cannot reach InfluxDB at {url}: {exc}") from exc
        except HttpError as exc:
            raise StorageUnavailable(f"InfluxDB at {url} sent an answer that is not valid HTTP: {exc}") from exc
        status = response.status
        if 200 <= status < 300:
            if self._auth_refused:
                self._auth_refused = False
                log.warning("InfluxDB at %s accepts the credentials again", url)
            return
        reason = _error_text(response)
        if status in plan.rejected:
            raise StorageRejected(status, reason)
        if status in (401, 403):
            what = "token (influx.token)" if self._settings.api == "v2" else "credentials (influx.username/password)"
            message = (
                f"InfluxDB at {url} refused the {what} for writing to {plan.where} "
                f"(HTTP {status}, authentication/authorization failed): {reason}"
            )
            if not self._auth_refused:
                self._auth_refused = True
                log.error("%s; the data is held and the write retried until the credentials are fixed", message)
            raise StorageUnavailable(message)
        if status == 404:
            raise StorageUnavailable(f"InfluxDB at {url} has {plan.not_found} (HTTP 404): {reason}")
        raise StorageUnavailable(f"InfluxDB at {url} answered HTTP {status}: {reason}")

    async def _get_ping(self, timeout_s: float) -> Response | None:
        """``GET /ping``'s answer, None if InfluxDB does not answer (within ``timeout_s``, at most the setting)."""
        try:
            return await self._http.request(
                "GET", "/ping", headers=self._plan.auth_headers, timeout_s=min(timeout_s, self._settings.timeout_s)
            )
        except HttpError:
            return None

    async def server_version(self, timeout_s: float = 5.0) -> str | None:
        """The ``X-Influxdb-Version`` header of ``GET /ping`` ('' if absent), None if InfluxDB does not answer."""
        response = await self._get_ping(timeout_s)
        if response is None or response.status not in (200, 204):
            return None
        return response.headers.get("x-influxdb-version", "")

    async def prepare(self) -> str | None:
        """Log the server version; with v1, create the database and retention policy if allowed. Never raises.

        Returns the version (None when InfluxDB did not answer).
        """
        s = self._settings
        version = await self.server_version()
        if version is None:
            log.warning("InfluxDB at %s does not answer /ping; writes are spilled or retried until it does", s.url)
            return None
        log.info("InfluxDB at %s: version %s (writing with the %s API)", s.url, version or "unknown", s.api)
        if s.api == "v1" and s.create_database:
            await self._create_database(version)
        return version

    async def _create_database(self, version: str) -> None:
        s = self._settings
        db = s.database.replace("\\", "\\\\").replace('"', '\\"')
        statements = [f'CREATE DATABASE "{db}"']
        if s.retention:
            statements.append(
                f'CREATE RETENTION POLICY "ioc_retention" ON "{db}" DURATION {s.retention} REPLICATION 1 DEFAULT'
            )
        for statement in statements:
            problem = await self._query(statement)
            if problem:
                log.warning(
                    "InfluxDB %s at %s: %s failed (%s); assuming an operator manages the database",
                    version or "",
                    s.url,
                    statement,
                    problem,
                )
                return
        log.info("InfluxDB database %r ready%s", s.database, f", retention {s.retention}" if s.retention else "")

    async def _query(self, statement: str) -> str:
        """Run one InfluxQL statement through ``POST /query``; '' on success, else what went wrong."""
        target = "/query?" + urlencode({"q": statement}, quote_via=quote)
        try:
            response = await self._http.post(target, b"", self._plan.auth_headers, timeout_s=self._settings.timeout_s)
        except HttpError as exc:
            return str(exc)
        if response.status != 200:
            return f"HTTP {response.status}: {_error_text(response)}"
        try:
            answer = json.loads(response.body)
        except ValueError:
            return "not a JSON answer"
        results = answer.get("results", []) if isinstance(answer, dict) else []
        errors = [r["error"] for r in results if isinstance(r, dict) and "error" in r]
        return "; ".join(str(e) for e in errors)

    async def field_types(self) -> dict[tuple[str, str], str]:
        """``(measurement, field) -> type`` as InfluxDB already holds them (``SHOW FIELD KEYS``, v1 API), so that
        admission refuses a value of another type from the first message after a restart. A field listed with two
        types (shards written before types were checked) is left out: the next value fixes it. Never raises; {}
        when InfluxDB does not answer or with the v2 API (types are then learnt from the traffic)."""
        s = self._settings
        if s.api != "v1":
            return {}
        target = "/query?" + urlencode({"q": "SHOW FIELD KEYS", "db": s.database}, quote_via=quote)
        try:
            response = await self._http.request("GET", target, headers=self._plan.auth_headers, timeout_s=s.timeout_s)
            answer = json.loads(response.body) if response.status == 200 else {}
        except (HttpError, ValueError) as exc:
            log.warning(
                "InfluxDB at %s: SHOW FIELD KEYS failed (%s); field types are learnt from the traffic", s.url, exc
            )
            return {}
        seen: dict[tuple[str, str], set[str]] = {}
        for result in answer.get("results", []) if isinstance(answer, dict) else []:
            for series in result.get("series", []) if isinstance(result, dict) else []:
                for key, kind in series.get("values", []):
                    seen.setdefault((str(series.get("name")), str(key)), set()).add(str(kind))
        return {key: kinds.pop() for key, kinds in seen.items() if len(kinds) == 1}

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """True if InfluxDB answers ``GET /ping`` with 204 within ``timeout_s``."""
        response = await self._get_ping(timeout_s)
        return response is not None and response.status == 204


class InfluxQuery:
    """InfluxQL reads from the database (v1) or bucket (v2) the writer writes to, over the hub's HTTP client.

    Use as ``async with InfluxQuery(settings) as q`` or call :meth:`aclose`. Every query is bounded by
    ``influx.timeout_s`` (whole request); the answer by ``max_answer_bytes``.
    """

    def __init__(self, settings: InfluxSettings, *, max_answer_bytes: int = MAX_QUERY_ANSWER_BYTES) -> None:
        self._url = settings.url
        self._timeout_s = settings.timeout_s
        self._headers = _plan(settings).auth_headers
        self._what = "token (influx.token)" if settings.api == "v2" else "credentials (influx.username/password)"
        #: v2/v3 answer InfluxQL on a bucket through its DBRP mapping, named by the bucket.
        self._params = {"db": (settings.bucket or settings.database) if settings.api == "v2" else settings.database}
        try:
            self._client = HttpClient(settings.url, max_body_bytes=max_answer_bytes)
        except ValueError as exc:
            raise ConfigError(f"influx.url: {exc}") from exc

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections; a query still running fails with :class:`~hub.errors.StorageUnavailable`."""
        await self._client.aclose()

    async def query(self, q: str) -> dict[str, Any]:
        """InfluxDB's JSON answer to ``q`` (one or more statements; times in epoch ms).

        A statement InfluxDB refused is in the answer (``results[i].error``) for the caller to judge. Raises
        :class:`~hub.errors.StorageUnavailable` when there is no answer, an HTTP status other than 200 or an answer
        that is not a JSON object.
        """
        url = self._url
        target = "/query?" + urlencode({**self._params, "q": q, "epoch": "ms"}, quote_via=quote)
        try:
            response = await self._client.request("GET", target, headers=self._headers, timeout_s=self._timeout_s)
        except HttpTimeout as exc:
            raise StorageUnavailable(f"cannot query InfluxDB at {url}: no answer within {self._timeout_s} s") from exc
        except HttpConnectionError as exc:
            raise StorageUnavailable(f"cannot query InfluxDB at {url}: {exc}") from exc
        except HttpError as exc:
            raise StorageUnavailable(
                f"cannot query InfluxDB at {url}: an answer that is not valid HTTP: {exc}"
            ) from exc
        if response.status != 200:
            refused = f", it refused the {self._what}" if response.status in (401, 403) else ""
            raise StorageUnavailable(
                f"InfluxDB at {url} answered HTTP {response.status} to a query{refused}: {_error_text(response)}"
            )
        try:
            answer = json.loads(response.body)
        except ValueError as exc:
            raise StorageUnavailable(f"InfluxDB at {url} answered a query with a body that is not JSON") from exc
        if not isinstance(answer, dict):
            raise StorageUnavailable(f"InfluxDB at {url} answered a query with JSON that is not an object")
        return answer
