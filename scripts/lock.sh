#!/usr/bin/env bash
# Refresh the committed locks in requirements/ from pyproject.toml's ranges (`make lock`).
#
#   requirements/dev.txt        everything `make venv` installs: runtime, edge, hub and dev tools
#   requirements/edge.txt       what a site box runs (the edge wheelhouse), the same versions as dev.txt
#   requirements/hub.txt        what the hub host runs (the hub wheelhouse), the same versions as dev.txt
#   requirements/bootstrap.txt  pip and the build backend, installed first
#
# Locks are for Linux and CPython 3.11 (Debian 12's python3), with the hashes of every file of each pinned
# release, so pip installs them with --require-hashes on x86_64 and on ARM site boxes alike. Refreshing is a
# deliberate commit: run this, then `make test` on the new lock, then commit requirements/ (docs/dependencies.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
uv=${UV:-.venv/bin/uv}
common=(--python-version 3.11 --python-platform linux --generate-hashes --quiet
        --custom-compile-command "make lock")
# `make lock` moves every package to its newest release within pyproject's ranges; LOCK_UPGRADE=0 keeps the
# current pins and only adds or removes what pyproject.toml's change asks for.
upgrade=()
if [ "${LOCK_UPGRADE:-1}" = 1 ]; then upgrade=(--upgrade); fi
"$uv" pip compile "${common[@]}" "${upgrade[@]}" pyproject.toml --extra dev -o requirements/dev.txt
# edge and hub are subsets of the dev lock, constrained to its versions: a site box runs what the tests ran.
"$uv" pip compile "${common[@]}" pyproject.toml --extra edge -c requirements/dev.txt -o requirements/edge.txt
"$uv" pip compile "${common[@]}" pyproject.toml --extra hub -c requirements/dev.txt -o requirements/hub.txt
"$uv" pip compile "${common[@]}" "${upgrade[@]}" requirements/bootstrap.in -o requirements/bootstrap.txt
echo "lock: requirements/ refreshed; run make test before committing it" >&2
