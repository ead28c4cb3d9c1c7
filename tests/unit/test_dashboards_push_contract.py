"""Contract test of ``ioc dashboards push`` against a local HTTP server implementing the Grafana HTTP API endpoints
it calls (a Grafana server cannot be installed here). The fake follows the documented contract
(https://grafana.com/docs/grafana/latest/developers/http_api/ folder, data_source, dashboard, search): status codes,
``{"message": ...}`` errors, ``GET /api/dashboards/uid/{uid}`` answering ``{dashboard, meta: {folderUid}}`` with
Grafana's own ``id`` and ``version`` added, ``secureJsonFields`` instead of secrets.

Checked: paths, methods, the bearer token, payloads, and that a second run changes nothing (only GETs)."""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from dashboards.build import render_all
from dashboards.cli import add_arguments, main
from dashboards.datasource import DATASOURCE_UID, InfluxTarget
from dashboards.model import OWNER_TAG
from dashboards.push import PushError, connect, push
from dashboards.registry import Snapshot, parse

TOKEN = "glsa_test_token_123"


@dataclass
class FakeGrafana:
    """State and request log of the fake Grafana."""

    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, str, Any]] = field(default_factory=list)  # method, path, auth, body
    fail: dict[str, int] = field(default_factory=dict)  # "METHOD path" -> status
    next_id: int = 1

    def handle(self, method: str, url: str, auth: str, body: Any) -> tuple[int, Any]:
        parsed = urlparse(url)
        path, query = parsed.path, parse_qs(parsed.query)
        self.requests.append((method, path, auth, body))
        if auth != f"Bearer {TOKEN}":
            return 401, {"message": "Unauthorized"}
        if f"{method} {path}" in self.fail:
            return self.fail[f"{method} {path}"], {"message": "injected failure"}
        parts = path.strip("/").split("/")
        match method, parts:
            case "GET", ["api", "folders", uid]:
                return (200, self.folders[uid]) if uid in self.folders else (404, {"message": "folder not found"})
            case "POST", ["api", "folders"]:
                if body["uid"] in self.folders:
                    return 409, {"message": "a folder with the same uid already exists"}
                self.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"], "id": self._id(), "version": 1}
                return 200, self.folders[body["uid"]]
            case "PUT", ["api", "folders", uid]:
                if uid not in self.folders:
                    return 404, {"message": "folder not found"}
                self.folders[uid]["title"] = body["title"]
                return 200, self.folders[uid]
            case "GET", ["api", "datasources", "uid", uid]:
                if uid not in self.datasources:
                    return 404, {"message": "Data source not found"}
                return 200, self._public_ds(self.datasources[uid])
            case "POST", ["api", "datasources"]:
                if any(d["name"] == body["name"] for d in self.datasources.values()):
                    return 409, {"message": "data source with the same name already exists"}
                self.datasources[body["uid"]] = {**body, "id": self._id()}
                return 200, {"message": "Datasource added", "datasource": self._public_ds(body)}
            case "PUT", ["api", "datasources", "uid", uid]:
                if uid not in self.datasources:
                    return 404, {"message": "Data source not found"}
                kept = self.datasources[uid].get("secureJsonData", {})
                self.datasources[uid] = {**body, "id": self.datasources[uid]["id"]}
                self.datasources[uid]["secureJsonData"] = {**kept, **body.get("secureJsonData", {})}
                return 200, {"message": "Datasource updated", "datasource": self._public_ds(body)}
            case "GET", ["api", "dashboards", "uid", uid]:
                if uid not in self.dashboards:
                    return 404, {"message": "Dashboard not found"}
                stored = self.dashboards[uid]
                meta = {"folderUid": stored["folderUid"]}
                return 200, {"dashboard": copy.deepcopy(stored["dashboard"]), "meta": meta}
            case "POST", ["api", "dashboards", "db"]:
                if body["folderUid"] not in self.folders:
                    return 400, {"message": "folder not found"}
                dash = copy.deepcopy(body["dashboard"])
                old = self.dashboards.get(dash["uid"])
                if old is not None and not body.get("overwrite"):
                    return 412, {"message": "The dashboard has been changed by someone else"}
                dash["id"] = old["dashboard"]["id"] if old else self._id()
                dash["version"] = old["dashboard"]["version"] + 1 if old else 1
                self.dashboards[dash["uid"]] = {"dashboard": dash, "folderUid": body["folderUid"]}
                return 200, {"id": dash["id"], "uid": dash["uid"], "status": "success", "version": dash["version"]}
            case "DELETE", ["api", "dashboards", "uid", uid]:
                if uid not in self.dashboards:
                    return 404, {"message": "Dashboard not found"}
                title = self.dashboards.pop(uid)["dashboard"]["title"]
                return 200, {"title": title, "message": f"Dashboard {title} deleted", "id": 1}
            case "GET", ["api", "search"]:
                tags = query.get("tag", [])
                hits = [
                    {"uid": u, "title": d["dashboard"]["title"], "tags": d["dashboard"].get("tags"), "type": "dash-db"}
                    for u, d in self.dashboards.items()
                    if all(t in d["dashboard"].get("tags", []) for t in tags)
                ]
                return 200, hits
        return 404, {"message": "Not found"}

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    @staticmethod
    def _public_ds(ds: dict[str, Any]) -> dict[str, Any]:
        public = {k: v for k, v in ds.items() if k != "secureJsonData"}
        public["secureJsonFields"] = dict.fromkeys(ds.get("secureJsonData", {}), True)
        return public

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _, _ in self.requests if m != "GET"]


