"""HTTPS for the hub's API with a self-signed certificate made here with the ``openssl`` CLI: the hub serves TLS
only (a plain HTTP request gets no answer), answers carry HSTS, and the event stream works over it; the
certificate and key are both or neither (the error names the missing field), and a key that does not match its
certificate stops the start naming both fields."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from ops_support import auth, ops_settings, running_hub, tokens

from hub.api import ApiServer
from hub.config import HttpSettings, load_settings
from hub.errors import ConfigError, StartupError
from ioc.stack import StackEndpoints

pytestmark = pytest.mark.integration


def self_signed(folder: Path, name: str = "hub") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost (subjectAltName, as clients check: RFC 6125) and its key."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl CLI is needed (Debian package openssl)"
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ioc-hub-test",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.mark.timeout(90)
async def test_the_api_over_https(stack: StackEndpoints, influx_db: str, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    settings = ops_settings(stack, influx_db, tmp_path)
    settings = settings.model_copy(update={"http": HttpSettings(port=0, tls_cert_file=cert, tls_key_file=key)})
    async with running_hub(settings) as hub:
        tok = await tokens(hub)
        assert hub.api_url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(base_url=hub.api_url, verify=trust, timeout=10) as http:
            r = await http.get("/api/v1/sites", headers=auth(tok["viewer"]))
            assert r.status_code == 200
            assert r.headers["strict-transport-security"] == "max-age=31536000"
            assert r.headers["x-frame-options"] == "DENY"
            page = await http.get("/")
            assert page.status_code == 200
            assert page.headers["strict-transport-security"] == "max-age=31536000"
            async with http.stream("GET", "/api/v1/events", headers=auth(tok["viewer"])) as events:
                assert events.status_code == 200
                first = await anext(events.aiter_text())
                assert first.startswith(": connected")
        # Without trusting the certificate, the client refuses it; plain HTTP on the port gets no HTTP answer.
        async with httpx.AsyncClient(base_url=hub.api_url, timeout=10) as untrusting:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.get("/healthz")
        plain = hub.api_url.replace("https://", "http://")
        async with httpx.AsyncClient(base_url=plain, timeout=10) as http:
            with pytest.raises(httpx.HTTPError):
                await http.get("/healthz")


@pytest.mark.parametrize(("given", "missing"), [("tls_cert_file", "tls_key_file"), ("tls_key_file", "tls_cert_file")])
def test_certificate_and_key_are_both_or_neither(tmp_path: Path, given: str, missing: str) -> None:
    config = tmp_path / "hub.yaml"
    (tmp_path / "file.pem").write_text("x", encoding="utf-8")
    config.write_text(f"http:\n  {given}: {tmp_path / 'file.pem'}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert f"{config}: http: http.{missing} is not set but http.{given} is" in str(caught.value)


async def test_a_key_that_does_not_match_its_certificate_stops_the_start(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, "one")
    _, other_key = self_signed(tmp_path, "two")
    settings = HttpSettings(port=0, tls_cert_file=cert, tls_key_file=other_key)
    with pytest.raises(StartupError) as caught:
        async with ApiServer(FastAPI(), settings):
            pass
    message = str(caught.value)
    assert message.startswith(f"http.tls_cert_file {cert} and http.tls_key_file {other_key}: not a PEM certificate")
    assert "KEY_VALUES_MISMATCH" in message
