"""The grafana role applied into a temporary root with the real output of ``ioc dashboards build``: every board
lands where its provider's ``options.path`` points, every ``$__env{...}`` of the provisioning is set in
grafana-server's root-only environment, and a second run changes nothing. (No Grafana runs here: the files are
checked, not loaded; docs/deployment.md.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ANSIBLE_DIR = Path(__file__).resolve().parents[2] / "ansible"
BIN = Path(sys.executable).parent
RECAP = re.compile(r"^(?P<host>\S+)\s+: ok=\d+\s+changed=(?P<changed>\d+)", re.MULTILINE)


def run_role(tmp: Path, host_vars: dict[str, object]) -> int:
    inventory = tmp / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"grafana-test": host_vars}}}), encoding="utf-8")
    playbook = tmp / "grafana.yml"
    playbook.write_text(
        yaml.safe_dump([{"name": "Grafana", "hosts": "all", "gather_facts": False, "roles": ["grafana"]}]),
        encoding="utf-8",
    )
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)],
        cwd=ANSIBLE_DIR,
        env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
             "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp")},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    match = RECAP.search(done.stdout)
    assert match, done.stdout[-2000:]
    return int(match["changed"])


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="the target interpreter /usr/bin/python3 is missing")
def test_grafana_role_installs_the_dashboards_build(tmp_path: Path) -> None:
    build = tmp_path / "build"
    done = subprocess.run(
        [str(BIN / "ioc"), "dashboards", "build", "--out", str(build), "--influx-user", "grafana"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    root = tmp_path / "root"
    host_vars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "/usr/bin/python3",
        "grafana_root": str(root),
        "grafana_install_package": False,
        "grafana_systemd": False,
        "grafana_group": "root",
        "grafana_provisioning_src": str(build / "provisioning"),
        "grafana_dashboards_src": str(build / "dashboards"),
        "grafana_environment": {"IOC_GRAFANA_INFLUX_PASSWORD": "reader-secret"},
    }
    assert run_role(tmp_path, host_vars) > 0
    assert run_role(tmp_path, host_vars) == 0

    provisioning = root / "etc/grafana/provisioning"
    providers = [
        p for f in sorted((provisioning / "dashboards").glob("*.yaml"))
        for p in yaml.safe_load(f.read_text(encoding="utf-8"))["providers"]
    ]  # fmt: skip
    assert providers
    boards = 0
    for provider in providers:
        # The provider's path is a path on the Grafana host; here it is under the temporary root.
        folder = root / provider["options"]["path"].lstrip("/")
        found = list(folder.glob("*.json"))
        assert found, f"provider {provider['name']}: no board in {folder}"
        boards += len(found)
    assert boards == len(list((build / "dashboards").rglob("*.json")))

    env_file = root / "etc/grafana/ioc.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    env = dict(line.split("=", 1) for line in env_file.read_text(encoding="utf-8").splitlines() if "=" in line)
    assert env["IOC_GRAFANA_INFLUX_PASSWORD"] == '"reader-secret"'
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == '"false"'
    wanted = set()
    for f in (provisioning / "datasources").glob("*.yaml"):
        wanted |= set(re.findall(r"\$__env\{(\w+)\}", f.read_text(encoding="utf-8")))
    assert wanted, "the datasource names no environment variable (was --influx-user ignored?)"
    assert wanted <= set(env), f"provisioning expands {wanted - set(env)}, which grafana-server's environment lacks"
    dropin = root / "etc/systemd/system/grafana-server.service.d/ioc.conf"
    assert f"EnvironmentFile={env_file}" in dropin.read_text(encoding="utf-8")
