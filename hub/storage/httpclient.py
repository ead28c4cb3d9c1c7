"""A small asyncio HTTP/1.1 client for the hub's InfluxDB traffic: keep-alive connections to one server, one
request at a time per connection, a timeout on each whole request and errors of its own.

It serves the writes and the queries (``influx.InfluxQuery``) alike. It replaced httpx on the write path: on this
hub httpx cost ~1 ms of CPU per request (~11 % of the event loop under the 100k readings/s benchmark), this client
~0.1 ms (1,000 POSTs of 50 KB to a local server). It does only
what InfluxDB's HTTP API needs: no redirects, no cookies, no proxies, no compression (the caller compresses and
sets ``Content-Encoding``), no ``Expect: 100-continue`` (a ``1xx`` answer is skipped).

Every request may be sent twice (see :meth:`HttpClient.request`), so use it for idempotent requests only.
Answers are framed by RFC 9112 section 6: ``Content-Length``, ``Transfer-Encoding: chunked`` (trailers read and
dropped) or, with neither, until the server closes. A connection goes back to the idle pool only after a whole,
well-framed answer that allows keep-alive; on a timeout, a cancellation or any error it is closed.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Final, Self, cast
from urllib.parse import urlsplit

#: Limit of a status line plus headers (and of the trailers of a chunked answer).
MAX_HEAD_BYTES: Final = 64 * 1024
#: Limit of an answer's body. InfluxDB's write answers are empty or a short JSON error.
MAX_BODY_BYTES: Final = 1024 * 1024
#: Idle connections kept open for reuse; more concurrent requests than this open (and then close) extra ones.
MAX_IDLE_CONNECTIONS: Final = 16
#: An idle connection older than this is closed rather than reused (servers and proxies drop idle ones).
KEEPALIVE_EXPIRY_S: Final = 5.0

_STATUS_LINE: Final = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9]{2})(?: ([^\r\n]*))?")
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_BYTES: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET: Final = re.compile(r"/[!-~]*")
_CONTENT_LENGTH: Final = re.compile(rb"[0-9]{1,18}")
_CHUNK_SIZE: Final = re.compile(rb"[0-9A-Fa-f]{1,15}")
#: Set by the client itself; a caller's header of these names is refused.
_OWN_HEADERS: Final = frozenset({"host", "content-length", "content-type", "transfer-encoding", "connection"})
_NO_BODY_STATUS: Final = frozenset({204, 304})


class HttpError(Exception):
    """Base of this client's errors. The message names the server (host:port) and what went wrong."""


class HttpTimeout(HttpError):
    """The whole request (connecting, sending, the answer) took longer than its timeout."""


class HttpConnectionError(HttpError):
    """No connection could be made, or it was closed or reset before the whole answer arrived."""


class HttpProtocolError(HttpError):
    """The answer is not valid HTTP/1.x, or its head or body is larger than this client accepts."""


