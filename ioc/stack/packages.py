"""The Debian packages the local stack runs: find their binaries, install them when missing and allowed.

Installing needs root; as any other user a missing package is a :class:`StackError` naming the command to run.
Nothing here starts, stops or configures a system service.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ioc.stack.errors import StackError

log = logging.getLogger(__name__)

#: ``apt-get update`` may take a while on a slow mirror.
APT_UPDATE_TIMEOUT_S = 300.0
#: ``apt-get install`` of mosquitto and influxdb downloads about 15 MB; ffmpeg and VLC with their libraries more.
APT_INSTALL_TIMEOUT_S = 900.0

#: Where Debian puts the binaries; searched too because /usr/sbin is not on an ordinary user's PATH.
_SYSTEM_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin")


@dataclass(frozen=True)
class Package:
    """A Debian package and the binaries the stack needs from it.

    ``lib_files`` are for packages without a binary on PATH (plugins, PostgreSQL's versioned folder): paths
    under a library directory (``/usr/lib/<multiarch>/`` or ``/usr/lib/``), glob patterns allowed, whose
    presence shows the package is installed.
    ``optional``: the stack runs without it (what needs it reports itself "unavailable", ``needed_for`` says
    what); installed when we can, only warned about when we cannot.
    """

    name: str
    binaries: tuple[str, ...]
    lib_files: tuple[str, ...] = ()
    optional: bool = False
    needed_for: str = ""


#: mosquitto 2.0.11 and influxdb 1.6.7 on Debian 12; mosquitto-clients for publishing by hand (docs/protocol.md).
PACKAGES: tuple[Package, ...] = (
    Package("mosquitto", ("mosquitto", "mosquitto_passwd"), ("mosquitto_dynamic_security.so",)),
    Package("mosquitto-clients", ("mosquitto_pub", "mosquitto_sub")),
    Package("influxdb", ("influxd",)),
    # Camera simulation and probing (devices/sim/rtsp.py, devices/drivers/camera/): ffprobe reads the stream
    # that VLC serves over RTSP; vlc-plugin-base carries the mp4 demuxer and the RTP/RTSP stream output.
    Package("ffmpeg", ("ffmpeg", "ffprobe"), optional=True, needed_for="camera streams"),
    Package("vlc-bin", ("cvlc",), optional=True, needed_for="camera streams"),
    Package(
        "vlc-plugin-base",
        (),
        ("vlc/plugins/stream_out/libstream_out_rtp_plugin.so",),
        optional=True,
        needed_for="camera streams",
    ),
    Package("chromium", ("chromium",)),  # the operator page test (tests/integration/hub/test_operator_page.py)
    # The hub's database for several hub instances (ioc/stack/postgres.py); Debian 12 ships 15, under
    # /usr/lib/postgresql/15/bin (not on PATH). Installing it also lets Debian create and start its own
    # "main" cluster; the stack never uses that one.
    Package(
        "postgresql",
        (),
        ("postgresql/*/bin/postgres", "postgresql/*/bin/initdb"),
        optional=True,
        needed_for="the PostgreSQL registry",
    ),
)

_apt_updated = False
_optional_warned = False


def find_binary(name: str) -> Path | None:
    """The absolute path of ``name`` on PATH or in the system directories, or None."""
    found = shutil.which(name)
    if found:
        return Path(found)
    for directory in _SYSTEM_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def binary(name: str) -> Path:
    """The absolute path of a binary the stack needs; :class:`StackError` naming its package when missing."""
    path = find_binary(name)
    if path is None:
        package = next((p.name for p in PACKAGES if name in p.binaries), name)
        raise StackError(
            f"{name} not found (Debian package {package}); run `ioc stack ensure` or: {install_command([package])}"
        )
    return path


#: Library directories searched for :attr:`Package.lib_files` (Debian multiarch first).
_LIB_GLOBS = ("/usr/lib/*-linux-gnu", "/usr/lib")


def _version_key(path: Path) -> tuple[tuple[int, ...] | tuple[()], str]:
    """Sort key: the numbers of the path's parts (``/usr/lib/postgresql/15/bin`` -> 15), then the path."""
    numbers = tuple(int(n) for part in path.parts for n in re.findall(r"\d+", part))
    return numbers, str(path)


def find_lib_file(relative: str) -> Path | None:
    """The absolute path of ``relative`` under a library directory, or None.

    ``relative`` may be a glob pattern (``postgresql/*/bin/postgres``): the newest match then, version folders
    compared as numbers (15 after 9.6).
    """
    for pattern in _LIB_GLOBS:
        for directory in sorted(Path("/").glob(pattern.lstrip("/"))):
            if any(c in relative for c in "*?["):
                matches = sorted((p for p in directory.glob(relative) if p.is_file()), key=_version_key)
                if matches:
                    return matches[-1]
                continue
            candidate = directory / relative
            if candidate.is_file():
                return candidate
    return None


def _installed(package: Package) -> bool:
    return all(find_binary(b) is not None for b in package.binaries) and all(
        find_lib_file(f) is not None for f in package.lib_files
    )


def found_binaries() -> dict[str, Path | None]:
    """Every binary the stack needs -> its path, or None when missing."""
    return {b: find_binary(b) for p in PACKAGES for b in p.binaries}


def missing_packages() -> list[str]:
    """Names of the packages with at least one binary missing, in :data:`PACKAGES` order."""
    return [p.name for p in PACKAGES if not _installed(p)]


def install_command(packages: list[str]) -> str:
    """The command a person should run to install ``packages``."""
    return (
        "sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        + " ".join(packages)
    )


def _apt(args: list[str], timeout: float) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt_get = find_binary("apt-get")
    if apt_get is None:
        raise StackError(f"apt-get not found; install by hand: {' '.join(args)}")
    argv = [str(apt_get), *args]
    log.info("running %s", " ".join(argv))
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, package names from PACKAGES
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from exc
    except OSError as exc:
        raise StackError(f"could not run {' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        out = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()[-20:]
        raise StackError(f"{' '.join(argv)} failed with status {done.returncode}:\n" + "\n".join(out))


def ensure_packages() -> None:
    """Make sure every package of :data:`PACKAGES` is installed (the broker, InfluxDB, ffmpeg, VLC, PostgreSQL...).

    When something is missing and we run as root: ``apt-get update`` (once per process) and
    ``apt-get install -y --no-install-recommends`` the missing packages, non-interactively. Otherwise raise
    :class:`StackError` naming the packages and the command to run, unless only optional packages are
    missing: then warn (once per process) and go on.
    """
    global _apt_updated, _optional_warned  # noqa: PLW0603 - "once per process" is the point
    missing = missing_packages()
    if not missing:
        log.debug("stack packages present: %s", ", ".join(p.name for p in PACKAGES))
        return
    if os.geteuid() != 0:
        optional = {p.name for p in PACKAGES if p.optional}
        if set(missing) <= optional:
            if not _optional_warned:
                _optional_warned = True
                unavailable = sorted({p.needed_for for p in PACKAGES if p.name in missing and p.needed_for})
                log.warning(
                    "optional Debian package(s) missing: %s (unavailable: %s); to install: %s",
                    ", ".join(missing),
                    ", ".join(unavailable) or "nothing the stack needs",
                    install_command(missing),
                )
            return
        raise StackError(
            f"missing Debian package(s): {', '.join(missing)}; installing needs root, run: {install_command(missing)}"
        )
    log.info("installing missing Debian package(s): %s", ", ".join(missing))
    if not _apt_updated:
        _apt(["update"], APT_UPDATE_TIMEOUT_S)
        _apt_updated = True
    _apt(["install", "-y", "--no-install-recommends", *missing], APT_INSTALL_TIMEOUT_S)
    still = missing_packages()
    if still:
        raise StackError(
            f"apt-get install finished but binaries of {', '.join(still)} are still missing: {found_binaries()}"
        )
