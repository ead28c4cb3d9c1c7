"""The security headers are on answers made outside the routes too: Starlette's 500 for an unhandled error (the
outermost layer of a FastAPI app's own stack), and HSTS only over TLS (RFC 6797 §7.2). Through the hub's
:class:`hub.api.HubApp` as an ASGI app, with a route made to fail."""

from __future__ import annotations

import httpx
import pytest

from hub.api import HubApp
from hub.routes.guard import CONTENT_SECURITY_POLICY


def failing_app() -> HubApp:
    app = HubApp(docs_url=None, redoc_url=None)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/fine")
    async def fine() -> dict[str, str]:
        return {"ok": "yes"}

    return app


@pytest.mark.parametrize(("scheme", "hsts"), [("http", None), ("https", "max-age=31536000")])
async def test_headers_on_a_server_error_and_hsts_only_over_tls(scheme: str, hsts: str | None) -> None:
    transport = httpx.ASGITransport(app=failing_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://hub") as http:
        for path, status in (("/boom", 500), ("/fine", 200), ("/missing", 404)):
            r = await http.get(path)
            assert r.status_code == status
            assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers.get("strict-transport-security") == hsts
