"""An ONVIF device endpoint: the device service of a camera over real HTTP, with faults on demand.

``async with OnvifSimulator(username="admin", password="secret") as sim:`` listens on 127.0.0.1 (port 0 picks
a free port) and answers SOAP 1.2 POSTs to ``/onvif/device_service``:

- ``GetSystemDateAndTime`` to anyone (ONVIF Core access class PRE_AUTH), in the simulated clock (the host's
  clock plus ``clock_offset_s``: a camera whose clock is off);
- ``GetDeviceInformation`` to a request carrying a valid WS-Security UsernameToken: digest recomputed from
  the nonce, ``Created`` and the password, ``Created`` within ``max_token_age_s`` of the simulated clock, nonce
  not seen before; or to anyone when ``auth_required`` is off. A refused token gets the fault the Core spec
  names, ``env:Sender`` / ``ter:NotAuthorized``, with HTTP 400 (the SOAP 1.2 HTTP binding's status for a
  Sender fault). ``auth_mode="digest"`` wants HTTP Digest instead (RFC 7616, MD5, qop=auth: the Core spec's
  other user authentication), ``"both"`` takes either; refusals then come as HTTP 401 with the challenge;
- ``SystemReboot``, authorized like ``GetDeviceInformation``: answers "Rebooting in N seconds", then stops
  listening for ``reboot_s`` and comes back (``reboots`` counts them);
- any other operation: ``env:Receiver`` / ``ter:ActionNotSupported``, HTTP 500.

Fault knobs: :meth:`set_fault` with ``silent`` (read the request, never answer), ``garbage`` (HTTP 200 whose
body is not XML), ``not_http`` (bytes that are not HTTP, then close), ``soap_fault`` (every operation answers
``env:Receiver``/``ter:ActionFailed``), ``http_error`` (HTTP 503 with an HTML page) or ``refuse_auth``
(every token refused, as with a locked account); :meth:`set_delay` (answer late); :meth:`set_offline` and
:meth:`set_online` (stop listening: connections are refused; listen again on the same port).

:class:`SimulatedCameras` puts several endpoints and one RTSP server (:mod:`devices.sim.rtsp`) together: what
``ioc sim camera`` serves and what the simulated city uses.

This is a test and demo tool: one request per connection (``Connection: close``), small bounded reads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import random
import re
import secrets
import ssl
import xml.etree.ElementTree as ET
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final, Literal, Self
from xml.sax.saxutils import escape

from common.tasks import cancel_and_wait
from devices.drivers.camera import soap
from devices.sim.rtsp import RtspSimulator, RtspUnavailable

log = logging.getLogger(__name__)

Fault = Literal["silent", "garbage", "not_http", "soap_fault", "http_error", "refuse_auth"]
AuthMode = Literal["ws-security", "digest", "both"]
FAULTS: Final[tuple[str, ...]] = ("silent", "garbage", "not_http", "soap_fault", "http_error", "refuse_auth")
DEVICE_SERVICE_PATH: Final = "/onvif/device_service"
#: Bounds of one request: header block and body.
MAX_HEADER_BYTES: Final = 16 * 1024
MAX_REQUEST_BYTES: Final = 64 * 1024
#: A client that sends nothing for this long is dropped.
READ_TIMEOUT_S: Final = 10.0
#: Nonces remembered to refuse a replayed token.
NONCE_MEMORY: Final = 1024
#: Realm of the HTTP Digest challenge.
DIGEST_REALM: Final = "IOC-SIM-CAMERA"
_DIGEST_FIELD: Final = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Too Large",
}


@dataclass(frozen=True, slots=True)
class Identity:
    """What ``GetDeviceInformation`` answers."""

    manufacturer: str = "IOC Simulated Cameras"
    model: str = "SIM-CAM-1080"
    firmware_version: str = "1.4.2"
    serial_number: str = "SIM0001"
    hardware_id: str = "HW-1.0"


@dataclass(frozen=True, slots=True)
class _Request:
    operation: str
    document: ET.Element
    method: str
    headers: dict[str, str]


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _envelope(body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<env:Envelope xmlns:env="{soap.SOAP12_ENV}" xmlns:tds="{soap.TDS}" xmlns:tt="{soap.TT}" '
        f'xmlns:ter="{soap.TER}"><env:Body>{body}</env:Body></env:Envelope>'
    ).encode()


def fault_body(code: str, subcode: str, reason: str) -> bytes:
    """A SOAP 1.2 fault as ONVIF devices send it (Core spec, "SOAP fault processing")."""
    return _envelope(
        "<env:Fault>"
        f"<env:Code><env:Value>env:{code}</env:Value>"
        f"<env:Subcode><env:Value>ter:{subcode}</env:Value></env:Subcode></env:Code>"
        f'<env:Reason><env:Text xml:lang="en">{reason}</env:Text></env:Reason>'
        "</env:Fault>"
    )


def _date_time(prefix: str, moment: datetime) -> str:
    return (
        f"<tt:{prefix}><tt:Time><tt:Hour>{moment.hour}</tt:Hour><tt:Minute>{moment.minute}</tt:Minute>"
        f"<tt:Second>{moment.second}</tt:Second></tt:Time><tt:Date><tt:Year>{moment.year}</tt:Year>"
        f"<tt:Month>{moment.month}</tt:Month><tt:Day>{moment.day}</tt:Day></tt:Date></tt:{prefix}>"
    )


class OnvifSimulator:
    """One simulated camera's ONVIF device service (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "admin",
        password: str = "admin",  # noqa: S107 - a simulator's documented default, like a camera's factory one
        auth_required: bool = True,
        identity: Identity | None = None,
        clock_offset_s: float = 0.0,
        max_token_age_s: float = 300.0,
        reboot_s: float = 2.0,
        auth_mode: AuthMode = "ws-security",
        tls: ssl.SSLContext | None = None,
        seed: int | None = None,
    ) -> None:
        self.host = host
        #: Serve HTTPS with this server context (None: plain HTTP).
        self.tls = tls
        #: Which credentials protected operations accept: a WS-Security token, HTTP Digest, or either.
        self.auth_mode: AuthMode = auth_mode
        self._digest_nonces: deque[str] = deque(maxlen=NONCE_MEMORY)
        self._port = port
        self.username = username
        self.password = password
        self.auth_required = auth_required
        self.identity = identity or Identity()
        self.clock_offset_s = clock_offset_s
        self.max_token_age_s = max_token_age_s
        self.fault: Fault | None = None
        self.delay_s = 0.0
        self.latency_s = (0.0, 0.0)
        self.spike_probability = 0.0
        self.spike_s = 0.0
        #: Requests answered or not, by operation ("?" when the body could not be read).
        self.requests: Counter[str] = Counter()
        #: Tokens refused, by reason.
        self.auth_failures: Counter[str] = Counter()
        self._nonces: deque[bytes] = deque(maxlen=NONCE_MEMORY)
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        #: How long a reboot (``SystemReboot``) keeps the device away.
        self.reboot_s = reboot_s
        self.reboots = 0
        self._reboot_task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._reboot_task = self._reboot_task, None
        if task is not None:
            await cancel_and_wait([task])
        await self.stop()

    async def start(self) -> None:
        """Listen (on the port given, or a free one the first time)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve, self.host, self._port, reuse_address=True, ssl=self.tls)
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("ONVIF simulator listening on %s", self.url)

    async def stop(self) -> None:
        """Stop listening and drop every open connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.host}:{self._port}{DEVICE_SERVICE_PATH}"

    def describe(self) -> dict[str, Any]:
        """What a client needs: host, port, path, credentials, identity (``ioc sim camera`` prints this)."""
        return {
            "host": self.host,
            "port": self._port,
            "path": DEVICE_SERVICE_PATH,
            "username": self.username,
            "password": self.password,
            "auth_required": self.auth_required,
            "identity": asdict(self.identity),
        }

    # -- knobs --------------------------------------------------------------------------------------------

    def set_fault(self, fault: Fault | None) -> None:
        """Misbehave from the next request on (None: behave)."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r} (known: {', '.join(FAULTS)})")
        self.fault = fault

    def set_delay(self, seconds: float) -> None:
        """Wait this long before every answer."""
        if seconds < 0:
            raise ValueError("delay must not be negative")
        self.delay_s = seconds

    def set_latency(self, low_s: float, high_s: float, spike_probability: float = 0.0, spike_s: float = 0.0) -> None:
        """Answer after a time drawn from ``low_s..high_s``, and now and then (``spike_probability``) after
        ``spike_s`` more: how real cameras' SOAP answers come (their web servers are small and busy)."""
        if not 0 <= low_s <= high_s or spike_s < 0 or not 0 <= spike_probability <= 1:
            raise ValueError("latency needs 0 <= low_s <= high_s, spike_s >= 0, 0 <= spike_probability <= 1")
        self.latency_s = (low_s, high_s)
        self.spike_probability = spike_probability
        self.spike_s = spike_s

    def _latency(self) -> float:
        low, high = self.latency_s
        extra = self._rng.uniform(low, high) if high else 0.0
        if self.spike_probability and self._rng.random() < self.spike_probability:
            extra += self.spike_s
        return extra

    async def set_offline(self) -> None:
        """Stop listening: connecting is refused, as with a camera that is off. The port is kept."""
        await self.stop()

    async def set_online(self) -> None:
        """Listen again on the same port."""
        await self.start()

    def now(self) -> datetime:
        """The simulated clock."""
        return datetime.now(UTC) + timedelta(seconds=self.clock_offset_s)

    # -- HTTP -----------------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio runs each connection's callback as its own task: tracked so that stop() can drop it.
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)
        try:
            await self._exchange(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels these tasks. Ending quietly matters: Python 3.11's start_server calls
            # task.exception() on a finished connection task, which raises (and logs) for a cancelled one.
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await self._read_request(reader)
        except _BadRequest as exc:
            self.requests["?"] += 1
            await self._reply(writer, exc.status, str(exc).encode(), "text/plain")
            return
        self.requests[request.operation] += 1
        fault = self.fault
        if fault == "silent":
            await asyncio.Event().wait()  # hold the connection, never answer (cancelled by stop or the client)
        delay = self.delay_s + self._latency()
        if delay:
            await asyncio.sleep(delay)
        if fault == "not_http":
            writer.write(b"\x00\x17\xfe garbage, not HTTP \xff\r\n")
            await writer.drain()
            return
        if fault == "garbage":
            junk = bytes(self._rng.randrange(256) for _ in range(64)).replace(b"<", b"?")
            await self._reply(writer, 200, b"@@" + junk, soap.CONTENT_TYPE)
            return
        if fault == "http_error":
            page = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
            await self._reply(writer, 503, page, "text/html", reason="Service Unavailable")
            return
        if fault == "soap_fault":
            body = fault_body("Receiver", "ActionFailed", "The device failed to process the request")
            await self._reply(writer, 500, body, soap.CONTENT_TYPE, reason="Internal Server Error")
            return
        status, body, extra = self._answer(request)
        await self._reply(writer, status, body, soap.CONTENT_TYPE, headers=extra)

    async def _read_request(self, reader: asyncio.StreamReader) -> _Request:
        first = await asyncio.wait_for(reader.readexactly(1), READ_TIMEOUT_S)
        if not first.isupper():
            # Not a request line (a TLS ClientHello starts with 0x16): answer at once, as web servers do.
            raise _BadRequest(400, "not an HTTP request")
        try:
            head = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            raise _BadRequest(413, "header block too large") from None
        if len(head) > MAX_HEADER_BYTES:
            raise _BadRequest(413, "header block too large")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise _BadRequest(400, "malformed request line")
        method, path, _ = parts
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise _BadRequest(400, "bad Content-Length") from None
        if not 0 <= length <= MAX_REQUEST_BYTES:
            raise _BadRequest(413, "body too large")
        body = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT_S)
        if path.split("?")[0] != DEVICE_SERVICE_PATH:
            raise _BadRequest(404, f"no service at {path}")
        if method != "POST":
            raise _BadRequest(405, "POST only")
        try:
            document = soap.parse_xml(body)
        except soap.SoapError as exc:
            raise _BadRequest(400, str(exc)) from None
        body_el = document.find(f"{{{soap.SOAP12_ENV}}}Body")
        if body_el is None or len(body_el) == 0:
            raise _BadRequest(400, "not a SOAP 1.2 envelope with a body")
        return _Request(body_el[0].tag.rsplit("}", 1)[-1], document, method, headers)

    async def _reply(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str,
        *,
        reason: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        reason = reason or _REASONS.get(status, "Error")
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n{extra}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + body)
        await writer.drain()

    # -- ONVIF ----------------------------------------------------------------------------------------------

    def _answer(self, request: _Request) -> tuple[int, bytes, dict[str, str]]:
        operation = request.operation
        if operation == soap.GET_SYSTEM_DATE_AND_TIME:
            return 200, self._system_date_and_time(), {}
        if operation in (soap.GET_DEVICE_INFORMATION, soap.SYSTEM_REBOOT):
            refusal = self._refusal(request)
            if refusal:
                self.auth_failures[refusal] += 1
                fault = fault_body("Sender", soap.NOT_AUTHORIZED, "Sender not Authorized")
                if self.auth_mode == "ws-security":
                    return 400, fault, {}
                # RFC 7616: a 401 carries the challenge the client answers with its digest.
                return 401, fault, {"WWW-Authenticate": self._challenge()}
            if operation == soap.SYSTEM_REBOOT:
                return 200, self._reboot(), {}
            return 200, self._device_information(), {}
        return 500, fault_body("Receiver", "ActionNotSupported", f"{operation} is not supported"), {}

    def _refusal(self, request: _Request) -> str:
        """Why the request's credentials are refused, or "" when they are accepted (or not needed)."""
        if self.fault == "refuse_auth":
            return "account locked"
        authorization = request.headers.get("authorization", "")
        if self.auth_mode == "digest" or (self.auth_mode == "both" and authorization):
            if not self.auth_required and not authorization:
                return ""
            return self._digest_refusal(authorization, request.method)
        return self._token_refusal(request.document)

    def _challenge(self) -> str:
        nonce = secrets.token_hex(16)
        self._digest_nonces.append(nonce)
        return f'Digest realm="{DIGEST_REALM}", qop="auth", algorithm=MD5, nonce="{nonce}"'

    def _digest_refusal(self, authorization: str, method: str) -> str:
        """Check an HTTP Digest ``Authorization`` (RFC 7616, MD5, qop=auth)."""
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() != "digest":
            return "no digest"
        fields = {k.lower(): quoted or plain for k, quoted, plain in _DIGEST_FIELD.findall(rest)}
        needed = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        if any(k not in fields for k in needed):
            return "digest without " + ", ".join(k for k in needed if k not in fields)
        if fields["realm"] != DIGEST_REALM or fields["nonce"] not in self._digest_nonces:
            return "digest with an unknown nonce"

        def md5(text: str) -> str:
            # MD5 is the algorithm cameras offer for HTTP Digest (RFC 7616 keeps it for compatibility).
            return hashlib.md5(text.encode()).hexdigest()  # noqa: S324

        ha1 = md5(f"{fields['username']}:{DIGEST_REALM}:{self.password}")
        ha2 = md5(f"{method}:{fields['uri']}")
        expected = md5(f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:{fields['qop']}:{ha2}")
        if fields["username"] != self.username or not hmac.compare_digest(expected, fields["response"]):
            return "digest: wrong username or password"
        return ""

    def _token_refusal(self, document: ET.Element) -> str:  # noqa: PLR0911 - one return per reason to refuse
        """Check a WS-Security UsernameToken (digest, age, nonce replay)."""
        token = document.find(f"{{{soap.SOAP12_ENV}}}Header/{{{soap.WSSE}}}Security/{{{soap.WSSE}}}UsernameToken")
        if token is None:
            return "no token" if self.auth_required else ""
        username = token.findtext(f"{{{soap.WSSE}}}Username", "")
        password = token.find(f"{{{soap.WSSE}}}Password")
        nonce_text = token.findtext(f"{{{soap.WSSE}}}Nonce", "")
        created = token.findtext(f"{{{soap.WSU}}}Created", "")
        if password is None or password.get("Type") != soap.DIGEST_TYPE_URI:
            return "not a password digest"
        try:
            nonce = base64.b64decode(nonce_text, validate=True)
            stamp = datetime.fromisoformat(created)
        except (binascii.Error, ValueError):
            return "bad nonce or created"
        if stamp.tzinfo is None:
            return "created without a time zone"
        if abs((stamp - self.now()).total_seconds()) > self.max_token_age_s:
            return "created too far from the device clock"
        expected = soap.password_digest(nonce, created, self.password)
        if username != self.username or not hmac.compare_digest(expected, (password.text or "").strip()):
            return "wrong username or password"
        if nonce in self._nonces:
            return "nonce replayed"
        self._nonces.append(nonce)
        return ""

    def _reboot(self) -> bytes:
        """Answer, then be gone for ``reboot_s`` (connections refused) and come back, as a camera does."""
        self.reboots += 1
        if self._reboot_task is None or self._reboot_task.done():
            self._reboot_task = asyncio.get_running_loop().create_task(self._reboot_cycle())
        seconds = max(1, round(self.reboot_s))
        return _envelope(
            f"<tds:SystemRebootResponse><tds:Message>Rebooting in {seconds} second{'s' * (seconds != 1)}</tds:Message>"
            "</tds:SystemRebootResponse>"
        )

    async def _reboot_cycle(self) -> None:
        await asyncio.sleep(0.1)  # let the answer leave first
        await self.stop()
        await asyncio.sleep(self.reboot_s)
        await self.start()
        log.info("ONVIF simulator on port %d is back after a reboot", self._port)

    def _system_date_and_time(self) -> bytes:
        now = self.now()
        return _envelope(
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
            "<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
            "<tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone>"
            f"{_date_time('UTCDateTime', now)}{_date_time('LocalDateTime', now)}"
            "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    def _device_information(self) -> bytes:
        fields = "".join(
            f"<tds:{name}>{escape(value)}</tds:{name}>"
            for name, value in (
                ("Manufacturer", self.identity.manufacturer),
                ("Model", self.identity.model),
                ("FirmwareVersion", self.identity.firmware_version),
                ("SerialNumber", self.identity.serial_number),
                ("HardwareId", self.identity.hardware_id),
            )
        )
        return _envelope(f"<tds:GetDeviceInformationResponse>{fields}</tds:GetDeviceInformationResponse>")


#: SOAP answer time of a camera's small web server (seconds), and a slow answer now and then.
REALISTIC_LATENCY_S: Final = (0.01, 0.06)
REALISTIC_SPIKE: Final = (0.02, 0.4)


def _clock_offset(rng: random.Random) -> float:
    """A camera clock: NTP-synced ones within a second or two, one in five left to drift for minutes."""
    if rng.random() < 0.2:
        return rng.choice((-1, 1)) * rng.uniform(30, 300)
    return rng.gauss(0, 1)


@dataclass(frozen=True, slots=True)
class SimulatedCamera:
    """One camera of :class:`SimulatedCameras`: its ONVIF endpoint and its stream name."""

    name: str
    onvif: OnvifSimulator


class SimulatedCameras:
    """Several cameras: one ONVIF endpoint each (own port, own serial number) and, when VLC and ffmpeg are
    here, one RTSP server with a stream per camera (:class:`devices.sim.rtsp.RtspSimulator`).

    ``realistic`` (the default) gives each camera a clock of its own (most within a second or two, one in
    five minutes off, as unsynchronised cameras drift) and a SOAP answer time of 10..60 ms with a 0.4 s spike
    now and then; ``seed`` makes that repeatable.

    A missing RTSP server is not an error: the cameras then have no stream, and :meth:`describe` says why
    (``rtsp.reason``), so a demo still runs, its cameras reporting ``rtsp_state`` ``unavailable``.
    """

    def __init__(
        self,
        count: int = 1,
        *,
        host: str = "127.0.0.1",
        username: str = "admin",
        password: str = "admin",  # noqa: S107 - a simulator's documented default
        auth_required: bool = True,
        rtsp: bool = True,
        cvlc: str = "cvlc",
        ffmpeg: str = "ffmpeg",
        prefix: str = "cam",
        realistic: bool = True,
        seed: int | None = None,
    ) -> None:
        if not 1 <= count <= 100:
            raise ValueError(f"count must be 1..100, not {count}")
        self.host = host
        rng = random.Random(seed)
        self.cameras = [
            SimulatedCamera(
                name=f"{prefix}-{i}",
                onvif=OnvifSimulator(
                    host=host,
                    username=username,
                    password=password,
                    auth_required=auth_required,
                    identity=Identity(serial_number=f"SIM{i:04d}"),
                    clock_offset_s=_clock_offset(rng) if realistic else 0.0,
                    seed=rng.randrange(2**32),
                ),
            )
            for i in range(1, count + 1)
        ]
        if realistic:
            for camera in self.cameras:
                camera.onvif.set_latency(*REALISTIC_LATENCY_S, *REALISTIC_SPIKE)
        self.rtsp: RtspSimulator | None = None
        self.rtsp_reason = "RTSP server not requested" if not rtsp else ""
        if rtsp:
            self.rtsp = RtspSimulator([c.name for c in self.cameras], host=host, cvlc=cvlc, ffmpeg=ffmpeg)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every ONVIF endpoint, then the RTSP server (a missing one is logged once, not raised)."""
        for camera in self.cameras:
            await camera.onvif.start()
        if self.rtsp is not None:
            try:
                await self.rtsp.start()
            except RtspUnavailable as exc:
                self.rtsp_reason = str(exc)
                log.warning("cameras without streams: %s", exc)

    async def stop(self) -> None:
        if self.rtsp is not None:
            await self.rtsp.close()
        for camera in self.cameras:
            await camera.onvif.stop()

    def rtsp_url(self, name: str) -> str | None:
        """The camera's stream URL, or None when the RTSP server is not running."""
        if self.rtsp is None or not self.rtsp.running:
            return None
        return self.rtsp.url(name)

    def device_options(self, camera: SimulatedCamera) -> dict[str, Any]:
        """The ``options`` of an edge-config device entry (driver ``camera``) for ``camera``."""
        options: dict[str, Any] = {
            "host": self.host,
            "onvif_port": camera.onvif.port,
            "username": camera.onvif.username,
            "password": camera.onvif.password,
        }
        url = self.rtsp_url(camera.name)
        if url is not None:
            options["rtsp_url"] = url
            options["rtsp_transport"] = "udp"  # VLC's RTSP server streams RTP over UDP only
        else:
            # The camera's readings then carry why there is no stream (e.g. VLC not installed).
            options["no_rtsp_reason"] = self.rtsp_reason or "RTSP server not running"
        return options

    def describe(self) -> dict[str, Any]:
        """The JSON line of ``ioc sim camera``."""
        rtsp: dict[str, Any] = (
            self.rtsp.describe()
            if self.rtsp is not None and self.rtsp.running
            else {"available": False, "reason": self.rtsp_reason}
        )
        return {
            "host": self.host,
            "rtsp": rtsp,
            "cameras": [
                {
                    "name": c.name,
                    "onvif": c.onvif.describe(),
                    "rtsp_url": self.rtsp_url(c.name),
                    "options": self.device_options(c),
                }
                for c in self.cameras
            ],
        }
