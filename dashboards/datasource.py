"""The one InfluxDB datasource every board points at, for InfluxDB 1.x, 2.x and 3.x, always queried in InfluxQL.

Why InfluxQL everywhere: InfluxDB 1.x speaks only InfluxQL; 2.x answers InfluxQL on its v1-compatible
``/query`` once a DBRP mapping ties a database name to the bucket (``influx v1 dbrp create``), and 3.x serves
InfluxQL natively (databases are buckets). So one set of queries and template variables works on all three;
Flux would need a second set and is in maintenance mode in 3.x. The hub writes through the same v1-compatible
API by default (docs/storage.md).

- ``v1``: ``jsonData.dbName`` + ``user`` / ``secureJsonData.password`` (basic auth).
- ``v2`` / ``v3``: ``jsonData.dbName`` (the DBRP database of the bucket, or the 3.x database) and the token in
  an ``Authorization: Token …`` header (``httpHeaderName1`` / ``secureJsonData.httpHeaderValue1``), as Grafana's
  provisioning docs show for "InfluxDB 2.x for InfluxQL".

Secrets never go into generated files: the provisioning YAML refers to environment variables that Grafana
expands when it reads the file (``$__env{IOC_GRAFANA_INFLUX_PASSWORD}``); ``push`` sends them from its own
environment. Reference: https://grafana.com/docs/grafana/latest/datasources/influxdb/ (provisioning examples).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

DATASOURCE_UID: Final = "ioc-influxdb"
DATASOURCE_NAME: Final = "IOC InfluxDB"
#: Environment variables holding the secrets (their names, not secrets).
PASSWORD_ENV: Final = "IOC_GRAFANA_INFLUX_PASSWORD"  # noqa: S105
TOKEN_ENV: Final = "IOC_GRAFANA_INFLUX_TOKEN"  # noqa: S105

Flavour = Literal["v1", "v2", "v3"]


@dataclass(frozen=True)
class InfluxTarget:
    """Where Grafana reads from. ``database`` is the 1.x database, the 2.x DBRP database or the 3.x database."""

    url: str = "http://127.0.0.1:8086"
    database: str = "ioc"
    flavour: Flavour = "v1"
    username: str = ""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"InfluxDB url must start with http:// or https:// (got {self.url!r})")
        if not self.database:
            raise ValueError("InfluxDB database must not be empty")


def _json_data(target: InfluxTarget) -> dict[str, Any]:
    data: dict[str, Any] = {"dbName": target.database, "httpMode": "GET", "version": "InfluxQL"}
    if target.flavour != "v1":
        data["httpHeaderName1"] = "Authorization"
    return data


def provisioning(target: InfluxTarget) -> dict[str, Any]:
    """The ``provisioning/datasources/*.yaml`` document (Grafana expands ``$__env{...}`` when it reads it)."""
    source: dict[str, Any] = {
        "name": DATASOURCE_NAME,
        "uid": DATASOURCE_UID,
        "type": "influxdb",
        "access": "proxy",
        "url": target.url,
        "isDefault": True,
        "editable": False,
        "jsonData": _json_data(target),
    }
    if target.flavour == "v1":
        if target.username:
            source["user"] = target.username
            source["secureJsonData"] = {"password": f"$__env{{{PASSWORD_ENV}}}"}
    else:
        source["secureJsonData"] = {"httpHeaderValue1": f"Token $__env{{{TOKEN_ENV}}}"}
    return {"apiVersion": 1, "datasources": [source]}


def api_payload(target: InfluxTarget, secret: str = "") -> dict[str, Any]:
    """The body of ``POST /api/datasources`` / ``PUT /api/datasources/uid/{uid}``; ``secret`` is the password
    (v1) or the token (v2/v3), sent only when given."""
    payload: dict[str, Any] = {
        "name": DATASOURCE_NAME,
        "uid": DATASOURCE_UID,
        "type": "influxdb",
        "access": "proxy",
        "url": target.url,
        "isDefault": True,
        "jsonData": _json_data(target),
    }
    if target.flavour == "v1":
        payload["user"] = target.username
        if secret:
            payload["secureJsonData"] = {"password": secret}
    elif secret:
        payload["secureJsonData"] = {"httpHeaderValue1": f"Token {secret}"}
    return payload
