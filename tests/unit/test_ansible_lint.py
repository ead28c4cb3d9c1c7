"""ansible/ passes ansible-lint's production profile and every playbook passes ``--syntax-check``, offline.

Nothing is downloaded: ansible/.ansible-lint sets ``offline: true`` and the roles use ansible.builtin only (no
collection is installed here, and none is needed). The example vault is opened with its public example password.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = ROOT / "ansible"
#: What the mosquitto role's filter plugin loads from the checkout, next to ansible/ (its ``DYNSEC_MODULE``).
DYNSEC_MODULE = "common/mosquitto_dynsec.py"
BIN = Path(sys.executable).parent
EXAMPLE_VAULT_PASSWORD = ANSIBLE_DIR / "inventories/example/vault-password.EXAMPLE"
PLAYBOOKS = sorted(p.name for p in ANSIBLE_DIR.glob("*.yml"))


def ansible_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_VAULT_PASSWORD_FILE": str(EXAMPLE_VAULT_PASSWORD),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "NO_COLOR": "1",
        "ANSIBLE_NOCOLOR": "1",
    }


def lint(project: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = ansible_env(tmp_path) | {"ANSIBLE_CONFIG": str(project / "ansible.cfg")}
    return subprocess.run(
        [str(BIN / "ansible-lint"), "--profile", "production", "--offline", "--nocolor"],
        cwd=project, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip


def test_playbooks_are_found() -> None:
    assert PLAYBOOKS == ["edge.yml", "site.yml"]


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_passes_syntax_check(playbook: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", playbook],
        cwd=ANSIBLE_DIR, env=ansible_env(tmp_path), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"playbook: {playbook}" in done.stdout


def assert_every_plugin_loaded(output: str) -> None:
    """Ansible skips a plugin that fails to load with only a warning; its filters are then missing."""
    assert "Skipping plugin" not in output, output


def test_ansible_lint_production_profile_passes(tmp_path: Path) -> None:
    done = lint(ANSIBLE_DIR, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Profile 'production' was required, and it passed" in done.stdout + done.stderr
    assert_every_plugin_loaded(done.stdout + done.stderr)


def test_ansible_lint_catches_a_violation(tmp_path: Path) -> None:
    """The check above can fail: a copy of ansible/ with one sloppy task is refused, and the rule is named. The
    copy takes along the module the mosquitto filters load from the checkout (ansible/ is used where it is,
    docs/deployment.md), at the same place relative to ansible/."""
    project = tmp_path / "ansible"
    shutil.copytree(ANSIBLE_DIR, project)
    (tmp_path / DYNSEC_MODULE).parent.mkdir()
    shutil.copy2(ROOT / DYNSEC_MODULE, tmp_path / DYNSEC_MODULE)
    tasks = project / "roles/edge_agent/tasks/main.yml"
    tasks.write_text(
        tasks.read_text(encoding="utf-8") + "\n- ansible.builtin.command: systemctl restart ioc-edge\n",
        encoding="utf-8",
    )
    done = lint(project, tmp_path)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "name[missing]" in output, output
    assert "no-changed-when" in output, output
    assert_every_plugin_loaded(output)
