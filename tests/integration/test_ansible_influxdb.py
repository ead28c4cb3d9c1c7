"""The influxdb role applied for real into a temporary root: the rendered config runs Debian's influxd, and the
role's account tasks, run against it, create the admin, the database and the accounts with their privileges,
change nothing on a second run, and reset a changed password. (Installing the package and the systemd service
cannot be exercised here: docs/deployment.md.)"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ioc.stack.packages import binary
from ioc.stack.process import ChildProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

ANSIBLE_DIR = Path(__file__).resolve().parents[2] / "ansible"
BIN = Path(sys.executable).parent
RECAP = re.compile(
    r"^(?P<host>\S+)\s+: ok=\d+\s+changed=(?P<changed>\d+)\s+unreachable=\d+\s+failed=(?P<failed>\d+)", re.MULTILINE
)
ADMIN = ("admin", "admin-" + secrets.token_urlsafe(10))
HUB_PASSWORD = "hub-" + secrets.token_urlsafe(10) + "'\\x"  # a quote and a backslash must survive InfluxQL quoting
GRAFANA_PASSWORD = "grafana-" + secrets.token_urlsafe(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Influx:
    tmp: Path
    url: str
    inventory: Path
    playbook: Path

    def run(self, **overrides: Any) -> tuple[int, str]:
        """Apply the role (accounts through the API); return (changed count, output)."""
        extra = self.tmp / f"extra-{secrets.token_hex(3)}.yml"
        extra.write_text(yaml.safe_dump({"influxdb_manage_api": True, **overrides}), encoding="utf-8")
        return run_playbook(self, "-e", f"@{extra}")


def run_playbook(influx: Influx, *extra: str) -> tuple[int, str]:
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(influx.inventory), str(influx.playbook), *extra],
        cwd=ANSIBLE_DIR,
        env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
             "ANSIBLE_LOCAL_TEMP": str(influx.tmp / "ansible-tmp")},
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    match = RECAP.search(done.stdout)
    assert match, output[-3000:]
    return int(match["changed"]), output


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influx]:
    tmp = tmp_path_factory.mktemp("influxdb")
    http_port, rpc_port = free_port(), free_port()
    host_vars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "/usr/bin/python3",
        "influxdb_root": str(tmp / "root"),
        "influxdb_install_package": False,
        "influxdb_systemd": False,
        "influxdb_user": "root",
        "influxdb_group": "root",
        "influxdb_http_bind": f"127.0.0.1:{http_port}",
        "influxdb_rpc_bind": f"127.0.0.1:{rpc_port}",
        "influxdb_admin_username": ADMIN[0],
        "influxdb_admin_password": ADMIN[1],
        "influxdb_database": "ioc",
        "influxdb_users": [
            {"name": "hub", "password": HUB_PASSWORD, "privilege": "ALL"},
            {"name": "grafana", "password": GRAFANA_PASSWORD, "privilege": "READ"},
        ],
    }
    inventory = tmp / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"influx-test": host_vars}}}), encoding="utf-8")
    playbook = tmp / "influxdb.yml"
    playbook.write_text(
        yaml.safe_dump([{"name": "InfluxDB", "hosts": "all", "gather_facts": False, "roles": ["influxdb"]}]),
        encoding="utf-8",
    )
    state = Influx(tmp, f"http://127.0.0.1:{http_port}", inventory, playbook)
    run_playbook(state)  # the config and directories only (influxdb_manage_api follows influxdb_systemd: off)
    conf = tmp / "root/etc/influxdb/influxdb.conf"
    proc = ChildProcess("influxd", [str(binary("influxd")), "-config", str(conf)], tmp / "influxd.log", cwd=tmp)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{state.url}/ping", timeout=1).status_code == 204:
                    break
            except httpx.HTTPError:
                pass
            if not proc.running() or time.monotonic() > deadline:
                raise proc.failure("did not answer /ping")
            time.sleep(0.2)
        yield state
    finally:
        proc.stop()


def query(url: str, q: str, auth: tuple[str, str] | None) -> httpx.Response:
    return httpx.post(f"{url}/query", data={"q": q, "db": "ioc"}, auth=auth, timeout=10)


def write(url: str, auth: tuple[str, str] | None) -> httpx.Response:
    return httpx.post(f"{url}/write", params={"db": "ioc"}, content=b"probe value=1", auth=auth, timeout=10)


def test_accounts_created_then_nothing_changes(influx: Influx) -> None:
    # Authentication is on from the start: nobody gets in before the role ran.
    before = query(influx.url, "SHOW DATABASES", None)
    assert before.status_code == 403
    assert "create admin user first" in before.json()["error"]
    changed, output = influx.run()
    assert changed > 0, output[-2000:]
    changed, output = influx.run()
    assert changed == 0, output[-3000:]

    assert query(influx.url, "SHOW DATABASES", None).status_code == 401
    assert query(influx.url, "SHOW DATABASES", (ADMIN[0], ADMIN[1] + "x")).status_code == 401
    databases = query(influx.url, "SHOW DATABASES", ADMIN).json()["results"][0]["series"][0]["values"]
    assert ["ioc"] in databases
    hub = ("hub", HUB_PASSWORD)
    grafana = ("grafana", GRAFANA_PASSWORD)
    assert write(influx.url, hub).status_code == 204
    assert write(influx.url, grafana).status_code == 403  # READ only
    rows = query(influx.url, "SELECT * FROM probe", grafana).json()["results"][0]
    assert rows["series"][0]["values"][0][1] == 1
    # Neither account is an admin.
    assert query(influx.url, "SHOW USERS", grafana).status_code == 403


def test_changed_password_is_reset_and_only_that_changes(influx: Influx) -> None:
    new = "rotated-" + secrets.token_urlsafe(10)
    users = [
        {"name": "hub", "password": new, "privilege": "ALL"},
        {"name": "grafana", "password": GRAFANA_PASSWORD, "privilege": "READ"},
    ]
    changed, output = influx.run(influxdb_users=users)
    assert changed == 1, output[-3000:]
    assert write(influx.url, ("hub", new)).status_code == 204
    assert write(influx.url, ("hub", HUB_PASSWORD)).status_code == 401
    changed, output = influx.run(influxdb_users=users)
    assert changed == 0, output[-3000:]
