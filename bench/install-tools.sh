#!/usr/bin/env bash
# Install the load generators the benchmarks compare against (hey, wrk), if missing.
set -euo pipefail
need=()
command -v hey >/dev/null 2>&1 || need+=(hey)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
