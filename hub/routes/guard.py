"""What every HTTP answer and every request body goes through before a route runs: two pure ASGI middlewares.

- :class:`SecurityHeaders` (outermost, around Starlette's error handler too) adds to every answer, the operator
  page, API answers, 404s and 500s alike: a Content-Security-Policy allowing only the hub's own origin, with
  ``frame-ancestors 'none'`` (CSP Level 3, clickjacking), ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: no-referrer``, ``X-Frame-Options: DENY`` (for browsers without ``frame-ancestors``), and,
  when the request came over TLS, ``Strict-Transport-Security`` (RFC 6797 forbids it on plain HTTP, §7.2).
- :class:`ApiGate` runs before FastAPI reads a body (FastAPI parses the body before it solves the route's
  dependencies, so a route's own token check comes after the read). For ``/api/`` paths that need a token it
  checks the bearer token first (401 with ``WWW-Authenticate: Bearer``, the body unread). Then the body limit:
  a ``Content-Length`` above the path's limit is answered 413 at once; a body without one (chunked) is counted
  as it streams in and refused with 413 as soon as it passes the limit. The 413 is JSON naming the limit.

The hub serves the API on the event loop that ingests MQTT: a body never read costs that loop nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.auth import Principal

#: Only the hub's own origin: the operator page's script and style are files under /ui/ (no inline code), the
#: page talks to the API on the same origin, and nothing may frame it.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
#: One year, the common floor for HSTS preload lists (https://hstspreload.org/).
HSTS: Final = (b"strict-transport-security", b"max-age=31536000")

NO_BEARER: Final = "missing bearer token (Authorization: Bearer <token>)"
BEARER_REFUSED: Final = "unknown, revoked or expired token"
#: Where :class:`ApiGate` leaves the principal it authenticated (``request.state.principal``).
PRINCIPAL_STATE: Final = "principal"

Authenticate = Callable[[str], Awaitable[Principal | None]]


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` (and HSTS over TLS) to every HTTP answer that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = (*SECURITY_HEADERS, HSTS) if scope.get("scheme") == "https" else SECURITY_HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend((name, value) for name, value in extra if name not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its limit. An :class:`HTTPException`, so FastAPI's body
    reader passes it on as it is (it turns other errors into a 400) and the answer is this 413."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


class ApiGate:
    """Bearer token check for ``/api/`` paths (except ``open_paths``) and body limits, before the body is read.

    ``authenticate`` None: no token check here (the routes answer 503 without the operations services).
    ``route_limits`` maps exact paths to their own (larger) limit; every other path has ``max_body_bytes``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        route_limits: Mapping[str, int],
        authenticate: Authenticate | None,
        open_paths: frozenset[str],
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.route_limits = dict(route_limits)
        self.authenticate = authenticate
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if self.authenticate is not None and path.startswith("/api/") and path not in self.open_paths:
            problem = await self._check_token(scope)
            if problem is not None:
                await _json(send, 401, {"detail": problem}, ((b"www-authenticate", b"Bearer"),))
                return
        limit = self.route_limits.get(path, self.max_body_bytes)
        detail = f"the request body is larger than the limit of {scope['method']} {path}: {limit} bytes"
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _json(send, 413, {"detail": detail, "limit_bytes": limit})
            return
        received = 0
        refused = False
        response_started = False
        replaced = False

        async def receive_counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    raise BodyTooLarge(detail)
            return message

        async def send_checked(message: Message) -> None:
            nonlocal response_started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                response_started = True
                if refused:
                    # The refusal became an answer on its way out (FastAPI's handler of HTTPException, or a
                    # route's broad ``except``): the client gets this 413, the same for every route.
                    replaced = True
                    await _json(send, 413, {"detail": detail, "limit_bytes": limit})
                    return
            await send(message)

        try:
            await self.app(scope, receive_counted, send_checked)
        except BodyTooLarge:
            if response_started:
                raise
            await _json(send, 413, {"detail": detail, "limit_bytes": limit})

    async def _check_token(self, scope: Scope) -> str | None:
        """None when the request carries a valid token (then left in the request state), else the 401 detail."""
        assert self.authenticate is not None
        header = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), None)
        scheme, _, credentials = (header or b"").decode("latin-1").partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            return NO_BEARER
        principal = await self.authenticate(credentials)
        if principal is None:
            return BEARER_REFUSED
        scope.setdefault("state", {})[PRINCIPAL_STATE] = principal
        return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server (h11, httptools) refuses such a request before it gets here
    return None


async def _json(
    send: Send, status: int, body: Mapping[str, object], headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
