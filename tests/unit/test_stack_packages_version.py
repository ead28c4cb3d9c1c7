"""The newest of several versioned installs is found by number, not by string (15 after 9.6)."""

from __future__ import annotations

from pathlib import Path

from ioc.stack.packages import _version_key


def test_version_folders_sort_as_numbers() -> None:
    found = [Path(f"/usr/lib/postgresql/{v}/bin/postgres") for v in ("9.6", "15", "13", "16")]
    newest = max(found, key=_version_key)
    assert newest == Path("/usr/lib/postgresql/16/bin/postgres")
    assert min(found, key=_version_key) == Path("/usr/lib/postgresql/9.6/bin/postgres")
