#!/usr/bin/env bash
# Installs Debian's Prometheus server and promtool for the end-to-end tests, once per machine.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "tools/install-prometheus.sh: no apt-get here; install prometheus and promtool" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 \
  || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends prometheus >/dev/null; }
# The package starts a system service where an init system runs; the tests start their own.
$sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
echo "tools/install-prometheus.sh: $(prometheus --version 2>&1 | head -1)" >&2
