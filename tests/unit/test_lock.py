"""The committed locks (requirements/) and the check that `make test` runs against them (scripts/check_lock.py)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"


def load_check_lock() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_lock", ROOT / "scripts/check_lock.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_lock = load_check_lock()


def test_read_lock_takes_pins_with_hashes_and_markers(tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "# made by make lock\n"
        "Foo_Bar==1.2.3 \\\n    --hash=sha256:00\n    # via x\n"
        "baz.qux==2026.1 ; sys_platform == 'linux' \\\n    --hash=sha256:11\n"
        "-e file:///somewhere\n"
    )
    assert check_lock.read_lock(lock) == {"foo-bar": "1.2.3", "baz-qux": "2026.1"}


@pytest.mark.parametrize(
    ("locked", "present", "problems"),
    [
        ({"a": "1"}, {"a": "1", "ioc-backbone": "0.1.0"}, []),
        ({"a": "1"}, {"a": "2"}, ["a: locked 1, installed 2"]),
        ({"a": "1", "b": "3"}, {"a": "1"}, ["b: locked 3, installed nothing"]),
        ({"a": "1"}, {"a": "1", "extra": "9"}, ["extra: installed 9, not in the lock"]),
    ],
)
def test_differences_name_each_package(locked: dict[str, str], present: dict[str, str], problems: list[str]) -> None:
    assert check_lock.differences(locked, present) == problems


def test_the_check_fails_naming_the_package_when_the_environment_differs(tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("msgspec==0.0.1 \\\n    --hash=sha256:00\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/check_lock.py"), str(lock)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "msgspec: locked 0.0.1, installed " in done.stderr
    assert "not in the lock" in done.stderr  # everything else this virtualenv has


def test_edge_and_hub_locks_pin_the_versions_the_dev_lock_tests() -> None:
    dev = check_lock.read_lock(LOCKS / "dev.txt")
    for name in ("edge.txt", "hub.txt"):
        subset = check_lock.read_lock(LOCKS / name)
        assert subset, name
        assert {p: v for p, v in subset.items() if dev.get(p) != v} == {}, name


def test_every_dependency_of_pyproject_is_locked() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(d for deps in project["optional-dependencies"].values() for d in deps)]
    dev = check_lock.read_lock(LOCKS / "dev.txt")
    names = {check_lock.normalize(re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0]) for d in wanted}
    assert sorted(names - {"ioc-backbone"} - dev.keys()) == []
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    bootstrap = check_lock.read_lock(LOCKS / "bootstrap.txt")
    assert sorted(check_lock.normalize(re.split(r"[<>=]", r)[0]) for r in build) == ["hatchling"]
    assert {"pip", "hatchling", "editables", "setuptools"} <= bootstrap.keys()


def test_every_pin_of_every_lock_carries_a_hash() -> None:
    for lock in sorted(LOCKS.glob("*.txt")):
        # A pin and the lines that continue it, up to the next pin: pip --require-hashes needs a hash in each.
        blocks = re.split(r"^(?=[A-Za-z0-9][^\s]*==)", lock.read_text(), flags=re.MULTILINE)[1:]
        assert blocks, lock.name
        assert [b.split()[0] for b in blocks if "--hash=sha256:" not in b] == [], lock.name


def test_the_hub_lock_has_no_paho_mqtt_and_the_edge_lock_has() -> None:
    """The hub speaks MQTT with its own codec (hub/mqtt/), its stack runner's probe too; paho-mqtt comes with
    aiomqtt, which only the edge installs."""
    hub = check_lock.read_lock(LOCKS / "hub.txt")
    edge = check_lock.read_lock(LOCKS / "edge.txt")
    assert {"fastapi", "msgspec"} <= hub.keys()  # the hub's lock, read
    assert sorted(hub.keys() & {"paho-mqtt", "aiomqtt"}) == []
    assert {"paho-mqtt", "aiomqtt"} <= edge.keys()
    hub_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["hub"]
    assert [d for d in hub_extra if d.startswith(("paho", "aiomqtt"))] == []
