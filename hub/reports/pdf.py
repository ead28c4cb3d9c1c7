"""HTML to PDF with headless Chromium (``--print-to-pdf``), as a child process with a timeout.

Each print gets a temporary folder of its own: the page, the PDF and Chromium's profile (``--user-data-dir``), all
removed afterwards. Chromium runs in a session of its own, so that on a timeout its whole process group (the
browser and its renderer, GPU and utility children) is killed, not only the browser. The flags are those this
machine's headless Chromium needs (no sandbox as an unprivileged service, no GPU, no background network traffic:
the hub may run on a closed network), and ``--no-pdf-header-footer``: the page's own header says what it is."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Final

from hub.errors import HubError

log = logging.getLogger(__name__)

FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-pdf-header-footer",
)
#: What Chromium's own messages may add to an error, at most (its stderr is chatty).
STDERR_TAIL: Final = 600


class PdfUnavailable(HubError):
    """No Chromium to print with (the API answers 503)."""


class PdfFailed(HubError):
    """Chromium ran and gave no PDF, or took longer than allowed (``timed_out``)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def find_chromium(program: str) -> str | None:
    """The path of ``program`` (a path, or a name looked up in PATH), if it can be run."""
    if os.sep in program:
        return program if os.access(program, os.X_OK) and Path(program).is_file() else None
    return shutil.which(program)


async def print_pdf(html: str, *, chromium: str, timeout_s: float) -> bytes:
    """The PDF of ``html`` (a whole page, UTF-8). :class:`PdfUnavailable` when ``chromium`` is not found,
    :class:`PdfFailed` when it fails or runs past ``timeout_s``."""
    program = find_chromium(chromium)
    if program is None:
        raise PdfUnavailable(
            f"reports.chromium {chromium!r} is not installed or not executable: the PDF cannot be printed "
            "(Debian package chromium; the JSON, CSV and HTML formats work without it)"
        )
    folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="ioc-report-"))
    try:
        page, pdf = folder / "report.html", folder / "report.pdf"
        await asyncio.to_thread(page.write_text, html, "utf-8")
        args = [*FLAGS, f"--user-data-dir={folder / 'profile'}", f"--print-to-pdf={pdf}", page.as_uri()]
        process = await asyncio.create_subprocess_exec(
            program,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
        except TimeoutError:
            raise PdfFailed(f"chromium did not print the report within {timeout_s:g} s", timed_out=True) from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        data = await asyncio.to_thread(_read, pdf)
        if process.returncode != 0 or not data.startswith(b"%PDF-"):
            tail = stderr.decode("utf-8", "replace").strip()[-STDERR_TAIL:]
            raise PdfFailed(f"chromium exited with {process.returncode} and no PDF: {tail}")
        return data
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
