"""The layout is the architecture: each package may import only what its layer allows.

Parsed from the source (ast), so a forbidden import fails here even if it sits in a branch no test runs.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

#: The project's own top-level packages.
PROJECT: frozenset[str] = frozenset(
    {"common", "wire", "devices", "edge", "hub", "dashboards", "ioc", "benchmarks", "scripts", "tests"}
)
#: What ``common/`` (below every layer) may import besides the standard library: what every install has.
COMMON_THIRD_PARTY: frozenset[str] = frozenset({"yaml"})

#: package -> top-level modules it must never import
FORBIDDEN: dict[str, set[str]] = {
    "common": set(PROJECT - {"common"}),
    "wire": {"devices", "edge", "hub", "ioc", "dashboards", "paho", "aiomqtt", "fastapi", "httpx", "pymodbus"},
    "devices": {"edge", "hub", "ioc", "dashboards", "wire", "paho", "aiomqtt", "fastapi", "uvicorn", "influxdb_client"},
    "edge": {"hub", "ioc", "dashboards", "fastapi", "uvicorn", "httpx", "influxdb_client"},
    "hub": {"devices", "edge", "ioc", "pymodbus", "aiomqtt", "paho"},
    "dashboards": {"devices", "edge", "ioc", "paho", "aiomqtt", "pymodbus"},
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_its_layer(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files"
    violations = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in sorted(imported_top_levels(path) & FORBIDDEN[package])
    ]
    assert not violations, "layer violations:\n" + "\n".join(violations)


def test_common_imports_only_the_standard_library_and_yaml() -> None:
    """The shared package is below every layer: the edge agent on small hardware pays for nothing it pulls in."""
    allowed = set(sys.stdlib_module_names) | COMMON_THIRD_PARTY | {"common"}
    files = sorted((ROOT / "common").rglob("*.py"))
    assert files
    extra = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in sorted(imported_top_levels(path) - allowed)
    ]
    assert not extra, "common/ imports beyond the standard library and yaml:\n" + "\n".join(extra)


@pytest.mark.parametrize("package", sorted(set(FORBIDDEN) - {"common"}))
def test_every_layer_may_import_common(package: str) -> None:
    assert "common" not in FORBIDDEN[package]


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom hub.ingest import x\nimport paho.mqtt.client as mqtt\nfrom . import y\n")
    assert imported_top_levels(bad) == {"os", "hub", "paho"}
