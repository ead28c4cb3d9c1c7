"""``ioc dashboards push``: the same boards through Grafana's HTTP API, with ``grafana-client`` and a token.

What it calls (Grafana HTTP API, https://grafana.com/docs/grafana/latest/developers/http_api/), in this order:

1. folders: ``GET /api/folders/{uid}``; ``POST /api/folders`` ``{uid, title}`` when missing, ``PUT
   /api/folders/{uid}`` ``{title, overwrite}`` when the title differs;
2. the datasource: ``GET /api/datasources/uid/{uid}``; ``POST /api/datasources`` when missing, ``PUT
   /api/datasources/uid/{uid}`` when a setting differs or a secret is not set yet. A secret Grafana already has is
   not sent again (Grafana never returns it, so there is nothing to compare; ``--update-secret`` forces it);
3. each board: ``GET /api/dashboards/uid/{uid}``; ``POST /api/dashboards/db`` ``{dashboard, folderUid,
   overwrite: true, message}`` when missing, in another folder, or when any value we generate differs from the
   stored one (Grafana adds its own keys such as ``id`` and ``version``; those are not compared);
4. with ``prune``: ``GET /api/search?tag=ioc-generated&type=dash-db`` and ``DELETE /api/dashboards/uid/{uid}``
   for each board carrying our tag that we no longer generate. Boards without the tag are never touched.

:func:`push_on_change` repeats this whenever the boards generated from the registry change (``push --every``),
so a site added to the hub gets its board without anyone running a command.

So a second run with nothing changed sends only GETs. The token (a service account token) goes in
``Authorization: Bearer``. Errors of the client library are turned into :class:`PushError` naming the step.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, TypeVar

import niquests
from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from dashboards.build import FOLDERS, Rendered, folder_title, folder_uid
from dashboards.datasource import DATASOURCE_UID, InfluxTarget, api_payload
from dashboards.i18n import Locale
from dashboards.model import OWNER_TAG
from dashboards.registry import RegistryError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 10.0
#: Keys Grafana sets on a stored board itself; never compared. ``schemaVersion``: a newer Grafana may store the
#: board migrated to its own schema version, which is not a change of ours.
_GRAFANA_OWNED: Final = frozenset({"id", "version", "schemaVersion"})
#: Datasource settings compared with what Grafana holds (secrets cannot be read back).
_DS_KEYS: Final = ("name", "type", "access", "url", "isDefault", "jsonData", "user")

T = TypeVar("T")


class PushError(RuntimeError):
    """Grafana refused or could not be reached; the message says at which step."""


@dataclass
class PushReport:
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.created)} created, {len(self.changed)} changed, {len(self.unchanged)} unchanged, "
            f"{len(self.removed)} removed"
        )


#: grafana-client ships without type annotations on its methods, so the client is typed as Any at this boundary.
Grafana = Any


def connect(url: str, token: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Grafana:
    """A client for the Grafana at ``url`` with a service account ``token`` (``Authorization: Bearer``)."""
    if not url.startswith(("http://", "https://")):
        raise PushError(f"--url must be an http:// or https:// URL (got {url!r})")
    if not token:
        raise PushError("a Grafana service account token is required (--token or IOC_GRAFANA_TOKEN)")
    return GrafanaApi.from_url(url, credential=token, timeout=timeout_s)


def _call(step: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except GrafanaException as exc:
        raise PushError(f"{step}: Grafana answered {exc.status_code}: {exc.message}") from exc
    except (niquests.exceptions.RequestException, OSError) as exc:
        raise PushError(f"{step}: cannot reach Grafana: {exc}") from exc


def _get_or_none(step: str, fn: Callable[[], Any]) -> Any:
    """GET something; None when Grafana answers 404."""
    try:
        return fn()
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise PushError(f"{step}: Grafana answered {exc.status_code}: {exc.message}") from exc
    except GrafanaException as exc:
        raise PushError(f"{step}: Grafana answered {exc.status_code}: {exc.message}") from exc
    except (niquests.exceptions.RequestException, OSError) as exc:
        raise PushError(f"{step}: cannot reach Grafana: {exc}") from exc


def contains(stored: Any, ours: Any) -> bool:
    """True if every value of ``ours`` is in ``stored`` (dicts compared key by key, lists item by item)."""
    if isinstance(ours, Mapping):
        return isinstance(stored, Mapping) and all(
            k in _GRAFANA_OWNED or (k in stored and contains(stored[k], v)) for k, v in ours.items()
        )
    if isinstance(ours, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(ours)
            and all(contains(s, o) for s, o in zip(stored, ours, strict=True))
        )
    return bool(stored == ours)


def push_folders(api: Grafana, locale: Locale, report: PushReport) -> None:
    for folder in FOLDERS:
        uid, title = folder_uid(folder), folder_title(folder, locale)
        name = f"folder {uid}"
        current = _get_or_none(f"read {name}", partial(api.folder.get_folder, uid))
        if current is None:
            _call(f"create {name}", partial(api.folder.create_folder, title, uid=uid))
            report.created.append(name)
        elif current.get("title") != title:
            _call(f"rename {name}", partial(api.folder.update_folder, uid, title, overwrite=True))
            report.changed.append(name)
        else:
            report.unchanged.append(name)


def push_datasource(
    api: Grafana, target: InfluxTarget, secret: str, report: PushReport, *, update_secret: bool
) -> None:
    name = f"datasource {DATASOURCE_UID}"
    current = _get_or_none(f"read {name}", lambda: api.datasource.get_datasource_by_uid(DATASOURCE_UID))
    if current is None:
        _call(f"create {name}", lambda: api.datasource.create_datasource(api_payload(target, secret)))
        report.created.append(name)
        return
    wanted = api_payload(target, "")
    differs = [k for k in _DS_KEYS if k in wanted and not contains(current.get(k), wanted[k])]
    secret_key = "password" if target.flavour == "v1" else "httpHeaderValue1"
    secret_missing = bool(secret) and not (current.get("secureJsonFields") or {}).get(secret_key)
    if differs or secret_missing or (update_secret and secret):
        send_secret = secret if (secret_missing or update_secret) else ""
        _call(
            f"update {name}",
            lambda: api.datasource.update_datasource_by_uid(DATASOURCE_UID, api_payload(target, send_secret)),
        )
        report.changed.append(name)
    else:
        report.unchanged.append(name)


def push_boards(api: Grafana, rendered: Rendered, report: PushReport, *, prune: bool) -> None:
    ours = set()
    for folder, uid, dashboard in rendered.boards:
        ours.add(uid)
        name = f"dashboard {uid}"
        fuid = folder_uid(folder)
        current = _get_or_none(f"read {name}", partial(api.dashboard.get_dashboard, uid))
        if (
            current is not None
            and contains(current.get("dashboard"), dashboard)
            and ((current.get("meta") or {}).get("folderUid") == fuid)
        ):
            report.unchanged.append(name)
            continue
        body = {
            "dashboard": {**dashboard, "id": None},
            "folderUid": fuid,
            "overwrite": True,
            "message": "ioc dashboards push",
        }
        _call(f"save {name}", partial(api.dashboard.update_dashboard, body))
        (report.created if current is None else report.changed).append(name)
    if not prune:
        return
    found = _call("search our boards", lambda: api.search.search_dashboards(tag=OWNER_TAG, type_="dash-db"))
    for hit in found or []:
        uid = hit.get("uid")
        if uid and uid not in ours and OWNER_TAG in (hit.get("tags") or []):
            _call(f"delete dashboard {uid}", partial(api.dashboard.delete_dashboard, uid))
            report.removed.append(f"dashboard {uid}")


def push(
    api: Grafana,
    rendered: Rendered,
    target: InfluxTarget,
    *,
    locale: Locale = "en",
    secret: str = "",
    prune: bool = False,
    update_secret: bool = False,
) -> PushReport:
    """Folders, then the datasource, then the boards (and prune); returns what was created, changed, left, removed."""
    report = PushReport()
    push_folders(api, locale, report)
    push_datasource(api, target, secret, report, update_secret=update_secret)
    push_boards(api, rendered, report, prune=prune)
    log.info("grafana push: %s", report.summary())
    return report


def push_on_change(
    api: Grafana,
    load: Callable[[], Rendered],
    target: InfluxTarget,
    stop: threading.Event,
    *,
    every_s: float,
    locale: Locale = "en",
    secret: str = "",
    prune: bool = False,
    on_report: Callable[[PushReport], None] | None = None,
) -> int:
    """Re-provision whenever the boards change: every ``every_s``, render from a fresh registry snapshot
    (``load``) and push only if the result differs from the last push. Returns how many pushes were made.

    So a site added to the hub's registry gets its board within ``every_s``. A failed round (hub or Grafana
    unreachable) is logged when it starts failing and retried next round; nothing stops the loop but ``stop``.
    """
    last: Rendered | None = None
    pushes = 0
    failing = False
    while not stop.is_set():
        try:
            rendered = load()
            if rendered != last:
                report = push(api, rendered, target, locale=locale, secret=secret, prune=prune)
                last, pushes = rendered, pushes + 1
                if on_report is not None:
                    on_report(report)
            if failing:
                log.info("dashboards: re-provisioning works again")
            failing = False
        except (PushError, RegistryError) as exc:
            if not failing:
                log.warning("dashboards: re-provisioning failed, retrying every %g s: %s", every_s, exc)
            failing = True
        stop.wait(every_s)
    return pushes
