"""The layout is the architecture: each package may import only what its layer allows.

Parsed from the source (ast), so a forbidden import fails here even if it sits in a branch no test runs.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Final

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
    # The composition root may import every layer, but no MQTT library of its own: the stack runner's readiness
    # probe speaks MQTT with the hub's codec, so the hub's wheelhouse needs no paho-mqtt (the edge's aiomqtt
    # brings it to the edge's).
    "ioc": {"paho", "aiomqtt"},
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


#: What the hub host runs, from the ``hub`` extra: ``ioc hub``, ``ioc stack`` and ``ioc dashboards`` (ioc/cli.py).
HUB_RUNTIME: Final = ("hub.cli", "hub.service", "ioc.cli", "ioc.stack.cli", "dashboards.cli")


def test_the_hub_runtime_loads_no_mqtt_library_but_its_own() -> None:
    """What the hub's commands import, all the way down, holds no paho-mqtt nor aiomqtt, nor the edge's code:
    the hub's lock (requirements/hub.txt) has neither library, and one MQTT stack serves the hub process."""
    code = (
        "import importlib, sys\n"
        f"for name in {HUB_RUNTIME!r}: importlib.import_module(name)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(done.stdout.split())
    assert {"hub", "ioc", "dashboards", "wire", "common"} <= loaded  # the check sees the modules it imported
    assert sorted(loaded & {"paho", "aiomqtt", "edge", "devices", "pymodbus"}) == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom hub.ingest import x\nimport paho.mqtt.client as mqtt\nfrom . import y\n")
    assert imported_top_levels(bad) == {"os", "hub", "paho"}


# ------------------------------------------------------------------------------------------------ inside hub/

HUB: Final = ROOT / "hub"

#: The hub's only top-level modules; everything else lives in a package named for what it does (``hub/mqtt/``,
#: ``hub/storage/``, ``hub/ingest/``, ``hub/operations/``, ``hub/routes/``...), so a reader finds a module by its
#: folder. A new module joins a package; this list grows only for something every package shares.
HUB_TOP_LEVEL: Final = frozenset(
    {
        "__init__",
        "api",  # the FastAPI app and its server: the routes join it, the composition root serves it
        "auth",  # tokens, roles and wards: the API's guard and the ``ioc hub token`` command both use it
        "cli",  # ``ioc hub``: the entry point
        "config",  # the settings every package reads
        "errors",  # the hub's one error hierarchy
        "metrics",  # the hub's own health as ``/metrics`` and ``hub_health`` lines
        "service",  # the composition root: builds every part and runs their lifecycle
        "stats",  # the typed figures every part reports (ingest, MQTT, InfluxDB, lanes, snapshots), read by the API
    }
)

#: What no part of the hub may import but the composition root and the entry point: ``hub.api`` is served by
#: ``hub.service``, which ``hub.cli`` runs; anything else importing them would run back up the layers.
HUB_ONLY_IMPORTED_BY: Final[dict[str, frozenset[str]]] = {
    "hub.api": frozenset({"hub.service"}),
    "hub.service": frozenset({"hub.cli"}),
    "hub.cli": frozenset(),
}

_ABOVE_DOMAIN: Final = frozenset({"hub.operations", "hub.routes", "hub.api", "hub.service", "hub.cli"})
_DOMAIN: Final = frozenset({"hub.registry", "hub.health", "hub.alerts", "hub.reports", "hub.snapshots"})

#: hub package -> the hub packages it must never import (a name covers its submodules); the reason above each.
HUB_FORBIDDEN: Final[dict[str, frozenset[str]]] = {
    # Storage is where accepted data is kept: InfluxDB, the spill, the dead letters. It knows nothing of what
    # feeds it, so the writer and the spill are tested (and benchmarked) on their own.
    "hub.storage": frozenset({"hub.mqtt", "hub.ingest", "hub.metrics"}) | _DOMAIN | _ABOVE_DOMAIN,
    # The MQTT client moves packets; what a message means and where it is kept is the ingest's and storage's.
    # It hands messages over in the types the pipeline defines (hub.ingest.messages, allowed below).
    "hub.mqtt": frozenset({"hub.storage", "hub.ingest", "hub.metrics"}) | _DOMAIN | _ABOVE_DOMAIN,
    # The pipeline is fed through hub.ingest.messages and tells the operations side what it admitted through the
    # observers it is given, so it runs (and is tested) without MQTT, the database or the API.
    "hub.ingest": frozenset({"hub.mqtt", "hub.metrics", "hub.registry", "hub.health", "hub.alerts", "hub.reports"})
    | _ABOVE_DOMAIN,
    # The operations side is composed below the HTTP layer: the API reads it, never the other way round.
    "hub.operations": frozenset({"hub.routes", "hub.api", "hub.service", "hub.cli"}),
    # Routes answer HTTP from what the operations side and the domain packages hold, never from the intake, the
    # pipeline or the writers underneath (the service wires those; the API reads their figures as hub.stats).
    "hub.routes": frozenset({"hub.mqtt", "hub.storage", "hub.ingest", "hub.api", "hub.service", "hub.cli"}),
    # The domain packages (sites and devices, health, alerts, reports, camera snapshots) are what the operations
    # side composes and the routes read: none of them may reach up into either.
    **dict.fromkeys(sorted(_DOMAIN), _ABOVE_DOMAIN),
}

#: (importer package, imported module) exceptions to :data:`HUB_FORBIDDEN`, each with its reason.
HUB_ALLOWED: Final[dict[tuple[str, str], str]] = {
    ("hub.mqtt", "hub.ingest.messages"): "the intake hands messages over in the types the pipeline defines",
    ("hub.routes", "hub.storage.deadletter"): "GET /api/v1/dead-letters answers with the quarantine's own records",
    ("hub.routes", "hub.storage.lineproto"): "POST /api/v1/kpis turns its rows into lines for the writer it is given",
    ("hub.operations", "hub.routes.eventhub"): "the composition feeds the live events' fan-out, which the API streams",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_hub_modules(path: Path) -> set[str]:
    """The ``hub`` modules a file imports (``from hub import x`` counts as ``hub.x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.split(".")[0] == "hub")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "hub":
                names.update(f"hub.{alias.name}" for alias in node.names)
            elif node.module.startswith("hub."):
                names.add(node.module)
    return names


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def hub_violations(files: list[Path]) -> list[str]:
    """Every import between hub packages that :data:`HUB_FORBIDDEN` and :data:`HUB_ONLY_IMPORTED_BY` refuse."""
    found: list[str] = []
    for path in files:
        importer = _module_name(path)
        for imported in sorted(imported_hub_modules(path)):
            for package, forbidden in HUB_FORBIDDEN.items():
                if not _within(importer, package) or _within(imported, package):
                    continue
                if any(_within(imported, f) for f in forbidden) and not any(
                    p == package and _within(imported, m) for p, m in HUB_ALLOWED
                ):
                    found.append(f"{importer} imports {imported}")
            for target, allowed in HUB_ONLY_IMPORTED_BY.items():
                if _within(imported, target) and importer not in allowed and not _within(importer, target):
                    found.append(f"{importer} imports {imported} (only {sorted(allowed) or 'no hub module'} may)")
    return found


def test_hub_packages_import_only_downwards() -> None:
    files = sorted(HUB.rglob("*.py"))
    assert files
    assert hub_violations(files) == []


def test_hub_has_no_flat_module_outside_the_agreed_list() -> None:
    """A new module goes into the package named for what it does, not beside them."""
    flat = sorted(path.stem for path in HUB.glob("*.py"))
    assert sorted(set(flat) - HUB_TOP_LEVEL) == [], "hub/ holds modules outside HUB_TOP_LEVEL"
    assert sorted(HUB_TOP_LEVEL - set(flat)) == [], "HUB_TOP_LEVEL names modules hub/ no longer has"


def test_every_hub_rule_names_a_real_package() -> None:
    for package in (*HUB_FORBIDDEN, *HUB_ONLY_IMPORTED_BY, *(m for _p, m in HUB_ALLOWED)):
        module = ROOT.joinpath(*package.split("."))
        assert module.is_dir() or module.with_suffix(".py").is_file(), package


def test_the_hub_checker_sees_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    cases = {
        "hub/storage/influx.py": "from hub.ingest import Pipeline\nfrom hub.errors import StorageError\n",
        "hub/mqtt/intake.py": "from hub.ingest.messages import IntakeSink\nfrom hub import service\n",
        "hub/routes/sites.py": "import hub.mqtt.intake\nfrom hub.operations.operations import Operations\n",
    }
    files = []
    for name, text in cases.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
        files.append(tmp_path / name)
    assert hub_violations(files) == [
        "hub.storage.influx imports hub.ingest",
        "hub.mqtt.intake imports hub.service",
        "hub.mqtt.intake imports hub.service (only ['hub.cli'] may)",
        "hub.routes.sites imports hub.mqtt.intake",
    ]


def test_every_hub_exception_is_still_used() -> None:
    """An exception to the rules that no import needs any more is taken out, so the rules stay as strict as the code."""
    imports = {_module_name(path): imported_hub_modules(path) for path in sorted(HUB.rglob("*.py"))}
    unused = [
        f"{package} -> {module}"
        for package, module in HUB_ALLOWED
        if not any(
            _within(importer, package) and any(_within(name, module) for name in names)
            for importer, names in imports.items()
        )
    ]
    assert unused == []
