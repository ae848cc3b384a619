#!/usr/bin/env bash
# Installs schemathesis, pinned, into a virtual environment under .dev/ for
# tests/tests/api/api_schema.rs (which runs it against ingest's and the edge's
# /openapi.json). Safe to run again: it only installs what is missing. Needs
# python3 with the venv module (Debian: python3-venv, installed here when missing
# and running as root).
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.dev/schemathesis"
ST="$VENV/bin/st"

if [[ -x "$ST" ]] && "$ST" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "schemathesis: $("$ST" --version) (already installed)"
    exit 0
fi

if ! command -v python3 >/dev/null 2>&1; then
    echo "python3 not found: schemathesis is a Python package" >&2
    exit 1
fi

if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    else
        echo "python3's venv module is missing: install python3-venv" >&2
        exit 1
    fi
fi

rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==${SCHEMATHESIS_VERSION}"
echo "schemathesis: $("$ST" --version)"
