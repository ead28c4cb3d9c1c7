"""What the tests of the hub's settings share: an environment without the developer's own ``IOC_HUB_`` variables,
a ``hub.yaml`` in the test's folder, and the hub role's settings tasks run for real with ansible-playbook on a
temporary root, with the environment file they render read as systemd reads it (tests/unit/hub/
test_api_ansible_tls.py, tests/unit/test_ansible_hub_settings.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ANSIBLE_DIR = Path(__file__).resolve().parents[3] / "ansible"
EXAMPLE = ANSIBLE_DIR / "inventories/example"
BIN = Path(sys.executable).parent


def hub_env_only(monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None = None) -> dict[str, str]:
    """Remove every ``IOC_HUB_`` variable from the process environment, set ``env``'s; returns ``env``."""
    for name in list(os.environ):
        if name.upper().startswith("IOC_HUB_"):
            monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    return env or {}


def write_hub_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def run_settings_tasks(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The hub role's settings tasks for the example hub host, into ``tmp_path/root``; ``extra``: more arguments of
    ansible-playbook (``-e name=value``)."""
    tls = tmp_path / "tls"
    tls.mkdir(exist_ok=True)
    (tls / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nnot checked here\n-----END CERTIFICATE-----\n")
    playbook = tmp_path / "hub-settings.yml"
    playbook.write_text(
        yaml.safe_dump(
            [{"name": "Hub settings", "hosts": "hub", "gather_facts": False,
              "tasks": [{"name": "Render", "ansible.builtin.include_role": {"name": "hub", "tasks_from": "settings"}}]}]
        )
    )  # fmt: skip
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(EXAMPLE / "hosts.yml"), "-l", "hub-01", str(playbook),
         "-c", "local", "-e", "ansible_python_interpreter=/usr/bin/python3", "-e", "ansible_become=false",
         "-e", f"hub_root={tmp_path / 'root'}", "-e", f"ioc_tls_dir={tls}", "-e", "hub_group=root",
         "-e", "hub_systemd=false", "-e", f"hub_ioc={BIN / 'ioc'}", *extra],
        cwd=ANSIBLE_DIR,
        env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
             "ANSIBLE_VAULT_PASSWORD_FILE": str(EXAMPLE / "vault-password.EXAMPLE"),
             "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"), "ANSIBLE_NOCOLOR": "1"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY="value"`` lines with backslash escapes, as systemd's EnvironmentFile= reads them."""
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            key, _, quoted = line.partition("=")
            assert quoted.startswith('"'), line
            assert quoted.endswith('"'), line
            env[key] = re.sub(r"\\(.)", r"\1", quoted[1:-1])
    return env
