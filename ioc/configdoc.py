"""``python -m ioc.configdoc``: the configuration reference (docs/configuration.md), generated from the settings.

The edge agent's and the hub's settings are pydantic models whose fields are documented by ``#:`` comments right
above them (the Sphinx convention). This module walks the models, reads those comments from the source, and
prints one table per section with the key, its default, its type and bounds, and the comment. The reference
therefore cannot drift from the code: ``tests/unit/test_configuration_doc.py`` fails when the committed file
differs from what this prints (``make docs`` regenerates it).
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from edge.config import EdgeConfig
from hub.config import HubSettings


@dataclass(frozen=True)
class Row:
    key: str
    default: str
    kind: str
    meaning: str


def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """``#:`` comment lines right above each field of ``model``'s own class body (not inherited ones)."""
    try:
        source = textwrap.dedent(inspect.getsource(model))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    tree = ast.parse(source)
    cls = tree.body[0]
    assert isinstance(cls, ast.ClassDef)
    comments: dict[str, str] = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found: list[str] = []
            i = node.lineno - 2  # the line above, 0-based
            while i >= 0 and lines[i].strip().startswith("#:"):
                found.insert(0, lines[i].strip()[2:].strip())
                i -= 1
            if found:
                comments[node.target.id] = " ".join(found)
    return comments


def all_comments(model: type[BaseModel]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for klass in reversed(model.__mro__):
        if isinstance(klass, type) and issubclass(klass, BaseModel) and klass is not BaseModel:
            merged.update(field_comments(klass))
    return merged


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``annotation`` (``X``, ``X | None``, ``list[X]``) when it is one, else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        return True
    if origin in (types.UnionType, typing.Union):
        return any(_is_list(a) for a in typing.get_args(annotation))
    return False


_PLAIN_NAMES: dict[str, str] = {"str": "string", "int": "int", "float": "number", "bool": "bool", "Path": "path"}


def _class_name(annotation: type) -> str:
    if issubclass(annotation, Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    if annotation is SecretStr:
        return "secret"
    return _PLAIN_NAMES.get(annotation.__name__, annotation.__name__)


def type_name(annotation: Any) -> str:
    """A reader's name for a field's type: ``int``, ``string (optional)``, ``list of string``, ``map a → b``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if isinstance(annotation, type) and origin is None:
        return _class_name(annotation)
    if origin is typing.Annotated:
        name = type_name(args[0])
    elif origin in (types.UnionType, typing.Union):
        names = [type_name(a) for a in args if a is not type(None)]
        name = " \\| ".join(names) + (" (optional)" if len(names) < len(args) else "")
    elif origin is typing.Literal:
        name = " \\| ".join(f"`{a}`" for a in args)
    elif origin in (list, tuple, set, frozenset):
        name = f"list of {type_name(args[0])}" if args else "list"
    elif origin is dict:
        name = f"map {type_name(args[0])} → {type_name(args[1])}" if args else "map"
    else:
        name = str(annotation).replace("typing.", "")
    return name


_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))
_BOUND_TYPES = (
    annotated_types.Ge,
    annotated_types.Gt,
    annotated_types.Le,
    annotated_types.Lt,
    annotated_types.Interval,
)


def _number(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def bounds(info: FieldInfo) -> str:
    parts: list[str] = []
    for meta in info.metadata:
        if isinstance(meta, _BOUND_TYPES):
            for attr, sign in _BOUNDS:
                value = getattr(meta, attr, None)
                if value is not None:
                    parts.append(f"{sign} {_number(value)}")
        pattern = getattr(meta, "pattern", None)
        if pattern:
            parts.append(f"`{pattern}`")
    return ", ".join(parts)


def _default_value(info: FieldInfo) -> object:
    """The default, or the string ``computed`` when it is worked out at run time (a host name, a state folder)."""
    factory = info.default_factory
    if factory is None:
        return info.default
    if getattr(factory, "__name__", "").startswith("_"):  # a named factory of ours
        return "computed"
    try:
        return factory()  # type: ignore[call-arg]
    except TypeError:
        return "computed"


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = _default_value(info)
    text = ""
    if value == "computed":
        text = "computed"
    elif value is PydanticUndefined or value is None or isinstance(value, BaseModel):
        text = ""
    elif isinstance(value, (list, dict, tuple, set, frozenset)):
        text = ", ".join(f"`{v}`" for v in value)
    elif isinstance(value, Enum):
        text = f"`{value.value}`"
    elif isinstance(value, bool):
        text = f"`{str(value).lower()}`"
    elif isinstance(value, SecretStr):
        text = "(set)"
    else:
        text = f"`{value}`"
    return text


def rows(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Row]]:
    """(section, row) for every leaf field; nested models become sections of their own."""
    comments = all_comments(model)
    section = prefix.rstrip(".") or "(top level)"
    for name, info in model.model_fields.items():
        annotation = info.annotation
        sub = _submodel(annotation)
        key = f"{prefix}{name}"
        if sub is not None:
            child = f"{key}[]." if _is_list(annotation) else f"{key}."
            if comments.get(name):
                yield (
                    section,
                    Row(f"`{key}`", default_text(info) if not _is_list(annotation) else "", "section", comments[name]),
                )
            yield from rows(sub, child)
            continue
        kind = type_name(annotation)
        extra = bounds(info)
        yield (
            section,
            Row(f"`{key}`", default_text(info), f"{kind}{', ' + extra if extra else ''}", comments.get(name, "")),
        )


def table(model: type[BaseModel]) -> str:
    sections: dict[str, list[Row]] = {}
    for section, row in rows(model):
        sections.setdefault(section, []).append(row)
    out: list[str] = []
    for section, section_rows in sections.items():
        out.append(f"#### `{section}`" if section != "(top level)" else "#### top level")
        out.append("")
        out.append("| key | default | type | meaning |")
        out.append("|---|---|---|---|")
        for r in section_rows:
            # The comments are reStructuredText (``code``); the reference is Markdown (`code`).
            meaning = r.meaning.replace("``", "`").replace("|", "\\|")
            out.append(f"| {r.key} | {r.default} | {r.kind} | {meaning} |")
        out.append("")
    return "\n".join(out)


HEADER = """# Configuration reference

Generated by `python -m ioc.configdoc` (`make docs`) from the settings models in `edge/config.py` and
`hub/config.py`; the text of each row is the `#:` comment above the field. `tests/unit/test_configuration_doc.py`
fails when this file is not what the code says. Unknown keys are refused everywhere; every error names the file
or environment variable and the field.
"""


EDGE_INTRO = """One YAML file per gateway ([example](../edge/examples/gateway.yaml)). Every key can be overridden by an
environment variable `IOC_EDGE_<SECTION>__<KEY>` (for instance `IOC_EDGE_BROKER__PASSWORD`), which wins over the
file. A device's `options` are checked by its driver (see `devices/drivers/*/README.md`)."""

HUB_INTRO = """Defaults, then the YAML file given with `--config`, then environment variables `IOC_HUB_<SECTION>__<KEY>`
(for instance `IOC_HUB_MQTT__HOST`). Placeholder secrets are refused unless the broker is on loopback."""


def render() -> str:
    parts = [
        HEADER,
        "## Edge agent (`ioc edge check|run gateway.yaml`)",
        "",
        EDGE_INTRO,
        "",
        table(EdgeConfig),
        "## Hub (`ioc hub [--config FILE]`)",
        "",
        HUB_INTRO,
        "",
        table(HubSettings),
    ]
    return "\n".join(parts).rstrip() + "\n"


DOC_PATH = Path(__file__).parents[1] / "docs" / "configuration.md"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
