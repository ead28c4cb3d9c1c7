"""docs/configuration.md is what the settings models say (regenerate with `make docs`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ioc.configdoc import DOC_PATH, field_comments, render, rows


def test_the_committed_reference_is_current() -> None:
    assert DOC_PATH.read_text(encoding="utf-8") == render(), "docs/configuration.md is stale: run `make docs`"


class _Inner(BaseModel):
    #: How often, in seconds.
    #: Second line of the same comment.
    every_s: float = Field(default=5.0, gt=0, le=60)
    plain: int = 3


class _Outer(BaseModel):
    name: str
    #: The inner section.
    inner: _Inner = _Inner()
    items: list[_Inner] = Field(default_factory=list)


def test_comments_defaults_bounds_and_nesting_are_read() -> None:
    assert field_comments(_Inner) == {"every_s": "How often, in seconds. Second line of the same comment."}
    got = {row.key: (section, row.default, row.kind, row.meaning) for section, row in rows(_Outer)}
    assert got["`name`"] == ("(top level)", "required", "string", "")
    assert got["`inner.every_s`"] == (
        "inner",
        "`5.0`",
        "number, > 0, ≤ 60",
        "How often, in seconds. Second line of the same comment.",
    )
    assert got["`inner.plain`"][1] == "`3`"
    assert got["`inner`"][2:] == ("section", "The inner section.")
    assert got["`items[].every_s`"][0] == "items[]"
