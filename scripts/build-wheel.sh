#!/usr/bin/env bash
# Build the wheelhouse the Ansible roles install from (ansible/, docs/deployment.md): the project's wheel and a
# wheel of every dependency of the edge agent and the hub. The roles install with `pip --no-index` from it, so a
# site box needs no internet and gets exactly what was built here.
#
#   scripts/build-wheel.sh [OUT]            # default dist/wheelhouse; wheels for this machine's platform
#   EXTRAS=edge scripts/build-wheel.sh OUT  # only what the edge agent needs
#   PLATFORM=manylinux2014_aarch64 scripts/build-wheel.sh   # for ARM gateways (binary wheels only)
set -euo pipefail
out=${1:-dist/wheelhouse}
extras=${EXTRAS:-edge,hub}
pip=${PIP:-.venv/bin/pip}
root=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$out"
mkdir -p "$out"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ -z "${PLATFORM:-}" ]; then
  "$pip" wheel --quiet --wheel-dir "$out" "$root[$extras]"
else
  # The project itself is pure Python; its dependencies must come as binary wheels for the target platform.
  "$pip" wheel --quiet --no-deps --wheel-dir "$out" "$root"
  wheel=$(ls "$out"/ioc_backbone-*.whl)
  "$pip" download --quiet --only-binary=:all: --platform "$PLATFORM" --python-version "${PYTHON_VERSION:-3.11}" \
    --implementation cp --dest "$out" "$wheel[$extras]"
fi
ls "$out"
