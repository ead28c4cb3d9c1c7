"""The InfluxDB writer: line protocol POSTed to the v1 ``/write`` endpoint with httpx.

``POST {url}/write?db={database}&precision=ms``, body optionally gzip-compressed (``Content-Encoding: gzip``,
accepted by InfluxDB 1.x, 2.x and 3.x), basic auth when a username is set. Works on InfluxDB 1.x, on 2.x through
a DBRP mapping and on 3.x (docs/storage.md).

Outcomes, translated at this boundary:

- ``204``: stored.
- ``400`` (unparsable line, field type conflict; InfluxDB 1.x may have stored the other lines: "partial write")
  and ``413`` (body too large): :class:`~hub.errors.StorageRejected` with InfluxDB's own error text.
- everything else (connection refused, timeout, ``5xx``, ``429``, ``401``/``403`` credentials, ``404`` database
  not found): :class:`~hub.errors.StorageUnavailable`. The data is fine; an operator or time fixes the rest, so
  the pipeline retries and holds the acknowledgements.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from types import TracebackType
from typing import Final, Self

import httpx

from hub.config import InfluxSettings
from hub.errors import StorageError, StorageRejected, StorageUnavailable

log = logging.getLogger(__name__)

#: Bodies larger than this are compressed in a worker thread (zlib releases the GIL) to keep the loop free.
_COMPRESS_IN_THREAD_BYTES: Final = 256 * 1024
#: Level 1: most of the size gain of gzip on line protocol for a fraction of the CPU of level 6.
_GZIP_LEVEL: Final = 1
_MAX_ERROR_TEXT: Final = 1024


def _error_text(response: httpx.Response) -> str:
    """InfluxDB's error message: the ``error`` member of its JSON body, else the start of the body."""
    text = response.text
    try:
        data = json.loads(text)
    except ValueError:
        return text[:_MAX_ERROR_TEXT].strip() or response.reason_phrase
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])[:_MAX_ERROR_TEXT]
    return text[:_MAX_ERROR_TEXT]


class InfluxWriter:
    """Writes line protocol to one InfluxDB database. Use as ``async with InfluxWriter(settings) as writer``."""

    def __init__(self, settings: InfluxSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._params = {"db": settings.database, "precision": "ms"}

    async def __aenter__(self) -> Self:
        s = self._settings
        auth = None
        if s.username is not None:
            auth = httpx.BasicAuth(s.username, s.password.get_secret_value() if s.password else "")
        self._client = httpx.AsyncClient(
            base_url=s.url,
            auth=auth,
            timeout=httpx.Timeout(s.timeout_s),
            transport=self._transport,
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            raise StorageError("InfluxWriter used outside 'async with'")
        return self._client

    async def write(self, body: bytes) -> None:
        """Store ``body`` (line protocol, newline-separated). See the module docstring for the errors."""
        headers: dict[str, str] = {}
        content = body
        if self._settings.gzip:
            if len(body) > _COMPRESS_IN_THREAD_BYTES:
                content = await asyncio.to_thread(gzip.compress, body, _GZIP_LEVEL)
            else:
                content = gzip.compress(body, _GZIP_LEVEL)
            headers["Content-Encoding"] = "gzip"
        url = self._settings.url
        try:
            response = await self._http.post("/write", params=self._params, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            raise StorageUnavailable(f"InfluxDB at {url} did not answer within {self._settings.timeout_s} s") from exc
        except httpx.HTTPError as exc:
            raise StorageUnavailable(f"cannot reach InfluxDB at {url}: {exc!r}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        reason = _error_text(response)
        if status in (400, 413):
            raise StorageRejected(status, reason)
        if status in (401, 403):
            raise StorageUnavailable(f"InfluxDB at {url} refused the credentials (HTTP {status}): {reason}")
        if status == 404:
            raise StorageUnavailable(
                f"InfluxDB at {url} has no database {self._settings.database!r} (HTTP 404): {reason}"
            )
        raise StorageUnavailable(f"InfluxDB at {url} answered HTTP {status}: {reason}")

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """True if InfluxDB answers ``GET /ping`` with 204 within ``timeout_s``."""
        try:
            response = await self._http.get("/ping", timeout=min(timeout_s, self._settings.timeout_s))
        except httpx.HTTPError:
            return False
        return response.status_code == 204
