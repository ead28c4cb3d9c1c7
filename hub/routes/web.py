"""The operator page (``GET /``, assets under ``/ui/``) and ``GET /healthz``.

The page is static HTML, JavaScript and CSS from ``hub/web/`` (no build step); it asks for an API token once,
keeps it in the browser's local storage and reads everything through the API and the live event stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from hub.routes.models import Liveness

WEB_DIR: Final = Path(__file__).resolve().parent.parent / "web"

router = APIRouter(tags=["web"])


@router.get("/", include_in_schema=False)
async def operator_page() -> FileResponse:
    return FileResponse(
        WEB_DIR / "index.html", media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"}
    )


@router.get("/healthz", response_model=Liveness)
async def healthz() -> Liveness:
    """Liveness: 200 while the process serves requests (``/api/v1/health`` tells whether its links are up)."""
    return Liveness(status="ok")


def static_files() -> StaticFiles:
    return StaticFiles(directory=WEB_DIR)
