#!/usr/bin/env bash
# Create the project's virtualenv with what a fresh Debian 12 has: python3, bash, make.
# Debian's python3 lacks ensurepip until python3-venv is installed; as root we install it, otherwise we say how.
set -euo pipefail
venv=${1:-.venv}
python=${PYTHON:-python3}
if [ -x "$venv/bin/python" ]; then exit 0; fi
if ! "$python" -m venv "$venv" 2>/dev/null; then
  rm -rf "$venv"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing python3-venv (needed to create $venv)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv python3-pip >/dev/null
    "$python" -m venv "$venv"
  else
    echo "bootstrap: '$python -m venv' failed; install the Debian package: sudo apt-get install python3-venv" >&2
    exit 1
  fi
fi