@dataclass(frozen=True, slots=True)
class Response:
    """A final (non-1xx) answer. ``headers`` has lower-case names; repeated fields are joined with ``, ``."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


class _Closed(Exception):
    """The connection ended (EOF or lost) while more of the answer was needed."""


class _NoAnswer(Exception):
    """The connection ended before any byte of the answer arrived."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: buffers what arrives and wakes the one request waiting on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        #: Bytes received since the current request was sent (0: the server has not begun to answer).
        self.received = 0
        self.in_use = True
        self.idle_since = 0.0
        self.eof = False
        self.is_lost = False
        self.lost_reason: BaseException | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.in_use:
            # Bytes on an idle connection answer nothing we asked: it cannot be trusted with the next request.
            self.abort()
            return
        self.buffer += data
        self.received += len(data)
        self._wake()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_lost = True
        self.lost_reason = exc
        self._wake()
        if not self.lost.done():
            self.lost.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def more(self) -> None:
        """Wait until more bytes, EOF or the end of the connection; raise :class:`_Closed` if it already ended."""
        if self.eof or self.is_lost:
            raise _Closed
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def usable(self) -> bool:
        """Open, and nothing unread: fit for the next request."""
        return not (self.eof or self.is_lost or self.buffer or self.transport is None or self.transport.is_closing())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class HttpClient:
    """HTTP/1.1 requests to one server, e.g. ``HttpClient("https://host:8086/influx")``; use with ``async with``.

    The base URL's path, if any, prefixes every request's path. The port defaults to 80 (http) or 443 (https);
    https verifies the server with ``ssl.create_default_context()`` unless ``ssl_context`` is given.
    """

    def __init__(
        self,
        base_url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_idle_connections: int = MAX_IDLE_CONNECTIONS,
        keepalive_expiry_s: float = KEEPALIVE_EXPIRY_S,
        max_head_bytes: int = MAX_HEAD_BYTES,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL with a host: {base_url!r}")
        if parts.username is not None or parts.query or parts.fragment:
            raise ValueError(f"the base URL may not carry credentials, a query or a fragment: {parts.hostname}")
        default_port = 443 if parts.scheme == "https" else 80
        self._host = parts.hostname
        self._port = parts.port or default_port  # a bad port raises ValueError here
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = host if self._port == default_port else f"{host}:{self._port}"
        self._where = f"{host}:{self._port}"
        self._prefix = parts.path.rstrip("/")
        if not _TARGET.fullmatch(self._prefix or "/"):
            raise ValueError(f"the base URL's path must be URL-encoded: {parts.path!r}")
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        self._max_idle = max_idle_connections
        self._keepalive_expiry_s = keepalive_expiry_s
        self._max_head = max_head_bytes
        self._max_body = max_body_bytes
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection; requests still running fail with :class:`HttpConnectionError`."""
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        conns = list(self._open)
        for conn in conns:
            if conn.in_use:
                conn.abort()
        pending = [conn.lost for conn in conns if not conn.lost.done()]
        if pending:
            # A TLS close waits for the server's close_notify; do not wait for that long.
            await asyncio.wait(pending, timeout=1.0)
            for conn in conns:
                conn.abort()

    async def post(
        self,
        path_with_query: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout_s: float,
        content_type: str = "application/octet-stream",
    ) -> Response:
        """``POST`` ``body`` to ``path_with_query`` (URL-encoded, starting with ``/``). See :meth:`request`."""
        return await self.request(
            "POST", path_with_query, body, headers, timeout_s=timeout_s, content_type=content_type
        )

    async def request(
        self,
        method: str,
        path_with_query: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        *,
        timeout_s: float,
        content_type: str | None = None,
    ) -> Response:
        """Send one request and return the final answer, whatever its status.

        ``timeout_s`` bounds the whole request, connecting included. If a reused connection turns out closed
        before any byte of the answer, the request is sent once more on a fresh one. Raises :class:`HttpTimeout`,
        :class:`HttpConnectionError` or :class:`HttpProtocolError`; ``ValueError`` for a malformed path or header.
        """
        if self._closed:
            raise RuntimeError("HttpClient used after aclose()")
        data = self._encode(method, path_with_query, body, headers or {}, content_type)
        try:
            async with asyncio.timeout(timeout_s):
                return await self._round_trip(method, data)
        except TimeoutError:
            raise HttpTimeout(f"{self._where} did not answer within {timeout_s} s") from None

    def _encode(
        self, method: str, target: str, body: bytes, headers: Mapping[str, str], content_type: str | None
    ) -> bytes:
        """The request's bytes: request line, Host, Content-Length, Content-Type, the given headers, body."""
        if not _TOKEN.fullmatch(method):
            raise ValueError(f"not an HTTP method: {method!r}")
        if not _TARGET.fullmatch(target):
            raise ValueError(f"the request path must start with '/' and be URL-encoded: {target!r}")
        head = [f"{method} {self._prefix}{target} HTTP/1.1\r\nHost: {self._host_header}\r\n"]
        if body or method not in ("GET", "HEAD"):
            head.append(f"Content-Length: {len(body)}\r\n")
        if content_type is not None:
            head.append(f"Content-Type: {content_type}\r\n")
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name) or name.lower() in _OWN_HEADERS or "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} cannot be sent (malformed, or set by the client itself)")
            head.append(f"{name}: {value}\r\n")
        head.append("\r\n")
        return "".join(head).encode("latin-1") + body

    async def _round_trip(self, method: str, data: bytes) -> Response:
        conn = self._take_idle()
        if conn is not None:
            try:
                return await self._exchange(conn, method, data)
            except _NoAnswer:
                # The keep-alive race: the server closed this idle connection (its idle timeout, a restart) as we
                # sent on it, and nothing of an answer came back. Retry once on a fresh connection (RFC 9112
                # section 9.3.1; Go's net/http does the same). Safe for InfluxDB writes even if the server did get
                # the request: they are idempotent (the same series and timestamp overwrite the same values).
                pass
        conn = await self._connect()
        try:
            return await self._exchange(conn, method, data)
        except _NoAnswer as exc:
            raise HttpConnectionError(f"{self._where} closed the connection without answering{exc}") from None

    def _take_idle(self) -> _Connection | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            conn = self._idle.pop()  # the most recently used first: the least likely to have been dropped
            if conn.usable() and now - conn.idle_since < self._keepalive_expiry_s:
                conn.in_use = True
                return conn
            conn.close()
        return None

    def _release(self, conn: _Connection) -> None:
        if self._closed or len(self._idle) >= self._max_idle or not conn.usable():
            conn.close()
            return
        conn.in_use = False
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.append(conn)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                _Connection, self._host, self._port, ssl=self._ssl, server_hostname=self._host if self._ssl else None
            )
        except ssl.SSLError as exc:
            raise HttpConnectionError(f"TLS with {self._where} failed: {exc}") from exc
        except OSError as exc:
            raise HttpConnectionError(f"cannot connect to {self._where}: {exc.strerror or exc!r}") from exc
        if self._closed:
            conn.abort()
            raise HttpConnectionError(f"the client for {self._where} was closed")
        self._open.add(conn)
        conn.lost.add_done_callback(lambda _: self._open.discard(conn))
        return conn

    async def _exchange(self, conn: _Connection, method: str, data: bytes) -> Response:
        """Send ``data`` on ``conn`` and read the answer; the connection is pooled or closed before this returns."""
        transport = conn.transport
        if transport is None:  # never: connection_made runs before create_connection returns
            raise HttpConnectionError(f"the connection to {self._where} has no transport")
        conn.received = 0
        try:
            transport.write(data)
            version, status, reason, headers = await self._read_final_head(conn)
            body, keep_alive = await self._read_body(conn, method, version, status, headers)
        except BaseException:
            conn.abort()
            raise
        if keep_alive:
            self._release(conn)
        else:
            conn.close()
        return Response(status, reason or _phrase(status), headers, body)

    async def _read_final_head(self, conn: _Connection) -> tuple[int, int, str, dict[str, str]]:
        """The head of the final answer: 1xx heads (100 Continue, 103 Early Hints) before it are skipped."""
        while True:
            head = await self._read_head(conn)
            if head[1] >= 200:
                return head
            if head[1] == 101:
                raise HttpProtocolError(f"{self._where} switched protocols (HTTP 101), which was not asked for")

    async def _read_head(self, conn: _Connection) -> tuple[int, int, str, dict[str, str]]:
        """(minor version, status, reason, headers) of the next answer head."""
        buffer = conn.buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > self._max_head:
                raise HttpProtocolError(f"{self._where} sent an answer head larger than {self._max_head} bytes")
            try:
                await conn.more()
            except _Closed:
                if conn.received == 0:
                    raise _NoAnswer(_lost(conn.lost_reason)) from None
                raise self._cut_off(conn, "the answer's head") from None
        if end > self._max_head:
            raise HttpProtocolError(f"{self._where} sent an answer head larger than {self._max_head} bytes")
        status_line, *lines = bytes(buffer[:end]).split(b"\r\n")
        del buffer[: end + 4]
        match = _STATUS_LINE.fullmatch(status_line)
        if match is None:
            raise HttpProtocolError(f"{self._where} sent a malformed status line: {status_line[:100]!r}")
        return int(match[1]), int(match[2]), (match[3] or b"").decode("latin-1").strip(), self._headers(lines)

    def _headers(self, lines: list[bytes]) -> dict[str, str]:
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN_BYTES.fullmatch(name):
                raise HttpProtocolError(f"{self._where} sent a malformed header line: {line[:100]!r}")
            key = name.decode("ascii").lower()
            text = value.strip(b" \t").decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return headers

    async def _read_body(
        self, conn: _Connection, method: str, version: int, status: int, headers: dict[str, str]
    ) -> tuple[bytes, bool]:
        """The body (RFC 9112 section 6.3) and whether the connection may carry another request."""
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep_alive = "close" not in tokens and (version == 1 or "keep-alive" in tokens)
        if method == "HEAD" or status in _NO_BODY_STATUS:
            return b"", keep_alive
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if coding.rsplit(",", 1)[-1].strip().lower() != "chunked":
                return await self._read_to_eof(conn), False
            # With both Transfer-Encoding and Content-Length, the latter is ignored and the connection closed.
            return await self._read_chunked(conn), keep_alive and "content-length" not in headers
        length = headers.get("content-length")
        if length is None:
            return await self._read_to_eof(conn), False
        values = {v.strip().encode("latin-1") for v in length.split(",")}
        if len(values) != 1 or not _CONTENT_LENGTH.fullmatch(next(iter(values))):
            raise HttpProtocolError(f"{self._where} sent an invalid Content-Length: {length[:100]!r}")
        size = int(next(iter(values)))
        if size > self._max_body:
            raise HttpProtocolError(f"{self._where} announced a {size}-byte body; at most {self._max_body} accepted")
        return await self._read_exactly(conn, size, "the answer's body"), keep_alive

    async def _read_exactly(self, conn: _Connection, size: int, what: str) -> bytes:
        buffer = conn.buffer
        while len(buffer) < size:
            try:
                await conn.more()
            except _Closed:
                raise self._cut_off(conn, what) from None
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    async def _read_line(self, conn: _Connection, limit: int, what: str) -> bytes:
        buffer = conn.buffer
        while (end := buffer.find(b"\r\n")) < 0:
            if len(buffer) > limit:
                raise HttpProtocolError(f"{self._where} sent a line longer than {limit} bytes in {what}")
            try:
                await conn.more()
            except _Closed:
                raise self._cut_off(conn, what) from None
        if end > limit:
            raise HttpProtocolError(f"{self._where} sent a line longer than {limit} bytes in {what}")
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        return line

    async def _read_chunked(self, conn: _Connection) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = await self._read_line(conn, self._max_head, "a chunk size")
            size_text = line.partition(b";")[0].strip(b" \t")  # chunk extensions are ignored
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise HttpProtocolError(f"{self._where} sent an invalid chunk size line: {line[:100]!r}")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > self._max_body:
                raise HttpProtocolError(f"{self._where} sent a chunked body over {self._max_body} bytes")
            chunk = await self._read_exactly(conn, size + 2, "a chunk")
            if not chunk.endswith(b"\r\n"):
                raise HttpProtocolError(f"{self._where} sent a chunk without its closing CRLF")
            chunks.append(chunk[:-2])
        trailers = 0
        while line := await self._read_line(conn, self._max_head, "the trailers"):  # dropped, not merged
            trailers += len(line) + 2
            if trailers > self._max_head:
                raise HttpProtocolError(f"{self._where} sent trailers larger than {self._max_head} bytes")
        return b"".join(chunks)

    async def _read_to_eof(self, conn: _Connection) -> bytes:
        buffer = conn.buffer
        while True:
            if len(buffer) > self._max_body:
                raise HttpProtocolError(f"{self._where} sent a body over {self._max_body} bytes")
            try:
                await conn.more()
            except _Closed:
                break
        if conn.lost_reason is not None:  # reset, not closed: the body may be cut short
            raise self._cut_off(conn, "the answer's body")
        data = bytes(buffer)
        buffer.clear()
        return data

    def _cut_off(self, conn: _Connection, what: str) -> HttpConnectionError:
        return HttpConnectionError(
            f"{self._where} closed the connection in the middle of {what}{_lost(conn.lost_reason)}"
        )


def _lost(reason: BaseException | None) -> str:
    return "" if reason is None else f" ({reason!r})"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
