"""The camera tools (ffmpeg, VLC) are optional Debian packages of the stack: missing without root is a warning,
not a stop; the stack's own packages still stop it. Non-root is simulated with ``os.geteuid``."""

from __future__ import annotations

import logging
import os

import pytest

from ioc.stack import packages
from ioc.stack.errors import StackError

PRESENT = packages.Package("coreutils", ("ls",))
OPTIONAL_MISSING = packages.Package("ioc-test-optional", ("ioc-no-such-tool",), optional=True)
REQUIRED_MISSING = packages.Package("ioc-test-required", ("ioc-no-such-daemon",))


@pytest.fixture
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(packages, "_optional_warned", False)


def test_camera_packages_are_listed_as_optional() -> None:
    optional = {p.name for p in packages.PACKAGES if p.optional}
    assert {"ffmpeg", "vlc-bin", "vlc-plugin-base"} <= optional
    assert not {"mosquitto", "influxdb"} & optional


@pytest.mark.usefixtures("not_root")
def test_only_optional_packages_missing_is_a_warning_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(packages, "PACKAGES", (PRESENT, OPTIONAL_MISSING))
    packages.ensure_packages()
    packages.ensure_packages()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "optional Debian package(s) missing: ioc-test-optional" in warnings[0]
    assert "apt-get install" in warnings[0]


@pytest.mark.usefixtures("not_root")
def test_a_required_package_missing_still_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packages, "PACKAGES", (PRESENT, OPTIONAL_MISSING, REQUIRED_MISSING))
    with pytest.raises(StackError, match="missing Debian package\\(s\\): ioc-test-optional, ioc-test-required"):
        packages.ensure_packages()


def test_a_plugin_only_package_is_found_by_its_library_file() -> None:
    vlc_plugins = next(p for p in packages.PACKAGES if p.name == "vlc-plugin-base")
    assert vlc_plugins.binaries == ()
    assert vlc_plugins.lib_files == ("vlc/plugins/stream_out/libstream_out_rtp_plugin.so",)
    assert packages.find_lib_file("libc.so.6") is not None  # in /usr/lib/<multiarch>/ on every Debian
    assert packages.find_lib_file("vlc/plugins/no-such-plugin.so") is None
