"""The hub's HTTP/1.1 client (:mod:`hub.storage.httpclient`) against a real asyncio server on loopback.

The server below reads each request (head and ``Content-Length`` body) and sends back whatever the test scripts:
raw bytes, so framing, keep-alive, early closes and malformed answers can be produced exactly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub.storage.httpclient import HttpClient, HttpConnectionError, HttpProtocolError, HttpTimeout, Response

NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
TIMEOUT_S = 5.0


@dataclass
class Request:
    connection: int
    line: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    """What the server sends for one request; ``close``: close the connection after it."""

    data: bytes
    close: bool = False


#: Answers a request: a reply, or None to never answer it.
Script = Callable[[Request], Reply | None]


@dataclass
class Server:
    """Counts connections, records requests, answers each by ``script`` (default: 204, keep-alive)."""

    script: Script = lambda request: Reply(NO_CONTENT)
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    #: Connections the client closed (the server read EOF where the next request would start).
    closed_by_client: int = 0
    url: str = ""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: If set, every answer waits for it.
    gate: asyncio.Event | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.closed_by_client += 1
                    return
                line, *lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for text in lines:
                    if text:
                        name, value = text.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(number, line, headers, body)
                self.requests.append(request)
                reply = self.script(request)
                if self.gate is not None:
                    await self.gate.wait()
                if reply is None:  # never answers, but notices when the client gives up and closes
                    while await reader.read(65536):
                        pass
                    self.closed_by_client += 1
                    return
                writer.write(reply.data)
                await writer.drain()
                if reply.close:
                    return
        finally:
            writer.close()

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT_S):
            while not condition():  # noqa: ASYNC110 - polling the server's counters from outside
                await asyncio.sleep(0.005)


async def serve(server: Server, ssl_context: ssl.SSLContext | None = None) -> asyncio.Server:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=ssl_context)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    return listener


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    fake = Server()
    listener = await serve(fake)
    async with listener:
        yield fake
        for task in fake.tasks:
            task.cancel()
        await asyncio.gather(*fake.tasks, return_exceptions=True)


async def post(
    client: HttpClient, path: str = "/write?db=ioc", body: bytes = b"m x=1 1", timeout_s: float = TIMEOUT_S
) -> Response:
    return await client.post(path, body, {"Authorization": "Token t"}, timeout_s=timeout_s, content_type="text/plain")


# ------------------------------------------------------------------------------------------------ requests


async def test_request_bytes_and_keep_alive_one_connection_for_many_requests(server: Server) -> None:
    async with HttpClient(server.url) as client:
        for i in range(5):
            response = await post(client, body=f"m x={i} 1".encode())
            assert (response.status, response.reason, response.body) == (204, "No Content", b"")
    assert server.connections == 1
    assert len(server.requests) == 5
    first = server.requests[0]
    port = server.url.rsplit(":", 1)[1]
    assert first.line == "POST /write?db=ioc HTTP/1.1"
    assert first.headers == {
        "host": f"127.0.0.1:{port}",
        "content-length": "7",
        "content-type": "text/plain",
        "authorization": "Token t",
    }
    assert [r.body for r in server.requests] == [f"m x={i} 1".encode() for i in range(5)]
    await server.until(lambda: server.closed_by_client == 1)  # closed on leaving `async with`


async def test_concurrent_requests_open_separate_connections_then_reuse_them(server: Server) -> None:
    gate = asyncio.Event()
    server.gate = gate

    def hold_until_three(request: Request) -> Reply | None:
        if len(server.requests) == 3:
            gate.set()
        return Reply(NO_CONTENT)

    async def held(client: HttpClient) -> int:
        response = await post(client)
        return response.status

    server.script = hold_until_three
    async with HttpClient(server.url) as client:
        # Each request is on the wire before the first answer: one connection per request in flight.
        results = await asyncio.gather(*(held(client) for _ in range(3)))
        assert results == [204, 204, 204]
        assert server.connections == 3
        for _ in range(4):
            await post(client)
        assert server.connections == 3  # the idle ones are reused


async def test_a_path_prefix_in_the_base_url_prefixes_every_request(server: Server) -> None:
    async with HttpClient(server.url + "/influx/") as client:
        await post(client, "/api/v2/write?org=city%20ops&bucket=ioc")
        await client.request("GET", "/ping", timeout_s=TIMEOUT_S)
    assert [r.line for r in server.requests] == [
        "POST /influx/api/v2/write?org=city%20ops&bucket=ioc HTTP/1.1",
        "GET /influx/ping HTTP/1.1",
    ]
    assert "content-length" not in server.requests[1].headers  # a GET without a body


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("write?db=ioc", {}),
        ("/write?db=a b", {}),
        ("/write", {"Host": "elsewhere"}),
        ("/write", {"X-Evil": "a\r\nInjected: 1"}),
        ("/write", {"Bad Name": "x"}),
    ],
)
async def test_malformed_paths_and_headers_are_refused_before_sending(
    server: Server, path: str, headers: dict[str, str]
) -> None:
    async with HttpClient(server.url) as client:
        with pytest.raises(ValueError, match=r"cannot be sent|URL-encoded"):
            await client.post(path, b"", headers, timeout_s=TIMEOUT_S)
    assert server.requests == []


@pytest.mark.parametrize(
    "url", ["ftp://h/", "http://", "http://user:pw@h/", "http://h/?q=1", "http://h:99999/", "http://h/a b"]
)
def test_base_urls_it_cannot_use_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        HttpClient(url)


# ------------------------------------------------------------------------------------------------ answers


@pytest.mark.parametrize(
    ("answer", "status", "body", "headers"),
    [
        (b'HTTP/1.1 400 Bad Request\r\nContent-Length: 13\r\n\r\n{"error":"x"}', 400, b'{"error":"x"}', {}),
        (
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Checksum: abc\r\nX-More: 1\r\n\r\n"
            ),
            200,
            b"hello, world",
            {"transfer-encoding": "chunked"},
        ),
        (
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                b"HTTP/1.1 204 No Content\r\nX-Influxdb-Version: 1.8.10\r\n\r\n"
            ),
            204,
            b"",
            {"x-influxdb-version": "1.8.10"},
        ),
        (b"HTTP/1.1 503 \r\nSet: a\r\nset: b\r\nContent-Length: 0\r\n\r\n", 503, b"", {"set": "a, b"}),
    ],
    ids=["content-length", "chunked-with-trailers", "1xx-skipped", "repeated-headers"],
)
async def test_answers_are_framed_and_the_connection_reused(
    server: Server, answer: bytes, status: int, body: bytes, headers: dict[str, str]
) -> None:
    replies = iter([Reply(answer), Reply(NO_CONTENT)])
    server.script = lambda request: next(replies)
    async with HttpClient(server.url) as client:
        response = await post(client)
        assert (response.status, response.body) == (status, body)
        assert headers.items() <= response.headers.items()
        assert "x-checksum" not in response.headers  # trailers are dropped, not merged
        assert (await post(client)).status == 204
    assert server.connections == 1


async def test_an_empty_reason_is_filled_in(server: Server) -> None:
    server.script = lambda request: Reply(b"HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n")
    async with HttpClient(server.url) as client:
        assert (await post(client)).reason == "Service Unavailable"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\n\r\nuntil the end",  # neither length nor chunked: the body ends with the connection
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 13\r\n\r\nuntil the end",
        b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\nuntil the end",  # 1.0 without keep-alive
        b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nuntil the endEXTRA",  # bytes beyond the answer
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nd\r\nuntil the end\r\n0\r\n\r\n",
    ],
    ids=["until-eof", "connection-close", "http-1.0", "extra-bytes", "te-and-cl"],
)
async def test_answers_after_which_the_connection_is_not_reused(server: Server, answer: bytes) -> None:
    # The server keeps the connection open (except for the until-EOF answer, which it must close): a second
    # connection proves the client closed the first one itself.
    until_eof = b"Content-Length" not in answer and b"chunked" not in answer
    server.script = lambda request: Reply(answer, close=until_eof) if len(server.requests) == 1 else Reply(NO_CONTENT)
    async with HttpClient(server.url) as client:
        response = await post(client)
        assert (response.status, response.body) == (200, b"until the end")
        assert (await post(client)).status == 204
    assert server.connections == 2
    if not until_eof:
        await server.until(lambda: server.closed_by_client >= 1)


async def test_http_1_0_with_keep_alive_is_reused(server: Server) -> None:
    server.script = lambda request: Reply(b"HTTP/1.0 204 No Content\r\nConnection: Keep-Alive\r\n\r\n")
    async with HttpClient(server.url) as client:
        for _ in range(3):
            await post(client)
    assert server.connections == 1


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "malformed status line: b'HTTP/2 200 OK'"),
        (b"ICY 200 OK\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\n folded: x\r\nContent-Length: 0\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", "head larger than 65536 bytes"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000, "head larger than 65536 bytes"),  # no end in sight
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n", "2000000-byte body; at most 1048576"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcde\r\n0\r\n\r\n", "without its closing"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n200000\r\n", "chunked body over 1048576"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
    ],
)
async def test_malformed_or_oversized_answers_are_protocol_errors(server: Server, answer: bytes, message: str) -> None:
    server.script = lambda request: Reply(answer) if len(server.requests) == 1 else Reply(NO_CONTENT)
    async with HttpClient(server.url) as client:
        with pytest.raises(HttpProtocolError, match=rf"^127\.0\.0\.1:\d+ .*{message}") as info:
            await post(client)
        assert message in str(info.value)
        assert (await post(client)).status == 204  # on a new connection: the broken one was closed
    assert server.connections == 2


async def test_a_body_until_eof_is_capped(server: Server) -> None:
    server.script = lambda request: Reply(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 1_100_000, close=True)
    async with HttpClient(server.url) as client:
        with pytest.raises(HttpProtocolError, match="body over 1048576 bytes"):
            await post(client)


# ------------------------------------------------------------------------------------------------ closes and the retry


async def test_an_idle_connection_closed_by_the_server_is_replaced(server: Server) -> None:
    server.script = lambda request: Reply(NO_CONTENT, close=len(server.requests) == 1)
    async with HttpClient(server.url) as client:
        await post(client)
        await asyncio.sleep(0.05)  # the client sees the EOF while the connection is idle
        assert (await post(client)).status == 204
    assert (server.connections, len(server.requests)) == (2, 2)


async def test_the_keep_alive_race_is_retried_once_on_a_fresh_connection(server: Server) -> None:
    # The second request reaches a connection the server is just closing: it reads the request, then closes
    # without a byte of answer. The client sends it again on a new connection.
    server.script = lambda request: Reply(b"", close=True) if len(server.requests) == 2 else Reply(NO_CONTENT)
    async with HttpClient(server.url) as client:
        await post(client, body=b"first")
        assert (await post(client, body=b"second")).status == 204
    assert [(r.connection, r.body) for r in server.requests] == [(1, b"first"), (1, b"second"), (2, b"second")]


async def test_a_fresh_connection_closed_without_an_answer_is_not_retried(server: Server) -> None:
    server.script = lambda request: Reply(b"", close=True)
    async with HttpClient(server.url) as client:
        with pytest.raises(HttpConnectionError, match=r"127\.0\.0\.1:\d+ closed the connection without answering"):
            await post(client)
    assert len(server.requests) == 1


async def test_an_answer_cut_off_after_its_first_bytes_is_an_error_not_a_retry(server: Server) -> None:
    partial = b"HTTP/1.1 204 No Con"
    server.script = lambda request: Reply(partial, close=True) if len(server.requests) == 2 else Reply(NO_CONTENT)
    async with HttpClient(server.url) as client:
        await post(client)
        with pytest.raises(HttpConnectionError, match="closed the connection in the middle of the answer's head"):
            await post(client)
        await post(client)
    assert len(server.requests) == 3  # the cut-off request was not sent again
    assert server.connections == 2


async def test_a_body_cut_off_is_an_error(server: Server) -> None:
    server.script = lambda request: Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close=True)
    async with HttpClient(server.url) as client:
        with pytest.raises(HttpConnectionError, match="in the middle of the answer's body"):
            await post(client)
    assert len(server.requests) == 1


async def test_a_timeout_closes_the_connection(server: Server) -> None:
    server.script = lambda request: None if len(server.requests) == 1 else Reply(NO_CONTENT)
    async with HttpClient(server.url) as client:
        started = time.monotonic()
        with pytest.raises(HttpTimeout, match=r"^127\.0\.0\.1:\d+ did not answer within 0\.3 s$"):
            await post(client, timeout_s=0.3)
        assert 0.3 <= time.monotonic() - started < 1.0
        await server.until(lambda: server.closed_by_client == 1)
        assert (await post(client)).status == 204
    assert server.connections == 2  # the one with no answer was not reused


async def test_a_cancelled_request_closes_its_connection(server: Server) -> None:
    server.script = lambda request: None if len(server.requests) == 1 else Reply(NO_CONTENT)
    async with HttpClient(server.url) as client:
        task = asyncio.create_task(post(client))
        await server.until(lambda: len(server.requests) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.until(lambda: server.closed_by_client == 1)
        assert (await post(client)).status == 204
    assert server.connections == 2


async def test_idle_connections_expire(server: Server) -> None:
    async with HttpClient(server.url, keepalive_expiry_s=0.05) as client:
        await post(client)
        await asyncio.sleep(0.1)
        await post(client)
    assert server.connections == 2
    await server.until(lambda: server.closed_by_client == 2)


async def test_connection_refused_names_the_server() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()  # nothing listens there any more
    async with HttpClient(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(HttpConnectionError, match=rf"^cannot connect to 127\.0\.0\.1:{port}: "):
            await post(client)


# ------------------------------------------------------------------------------------------------ TLS


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ioc test")])
    # Valid two years either side: OpenSSL checks it against the machine's clock, which a time-travelling
    # run (tests/timetravel.py) does not move.
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=730))
        .not_valid_after(now + dt.timedelta(days=730))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


async def test_https_with_a_verified_certificate_and_keep_alive(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    fake = Server()
    listener = await serve(fake, server_context)
    async with listener:
        trusting = ssl.create_default_context(cafile=str(cert_file))
        async with HttpClient(fake.url + "/influx", ssl_context=trusting) as client:
            for _ in range(3):
                assert (await post(client, "/write?db=ioc")).status == 204
        assert fake.connections == 1
        assert fake.requests[0].line == "POST /influx/write?db=ioc HTTP/1.1"
        # The default context trusts the system's CAs only: this certificate is refused.
        async with HttpClient(fake.url) as client:
            with pytest.raises(HttpConnectionError, match=r"TLS with 127\.0\.0\.1:\d+ failed: .*CERTIFICATE_VERIFY"):
                await post(client)
        await fake.until(lambda: fake.closed_by_client == 1)
        for task in fake.tasks:
            task.cancel()
        await asyncio.gather(*fake.tasks, return_exceptions=True)
