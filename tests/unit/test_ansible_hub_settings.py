"""The hub role's environment file, rendered from the example inventory and its vault, is what hub/config.py
accepts: every IOC_HUB_ variable is a known setting and the values (secrets included) arrive intact."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hub.config import load_settings

# The hub settings tests' support module, imported top-level as they import it (its folder on the path).
sys.path.insert(0, str(Path(__file__).resolve().parent / "hub"))

from hub_settings_support import BIN, EXAMPLE, hub_env_only, read_env_file, run_settings_tasks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def render(tmp_path: Path, *extra: str) -> Path:
    """Run the hub role's settings tasks for the example hub host into ``tmp_path/root``; the env file."""
    done = run_settings_tasks(tmp_path, *extra)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    return tmp_path / "root/etc/ioc-hub/hub.env"


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="the target interpreter /usr/bin/python3 is missing")
def test_example_hub_env_is_accepted_by_hub_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = render(tmp_path)
    assert env_file.stat().st_mode & 0o777 == 0o600
    env = read_env_file(env_file)
    hub_env_only(monkeypatch, env)
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
