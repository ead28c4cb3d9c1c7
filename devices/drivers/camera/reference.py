"""A camera's reference views: the grey picture each check is compared with to tell that the camera was moved.

One per mode (day, and night for an infrared camera: the same view in infrared looks too different to compare
with a day picture). A view is learned from the first check of its mode that finds the picture sound (not
black, covered, frozen or blurred), and forgotten when an operator accepts a new view (the driver's
``accept_view`` action, after a camera was turned on purpose). Kept in memory, and in
``image_reference_dir`` when set, as ``<camera key>.<mode>.png``, written whole (a temporary file renamed over
the old one), so that a restart of the agent keeps comparing with the view the camera had before.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from devices.drivers.camera.image_filters import png_size
from devices.drivers.camera.image_profile import Mode

log = logging.getLogger(__name__)

#: A reference view is a small grey PNG (a 160-pixel-wide frame is ~5..20 kB); a larger file is not ours.
MAX_REFERENCE_BYTES: Final = 1_000_000
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9.-]+")


def camera_key(url: str) -> str:
    """A file-name key for the camera behind ``url``: its host and port, then a hash of the whole URL without
    credentials (two streams of one camera get two keys; a changed password keeps the key)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    clean = parts._replace(netloc=netloc).geturl()
    digest = hashlib.sha256(clean.encode()).hexdigest()[:16]
    return f"{_UNSAFE.sub('_', netloc).strip('_') or 'camera'}-{digest}"


class ReferenceViews:
    """The reference views of one camera (see the module docstring). File I/O is small and local: callers in
    the event loop run :meth:`load`, :meth:`put` and :meth:`clear` in a worker thread."""

    def __init__(self, folder: Path | None, key: str, where: str) -> None:
        self.folder = folder
        self.key = key
        self.where = where
        self._views: dict[Mode, bytes] = {}
        self._loaded = folder is None

    def path(self, mode: Mode) -> Path | None:
        return self.folder / f"{self.key}.{mode.value}.png" if self.folder is not None else None

    def get(self, mode: Mode) -> bytes | None:
        return self._views.get(mode)

    def load(self) -> None:
        """Read the views kept on disk (once). A file that is not a PNG is ignored and said so once."""
        if self._loaded:
            return
        self._loaded = True
        for mode in Mode:
            path = self.path(mode)
            assert path is not None
            try:
                if path.stat().st_size > MAX_REFERENCE_BYTES:
                    log.warning("%s: %s is too large for a reference view; ignored", self.where, path)
                    continue
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("%s: cannot read the reference view %s (%s)", self.where, path, exc.strerror or exc)
                continue
            if png_size(data) is None:
                log.warning("%s: %s is not a PNG; ignored (learned again)", self.where, path)
                continue
            self._views[mode] = data
            log.info("%s: %s reference view from %s", self.where, mode, path)

    def put(self, mode: Mode, data: bytes) -> None:
        """Keep ``data`` as the view of ``mode``; on disk too when a folder is set (an error there is logged:
        the view still works from memory)."""
        self._views[mode] = data
        path = self.path(mode)
        if path is None:
            return
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            tmp.replace(path)
        except OSError as exc:
            log.warning("%s: cannot keep the reference view in %s (%s)", self.where, path, exc.strerror or exc)
            with contextlib.suppress(OSError):
                tmp.unlink()

    def clear(self) -> None:
        """Forget every view (memory and disk; a file that cannot be removed is logged, and replaced when the
        next view is learned)."""
        self._views.clear()
        for mode in Mode:
            path = self.path(mode)
            if path is None:
                continue
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("%s: cannot remove the reference view %s (%s)", self.where, path, exc.strerror or exc)