@contextlib.contextmanager
def serve_fake_grafana() -> Iterator[tuple[FakeGrafana, str]]:
    """The fake Grafana on a free loopback port: (its state, its base URL)."""
    state = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            status, answer = state.handle(self.command, self.path, self.headers.get("Authorization", ""), body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def grafana() -> Iterator[tuple[FakeGrafana, str]]:
    with serve_fake_grafana() as served:
        yield served


def snapshot(sites: tuple[str, ...] = ("ben-thanh", "tan-dinh")) -> Any:
    return parse(
        [{"id": s, "ward": "quan-1", "devices": [{"id": f"aq-{s}", "profile": "pm-sensor-rs485"}]} for s in sites],
        [],
        "test",
    )


TARGET = InfluxTarget("http://influx:8086", "ioc", "v1", "grafana")


def test_contract_first_push_creates_everything_with_the_documented_calls(grafana: tuple[FakeGrafana, str]) -> None:
    state, url = grafana
    rendered = render_all(snapshot(), "vi")
    report = push(connect(url, TOKEN), rendered, TARGET, locale="vi", secret="influx-pw")
    uids = [uid for _, uid, _ in rendered.boards]
    assert sorted(report.created) == sorted(
        ["folder ioc-operations", "folder ioc-leadership", f"datasource {DATASOURCE_UID}"]
        + [f"dashboard {u}" for u in uids]
    )
    assert report.changed == report.removed == []
    # every request carries the service account token
    assert {auth for _, _, auth, _ in state.requests} == {f"Bearer {TOKEN}"}
    # folders, then the datasource, then the boards
    writes = state.writes()
    assert writes[:3] == [("POST", "/api/folders"), ("POST", "/api/folders"), ("POST", "/api/datasources")]
    assert writes[3:] == [("POST", "/api/dashboards/db")] * len(uids)
    folder_posts = [b for m, p, _, b in state.requests if (m, p) == ("POST", "/api/folders")]
    assert folder_posts == [
        {"title": "Vận hành", "uid": "ioc-operations"},
        {"title": "Lãnh đạo", "uid": "ioc-leadership"},
    ]
    ds = next(b for m, p, _, b in state.requests if (m, p) == ("POST", "/api/datasources"))
    assert ds["uid"] == DATASOURCE_UID
    assert ds["type"] == "influxdb"
    assert ds["url"] == "http://influx:8086"
    assert ds["jsonData"]["dbName"] == "ioc"
    assert ds["secureJsonData"] == {"password": "influx-pw"}
    saves = [b for m, p, _, b in state.requests if (m, p) == ("POST", "/api/dashboards/db")]
    for body in saves:
        assert body["overwrite"] is True
        assert body["folderUid"] in ("ioc-operations", "ioc-leadership")
        assert body["dashboard"]["id"] is None
        assert OWNER_TAG in body["dashboard"]["tags"]
    city = next(b for b in saves if b["dashboard"]["uid"] == "ioc-lead-city")
    assert city["folderUid"] == "ioc-leadership"
    assert city["dashboard"]["title"] == "Toàn cảnh thành phố"


def test_contract_second_push_changes_nothing(grafana: tuple[FakeGrafana, str]) -> None:
    state, url = grafana
    rendered = render_all(snapshot(), "en")
    push(connect(url, TOKEN), rendered, TARGET, secret="influx-pw")
    before = copy.deepcopy((state.folders, state.datasources, state.dashboards))
    state.requests.clear()
    report = push(connect(url, TOKEN), rendered, TARGET, secret="influx-pw")
    assert report.created == report.changed == report.removed == []
    assert len(report.unchanged) == 2 + 1 + len(rendered.boards)
    assert state.writes() == [], "a second run sends only GETs"
    assert (state.folders, state.datasources, state.dashboards) == before


def test_contract_changes_are_detected_and_prune_removes_only_our_boards(grafana: tuple[FakeGrafana, str]) -> None:
    state, url = grafana
    api = connect(url, TOKEN)
    push(api, render_all(snapshot(), "en"), TARGET)
    # someone else's board, not tagged: never touched
    hand_made = {"uid": "hand-made", "title": "x", "tags": [], "id": 99, "version": 3}
    state.dashboards["hand-made"] = {"dashboard": hand_made, "folderUid": "ioc-operations"}
    # someone edited one of ours in the UI
    state.dashboards["ioc-ops-health"]["dashboard"]["title"] = "edited by hand"
    state.requests.clear()
    report = push(api, render_all(snapshot(("ben-thanh",)), "vi"), TARGET, locale="vi", prune=True)
    assert "folder ioc-operations" in report.changed
    assert "dashboard ioc-ops-health" in report.changed
    assert report.removed == ["dashboard ioc-site-tan-dinh"]
    assert ("DELETE", "/api/dashboards/uid/ioc-site-tan-dinh") in state.writes()
    assert ("PUT", "/api/folders/ioc-operations") in state.writes()
    assert "hand-made" in state.dashboards
    assert state.dashboards["ioc-ops-health"]["dashboard"]["title"] == "Tình trạng thiết bị toàn thành phố"
    search = next((p, b) for m, p, _, b in state.requests if (m, p) == ("GET", "/api/search"))
    assert search[0] == "/api/search"


def test_contract_datasource_secret_is_sent_once_and_settings_updated(grafana: tuple[FakeGrafana, str]) -> None:
    state, url = grafana
    api = connect(url, TOKEN)
    push(api, render_all(snapshot(), "en"), TARGET)  # no secret known yet
    assert "secureJsonData" not in state.datasources[DATASOURCE_UID]
    state.requests.clear()
    push(api, render_all(snapshot(), "en"), TARGET, secret="pw")  # Grafana has none: sent
    put = [b for m, p, _, b in state.requests if (m, p) == ("PUT", f"/api/datasources/uid/{DATASOURCE_UID}")]
    assert put == [{**put[0], "secureJsonData": {"password": "pw"}}]
    state.requests.clear()
    moved = InfluxTarget("http://influx-2:8086", "ioc", "v1", "grafana")
    report = push(api, render_all(snapshot(), "en"), moved, secret="pw")
    assert report.changed == [f"datasource {DATASOURCE_UID}"]
    put = [b for m, p, _, b in state.requests if (m, p) == ("PUT", f"/api/datasources/uid/{DATASOURCE_UID}")]
    assert put[0]["url"] == "http://influx-2:8086"
    assert "secureJsonData" not in put[0], "a secret Grafana has is not sent again"


def test_contract_errors_name_the_step(grafana: tuple[FakeGrafana, str]) -> None:
    state, url = grafana
    with pytest.raises(PushError, match="read folder ioc-operations: Grafana answered 401"):
        push(connect(url, "wrong-token"), render_all(snapshot(), "en"), TARGET)
    state.fail["POST /api/dashboards/db"] = 500
    with pytest.raises(PushError, match="save dashboard ioc-ops-health: Grafana answered 500"):
        push(connect(url, TOKEN), render_all(snapshot(), "en"), TARGET)
    with pytest.raises(PushError, match="cannot reach Grafana"):
        push(connect("http://127.0.0.1:9", TOKEN, timeout_s=2), render_all(snapshot(), "en"), TARGET)
    with pytest.raises(PushError, match="token is required"):
        connect(url, "")
    # a hand-made datasource already holds our name under another uid: Grafana refuses, the step is named
    state.fail.clear()
    state.datasources.clear()
    state.datasources["other"] = {"name": "IOC InfluxDB", "uid": "other", "type": "influxdb", "id": 77}
    with pytest.raises(PushError, match=f"create datasource {DATASOURCE_UID}: Grafana answered 409"):
        push(connect(url, TOKEN), render_all(snapshot(), "en"), TARGET)


def test_contract_cli_push_prints_the_report(
    grafana: tuple[FakeGrafana, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = grafana
    monkeypatch.setenv("IOC_GRAFANA_INFLUX_PASSWORD", "from-env")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["push", "--url", url, "--token", TOKEN, "--locale", "vi", "--influx-user", "g"])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "created    dashboard ioc-lead-city" in out
    assert state.datasources[DATASOURCE_UID]["secureJsonData"] == {"password": "from-env"}
    assert main(args) == 0
    # 2 folders, the datasource and the boards (no registry snapshot: no per-site boards)
    boards = len(render_all(Snapshot(), "vi").boards)
    assert capsys.readouterr().out.strip().endswith(f"0 created, 0 changed, {3 + boards} unchanged, 0 removed")
    bad = parser.parse_args(["push", "--url", url, "--token", "nope"])
    assert main(bad) == 1
    assert "401" in capsys.readouterr().err
    # --every needs a registry that can change
    assert main(parser.parse_args(["push", "--url", url, "--token", TOKEN, "--every", "5"])) == 2
    assert "--registry" in capsys.readouterr().err
