"""Fail when the virtualenv's installed packages differ from the committed locks (run by `make test`).

    python scripts/check_lock.py requirements/dev.txt requirements/bootstrap.txt

Every package pinned in a lock must be installed at exactly that version, and nothing else may be installed
but the project itself: a hand-installed or upgraded package would make the tests prove a set no fresh
machine gets. The fix is named in the message: `make clean venv` rebuilds from the locks.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

PROJECT = "ioc-backbone"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """``{name: version}`` of the ``name==version`` lines of a pip requirements lock."""
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            pins[normalize(match[1])] = match[2]
    return pins


def installed() -> dict[str, str]:
    """``{name: version}`` of the distributions this interpreter sees."""
    return {normalize(d.metadata["Name"]): d.version for d in metadata.distributions()}


def differences(locked: dict[str, str], present: dict[str, str]) -> list[str]:
    """One line per package that is missing, at another version, or not in the lock."""
    problems = [
        f"{name}: locked {version}, installed {present.get(name, 'nothing')}"
        for name, version in sorted(locked.items())
        if present.get(name) != version
    ]
    problems += [
        f"{name}: installed {version}, not in the lock"
        for name, version in sorted(present.items())
        if name not in locked and name != PROJECT
    ]
    return problems


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    locked: dict[str, str] = {}
    for arg in argv:
        locked |= read_lock(Path(arg))
    problems = differences(locked, installed())
    if problems:
        print(f"lock: the virtualenv differs from {' + '.join(argv)}:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        hint = "rebuild it with `make clean venv` (or refresh the lock on purpose: docs/dependencies.md)"
        print(f"lock: {hint}", file=sys.stderr)
        return 1
    print(f"lock: {len(locked)} packages installed exactly as locked")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
