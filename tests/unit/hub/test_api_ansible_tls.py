"""The hub role turns HTTPS on: with ``hub_tls_cert_src`` and ``hub_tls_key_src`` (a certificate made here with the
``openssl`` CLI) it installs both (the key readable by the hub's group only) and sets ``http.tls_cert_file`` and
``http.tls_key_file``, which hub/config.py accepts and the API server loads; one without the other stops the
run naming both variables. The role's settings tasks run for real with ansible-playbook on a temporary root."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi import FastAPI
from hub_settings_support import hub_env_only, read_env_file, run_settings_tasks

from hub.api import ApiServer
from hub.config import load_settings

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not Path("/usr/bin/python3").exists(), reason="the target interpreter /usr/bin/python3 is missing"
    ),
]


def self_signed(folder: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl CLI is needed (Debian package openssl)"
    cert, key = folder / "api-src.crt", folder / "api-src.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=hub.ioc.example.org",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def test_the_role_turns_https_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)
    done = run_settings_tasks(tmp_path, "-e", f"hub_tls_cert_src={cert}", "-e", f"hub_tls_key_src={key}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    etc = tmp_path / "root/etc/ioc-hub"
    assert (etc / "api.crt").read_bytes() == cert.read_bytes()
    assert (etc / "api.key").read_bytes() == key.read_bytes()
    assert (etc / "api.key").stat().st_mode & 0o777 == 0o640
    assert (etc / "api.crt").stat().st_mode & 0o777 == 0o644
    env = read_env_file(etc / "hub.env")
    assert env["IOC_HUB_HTTP__TLS_CERT_FILE"] == str(etc / "api.crt")
    assert env["IOC_HUB_HTTP__TLS_KEY_FILE"] == str(etc / "api.key")
    hub_env_only(monkeypatch, env)
    settings = load_settings(None, environ=env)
    assert settings.http.tls_cert_file == etc / "api.crt"
    assert settings.http.tls_key_file == etc / "api.key"
    # The API server takes the installed pair.
    http = settings.http.model_copy(update={"host": "127.0.0.1", "port": 0})
    async with ApiServer(FastAPI(), http) as server:
        assert server.url.startswith("https://127.0.0.1:")


def test_plain_http_without_the_variables(tmp_path: Path) -> None:
    done = run_settings_tasks(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    env = read_env_file(tmp_path / "root/etc/ioc-hub/hub.env")
    assert not [k for k in env if k.startswith("IOC_HUB_HTTP__TLS_")]
    assert not (tmp_path / "root/etc/ioc-hub/api.key").exists()


@pytest.mark.parametrize("given", ["hub_tls_cert_src", "hub_tls_key_src"])
def test_a_certificate_without_its_key_stops_the_run(tmp_path: Path, given: str) -> None:
    cert, key = self_signed(tmp_path)
    done = run_settings_tasks(tmp_path, "-e", f"{given}={cert if given == 'hub_tls_cert_src' else key}")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "HTTPS needs both the certificate and its key" in output
    assert f"given: {given} only" in output
    assert not (tmp_path / "root/etc/ioc-hub/hub.env").exists()
