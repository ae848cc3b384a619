#!/usr/bin/env bash
# Installs the Python recipe's client (clients/python/requirements.txt: a pinned nats-py)
# into .dev/venv-readers, for tests/tests/edge/reader_recipes.rs. Safe to run again: it only
# installs what is missing. Prints the venv's python.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.dev/venv-readers"
requirements="$repo/clients/python/requirements.txt"

command -v python3 >/dev/null 2>&1 || { echo "python3 not found (Debian: apt-get install python3-venv)" >&2; exit 1; }
if [[ ! -x "$venv/bin/pip" ]]; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >&2; then
        # Debian ships venv's ensurepip apart; as root, install it.
        if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            rm -rf "$venv"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >&2 \
                || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >&2; }
            python3 -m venv "$venv" >&2
        else
            echo "python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
fi
# Reinstall only when the pinned requirements changed since the last install.
stamp="$venv/.requirements"
if ! cmp -s "$requirements" "$stamp"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
    cp "$requirements" "$stamp"
fi
echo "$venv/bin/python"
