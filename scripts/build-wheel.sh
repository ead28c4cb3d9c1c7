#!/usr/bin/env bash
# Build the wheelhouse the Ansible roles install from (ansible/, docs/deployment.md): the project's wheel, and
# the wheels of exactly the versions in the committed locks (requirements/edge.txt, requirements/hub.txt), with
# their hashes checked. The locks are copied in as requirements-edge.txt / requirements-hub.txt; the roles install
# them with `pip --no-index --require-hashes`, so a site box needs no internet and runs exactly what was tested.
#
#   scripts/build-wheel.sh [OUT]            # default dist/wheelhouse; wheels for this machine's platform
#   EXTRAS=edge scripts/build-wheel.sh OUT  # only what the edge agent needs
#   PLATFORM=manylinux2014_aarch64 scripts/build-wheel.sh   # for ARM gateways
set -euo pipefail
out=${1:-dist/wheelhouse}
extras=${EXTRAS:-edge,hub}
pip=${PIP:-.venv/bin/pip}
root=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$out"
mkdir -p "$out"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# The project is pure Python, built with the locked backend already in the virtualenv (requirements/bootstrap.txt).
"$pip" wheel --quiet --no-deps --no-build-isolation --wheel-dir "$out" "$root"
platform=()
if [ -n "${PLATFORM:-}" ]; then
  platform=(--platform "$PLATFORM" --python-version "${PYTHON_VERSION:-3.11}" --implementation cp)
fi
IFS=, read -r -a wanted <<<"$extras"
for extra in "${wanted[@]}"; do
  lock="$root/requirements/$extra.txt"
  [ -f "$lock" ] || { echo "build-wheel: no lock for '$extra' ($lock)" >&2; exit 2; }
  cp "$lock" "$out/requirements-$extra.txt"
  # Binary wheels only: a wheel built here from an sdist would not match the lock's hashes on the target.
  "$pip" download --quiet --only-binary=:all: --require-hashes --no-deps "${platform[@]}" \
    --dest "$out" -r "$lock"
done
ls "$out"
