#!/usr/bin/env bash
# Installs promtool, which tests/tests/repo/monitoring.rs uses to check the Prometheus
# alert rules in k8s/monitoring/ offline. Debian's `prometheus` package ships it.
# Safe to run again: it installs only when promtool is missing.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    echo "promtool: $(promtool --version 2>&1 | head -n 1) (already installed)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "promtool not found and apt-get unavailable: install Prometheus's promtool" >&2
    echo "(Debian/Ubuntu: apt-get install prometheus)" >&2
    exit 1
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# The package's server is not started: only its promtool binary is used.
$sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
echo "promtool: $(promtool --version 2>&1 | head -n 1)"
