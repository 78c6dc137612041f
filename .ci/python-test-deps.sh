#!/usr/bin/env bash
# Installs Bacalhau's official Python API client into .ci/venv for tests/tests/python_client.rs.
set -euo pipefail
cd "$(dirname "$0")"
if ! python3 -m venv --help >/dev/null 2>&1; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv
  fi
fi
if [ ! -x venv/bin/python ] || ! venv/bin/python -c 'import bacalhau_apiclient' 2>/dev/null; then
  rm -rf venv
  python3 -m venv venv
  # The client declares no dependencies but imports these.
  venv/bin/pip install --quiet --disable-pip-version-check 'bacalhau-apiclient==1.4.1' \
    'six==1.17.0' 'python-dateutil==2.9.0.post0' 'urllib3==2.5.0' 'certifi==2025.8.3'
fi
venv/bin/python -c 'import bacalhau_apiclient; print("bacalhau-apiclient ready")'
