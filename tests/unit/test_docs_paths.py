"""Every path docs/architecture.md names exists: a module moved or removed fails here until the module map says so.

A path is a backticked name without spaces that holds a ``/`` or ends with a file extension (``hub/ingest/``,
``service.py``, ``devices/profiles/*.yaml``), or a relative Markdown link (resolved from docs/). A name resolves from
the repository root, from a directory its heading names (``### `hub/` `` makes ``service.py`` mean
``hub/service.py``), or from a directory named before it in the same bullet or table row (``ingest/`` ...
``lanes.py``). Placeholders (``{site}``, ``<protocol>``), URL paths (``/metrics``) and the names in
:data:`NOT_PATHS` are not paths.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
DOC: Final = ROOT / "docs" / "architecture.md"
#: Backticked names with a slash that are not files: MQTT topic channels.
NOT_PATHS: Final = frozenset({"cmd/ack"})

_TICKED: Final = re.compile(r"`([^`\s]+)`")
_LINK: Final = re.compile(r"\]\(([^)#\s:]+)(?:#[^)]*)?\)")
_FILE: Final = re.compile(r"\.(py|ya?ml|md|json|js|html|css|txt|sh|toml|j2|ini|cfg|png)$")


def _blocks(text: str) -> list[tuple[list[str], str]]:
    """(directories of the heading, text) of each bullet, table row or paragraph, continuation lines joined."""
    blocks: list[tuple[list[str], str]] = []
    bases: list[str] = []
    open_block = False
    for line in text.splitlines():
        if line.startswith("#"):
            bases = [name for name in _TICKED.findall(line) if name.endswith("/")]
            open_block = False
        elif not line.strip():
            open_block = False
        elif line.startswith(("- ", "| ")) or not open_block:
            blocks.append((bases, line))
            open_block = True
        else:
            blocks[-1] = (bases, f"{blocks[-1][1]} {line}")
    return blocks


def _exists(path: Path) -> bool:
    if "*" in path.name:
        return any(path.parent.glob(path.name))
    return path.exists()


def missing_paths(text: str, root: Path, doc_dir: Path) -> list[str]:
    """The paths ``text`` names that do not exist under ``root`` (links: under ``doc_dir``), in order."""
    missing: list[str] = []
    for heading_dirs, block in _blocks(text):
        bases = [root, *(root / d for d in heading_dirs)]
        for name in _TICKED.findall(block):
            if name in NOT_PATHS or name.startswith("/") or re.search(r"[{}<>]|://", name):
                continue
            if "/" not in name and not _FILE.search(name):
                continue
            if not any(_exists(base / name) for base in bases):
                missing.append(name)
            elif name.endswith("/"):
                bases += [base / name for base in bases if (base / name).is_dir()]
        missing += [link for link in _LINK.findall(block) if not (doc_dir / link).exists()]
    return missing


def test_every_path_the_architecture_names_exists() -> None:
    assert missing_paths(DOC.read_text(encoding="utf-8"), ROOT, DOC.parent) == []


def test_the_check_names_what_is_missing_and_resolves_from_headings_and_bullets(tmp_path: Path) -> None:
    for path in ("hub/service.py", "hub/ingest/lanes.py", "docs/protocol.md", "devices/profiles/a.yaml"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    text = "\n".join(
        (
            "# Architecture",
            "",
            "| `hub/` | `service.py` and `gone.py` |",
            "See [protocol.md](protocol.md) and [the old one](protocol-v0.md#topics).",
            "",
            "### `hub/`",
            "- `service.py` composition, `tasks.py` stops tasks, `ingest/` the pipeline: `lanes.py`,",
            "  `overflow.py`; `GET /metrics`, topic `ioc/v1/{site}/{gateway}/cmd/ack`, channel `cmd/ack`.",
            "- `lanes.py` again, outside its bullet; `devices/profiles/*.yaml`, `devices/sim/*.py`, `<id>.yaml`.",
            "",
            "### `devices/`",
            "- `service.py` is not here.",
        )
    )
    assert missing_paths(text, tmp_path, tmp_path / "docs") == [
        "gone.py",
        "protocol-v0.md",
        "tasks.py",
        "overflow.py",
        "lanes.py",
        "devices/sim/*.py",
        "service.py",
    ]
