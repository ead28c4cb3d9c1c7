"""The snapshot folder's files: their names, and the disk work the store runs in a thread.

Layout: ``{dir}/{device}/{ts}-{trigger}-{width}x{height}[-{problem}+{problem}...].jpg`` (``ts`` in ms since the
epoch, the time the frame was taken; the image problems it named, if any), and ``{dir}/{device}/.gateway``, the
``site/gateway`` whose snapshots the folder holds, so the folder alone says what it holds and whose. Device ids,
sites, gateways and problem names are contract IDs and metric names (``a-z``, ``0-9``, ``-``, ``_``), safe in file
names. Problems whose names would make the file name longer than :data:`MAX_PROBLEMS_CHARS` (more than a dozen
long ones; a camera has five) are written as ``-~``: unknown after a restart.

Each file is written to a temporary name in its folder, flushed to disk and renamed over its final name
(``os.replace``, atomic on POSIX): a reader sees the whole file or none; a temporary file left by a stop
mid-write is removed by the next :func:`scan`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from wire.v1 import ID_PATTERN

log = logging.getLogger(__name__)

_NAME: Final = re.compile(r"(\d{13})-(periodic|problem|cleared)-(\d{1,5})x(\d{1,5})(?:-(~|[a-z][a-z0-9_+]*))?\.jpg")
#: The longest problems part of a file name (the whole name stays below the 255 bytes of common file systems).
MAX_PROBLEMS_CHARS: Final = 200
_UNKNOWN: Final = "~"
_ID: Final = ID_PATTERN.removeprefix("^").removesuffix("$")
_DEVICE: Final = re.compile(_ID)
_TMP_PREFIX: Final = ".tmp-"
#: The file in a camera's folder naming the gateway whose snapshots it holds (``site/gateway``).
GATEWAY_FILE: Final = ".gateway"
_GATEWAY: Final = re.compile(f"{_ID}/{_ID}")


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    """One snapshot on disk. ``problems`` (sorted) is None when not known (too many to name in the file name)."""

    device: str
    ts: int
    trigger: str
    width: int
    height: int
    size: int
    problems: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        base = f"{self.ts}-{self.trigger}-{self.width}x{self.height}"
        if self.problems is None:
            return f"{base}-{_UNKNOWN}.jpg"
        if not self.problems:
            return f"{base}.jpg"
        joined = "+".join(self.problems)
        return f"{base}-{joined if len(joined) <= MAX_PROBLEMS_CHARS else _UNKNOWN}.jpg"


def _write_atomic(folder: Path, name: str, data: bytes) -> None:
    tmp = folder / f"{_TMP_PREFIX}{secrets.token_hex(6)}-{name}"
    try:
        with tmp.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(folder / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_file(folder: Path, name: str, data: bytes, gateway: str | None) -> None:
    """Write a snapshot, and first the folder's ``.gateway`` when ``gateway`` is given."""
    folder.mkdir(parents=True, exist_ok=True)
    if gateway is not None:
        _write_atomic(folder, GATEWAY_FILE, f"{gateway}\n".encode())
    _write_atomic(folder, name, data)


def remove_files(folder: Path, snaps: list[StoredSnapshot], emptied: set[str]) -> None:
    """Remove ``snaps``' files; the folders of the ``emptied`` cameras go too, with their ``.gateway``."""
    for snap in snaps:
        try:
            (folder / snap.device / snap.name).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("snapshots: cannot remove %s/%s: %s", snap.device, snap.name, exc)
    for device in emptied:
        with contextlib.suppress(OSError):  # not empty (a file not ours), or gone: either is fine
            (folder / device / GATEWAY_FILE).unlink(missing_ok=True)
            (folder / device).rmdir()


def scan(folder: Path) -> tuple[list[StoredSnapshot], dict[str, str]]:
    """Every snapshot file under ``folder`` and the gateway each camera's folder names (when it names a valid
    one); unfinished temporary files (a stop mid-write) removed."""
    found: list[StoredSnapshot] = []
    gateways: dict[str, str] = {}
    with os.scandir(folder) as devices:
        for d in devices:
            if not (d.is_dir(follow_symlinks=False) and _DEVICE.fullmatch(d.name)):
                continue
            with os.scandir(d.path) as files:
                for f in files:
                    if f.name.startswith(_TMP_PREFIX):
                        with contextlib.suppress(OSError):
                            Path(f.path).unlink(missing_ok=True)
                        continue
                    if f.name == GATEWAY_FILE:
                        gateway = _read_gateway(Path(f.path))
                        if gateway is not None:
                            gateways[d.name] = gateway
                        continue
                    m = _NAME.fullmatch(f.name)
                    if m is None or not f.is_file(follow_symlinks=False):
                        continue
                    ts, trigger, width, height, named = m.groups()
                    problems = () if named is None else None if named == _UNKNOWN else tuple(named.split("+"))
                    size = f.stat(follow_symlinks=False).st_size
                    found.append(StoredSnapshot(d.name, int(ts), trigger, int(width), int(height), size, problems))
    return found, gateways


def _read_gateway(path: Path) -> str | None:
    """The ``site/gateway`` a ``.gateway`` file names; None when it is no regular small file naming one."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        with path.open("rb") as f:
            text = f.read(256).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return text if _GATEWAY.fullmatch(text) else None
