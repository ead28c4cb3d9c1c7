"""What the edge's and the hub's config loaders share: the YAML file read as a mapping, the environment
variables of unknown sections refused, and the loopback test behind the TLS and placeholder-secret checks.

Errors are raised as the caller's own config error (``error``), so the message reaches the operator the way
the rest of that loader's errors do: naming the file or the variable.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml


def read_yaml_mapping(path: Path, *, top_level: str, error: Callable[[str], Exception]) -> dict[str, Any]:
    """The mapping at the top of the YAML file ``path`` (an empty file is an empty mapping), keys as text.

    Raises ``error(message)`` naming ``path`` for a file that cannot be read, is not YAML, or whose top level
    is not a mapping (``top_level`` says what it should hold, e.g. ``"site, gateway, broker, ..."``).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read the config file: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: the top level must be a mapping {top_level}")
    return {str(k): v for k, v in data.items()}


def refuse_unknown_env(
    env: Mapping[str, str], prefix: str, known: Iterable[str], *, noun: str, error: Callable[[str], Exception]
) -> None:
    """Refuse a variable ``<prefix><NAME>[__...]`` whose NAME (case-insensitive) is not one of ``known``: a
    misspelt section would otherwise pass unnoticed. ``noun`` names what NAME is (``"setting"``,
    ``"setting section"``); raises ``error(message)`` naming the first such variable in sorted order."""
    names = set(known)
    for name in sorted(env):
        if name.upper().startswith(prefix):
            first = name[len(prefix) :].split("__", 1)[0].lower()
            if first not in names:
                raise error(
                    f"environment variable {name}: unknown {noun} {first!r} (known: {', '.join(sorted(names))})"
                )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` (any case) and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
