"""The golden comparison itself: exact, with a diff, and never passing while it rewrites expected files."""

from __future__ import annotations

from pathlib import Path

import pytest
from golden_cases import UPDATE_VARIABLE, case_names, check_golden


@pytest.fixture(autouse=True)
def _not_updating(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UPDATE_VARIABLE, raising=False)


def test_an_equal_text_passes(tmp_path: Path) -> None:
    (tmp_path / "expected.txt").write_text("exit: 0\n", encoding="utf-8")
    check_golden(tmp_path, "exit: 0\n")


def test_a_different_text_fails_with_a_diff(tmp_path: Path) -> None:
    (tmp_path / "expected.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(pytest.fail.Exception) as info:
        check_golden(tmp_path, "a\nc\n")
    assert str(info.value).splitlines()[2:] == ["@@ -1,2 +1,2 @@", " a", "-b", "+c"]


def test_a_missing_trailing_newline_is_a_difference(tmp_path: Path) -> None:
    (tmp_path / "expected.txt").write_text("a\n", encoding="utf-8")
    with pytest.raises(pytest.fail.Exception):
        check_golden(tmp_path, "a")


def test_a_case_without_expected_text_fails(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match=f"no expected.txt: write it with {UPDATE_VARIABLE}=1"):
        check_golden(tmp_path, "anything\n")
    assert not (tmp_path / "expected.txt").exists()


@pytest.mark.parametrize("value", ["1", "yes"])
def test_update_mode_writes_and_still_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    (tmp_path / "expected.txt").write_text("old\n", encoding="utf-8")
    monkeypatch.setenv(UPDATE_VARIABLE, value)
    with pytest.raises(pytest.fail.Exception, match="never passes in update mode"):
        check_golden(tmp_path, "new\n")
    assert (tmp_path / "expected.txt").read_text(encoding="utf-8") == "new\n"


def test_update_mode_fails_even_when_nothing_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "expected.txt").write_text("same\n", encoding="utf-8")
    monkeypatch.setenv(UPDATE_VARIABLE, "1")
    with pytest.raises(pytest.fail.Exception):
        check_golden(tmp_path, "same\n")


@pytest.mark.parametrize("value", ["", "0"])
def test_an_empty_or_zero_variable_is_not_update_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    (tmp_path / "expected.txt").write_text("old\n", encoding="utf-8")
    monkeypatch.setenv(UPDATE_VARIABLE, value)
    with pytest.raises(pytest.fail.Exception):
        check_golden(tmp_path, "new\n")
    assert (tmp_path / "expected.txt").read_text(encoding="utf-8") == "old\n"


def test_cases_are_the_folders_holding_the_input_sorted(tmp_path: Path) -> None:
    for name in ("b-case", "a-case", "no-input"):
        (tmp_path / name).mkdir()
    (tmp_path / "b-case" / "in.yaml").write_text("x", encoding="utf-8")
    (tmp_path / "a-case" / "in.yaml").write_text("x", encoding="utf-8")
    (tmp_path / "stray.yaml").write_text("x", encoding="utf-8")
    assert case_names(tmp_path, "in.yaml") == ["a-case", "b-case"]
