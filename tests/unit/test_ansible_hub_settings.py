"""The hub role's environment file, rendered from the example inventory and its vault, is what hub/config.py
accepts: every IOC_HUB_ variable is a known setting and the values (secrets included) arrive intact."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hub.config import load_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ANSIBLE_DIR = Path(__file__).resolve().parents[2] / "ansible"
BIN = Path(sys.executable).parent
EXAMPLE = ANSIBLE_DIR / "inventories/example"


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


def render(tmp_path: Path, *extra: str) -> Path:
    """Run the hub role's settings tasks for the example hub host into ``tmp_path/root``; the env file."""
    done = run_settings_tasks(tmp_path, *extra)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    return tmp_path / "root/etc/ioc-hub/hub.env"


def run_settings_tasks(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
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


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="the target interpreter /usr/bin/python3 is missing")
def test_example_hub_env_is_accepted_by_hub_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = render(tmp_path)
    assert env_file.stat().st_mode & 0o777 == 0o600
    env = read_env_file(env_file)
    for name in [n for n in os.environ if n.upper().startswith("IOC_HUB_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(None, environ=env)
    assert settings.mqtt.host == "mqtt.ioc.example.org"
    assert settings.mqtt.port == 8883
    assert settings.mqtt.tls is True
    assert settings.mqtt.ca_file == tmp_path / "root/etc/ioc-hub/broker-ca.pem"
    assert settings.mqtt.username == "hub"
    # The secrets come from the example vault, decrypted with the example password.
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "example-hub-7Qm2vX9p"
    assert settings.influx.password is not None
    assert settings.influx.password.get_secret_value() == "example-influx-hub-Rt5y"
    # What the hub keeps across restarts is in its state directory, the only place its unit lets it write.
    state = tmp_path / "root/var/lib/ioc-hub"
    assert settings.dead_letters.path == state / "dead-letters.db"
    assert settings.spill.dir == state / "spill"
    assert settings.registry.url == f"sqlite:///{state}/registry.db"


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="the target interpreter /usr/bin/python3 is missing")
def test_a_bad_setting_fails_the_render_and_keeps_the_old_file(tmp_path: Path) -> None:
    env_file = render(tmp_path)
    before = env_file.read_bytes()
    done = run_settings_tasks(tmp_path, "-e", '{"hub_settings": {"batch": {"max_in_flight": "lots"}}}')
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    # The release's `ioc hub check --env-file` refused the rendered file, naming the variable and the field.
    assert "ioc hub check" in output
    assert "IOC_HUB_BATCH__MAX_IN_FLIGHT: batch.max_in_flight" in output
    assert env_file.read_bytes() == before


@pytest.mark.skipif(shutil.which("ansible-vault", path=str(BIN)) is None, reason="ansible-vault is not installed")
def test_example_vault_is_encrypted_and_opens_with_the_example_password(tmp_path: Path) -> None:
    vault = EXAMPLE / "group_vars/all/vault.yml"
    assert vault.read_text(encoding="utf-8").startswith("$ANSIBLE_VAULT;1.1;AES256")
    done = subprocess.run(
        [str(BIN / "ansible-vault"), "view", "--vault-password-file", str(EXAMPLE / "vault-password.EXAMPLE"),
         str(vault)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    secrets = yaml.safe_load(done.stdout)
    # Every gateway of the example inventory has its broker password in the vault.
    hosts = yaml.safe_load((EXAMPLE / "hosts.yml").read_text(encoding="utf-8"))
    accounts = set()
    for group in hosts["all"]["children"]["gateways"]["children"].values():
        for host, host_vars in group["hosts"].items():
            accounts.add(f"{group['vars']['edge_agent_site']}.{host_vars['edge_agent_gateway']}")
            assert host
    assert accounts == set(secrets["vault_mqtt_gateway_passwords"])
    assert all(str(v).startswith("example-") for v in secrets["vault_mqtt_gateway_passwords"].values())
