#!/usr/bin/env bash
# Installs what the console's tests need: node (18 or later, Debian 12 has 18) with npm (Debian's packages when
# missing, as root) and the client library's npm packages, exactly as
# clients/typescript/package-lock.json pins them (TypeScript, esbuild, ws,
# playwright-core). Headless Chromium itself comes from scripts/install-browser.sh.
#
# Idempotent: with node >= 18 and node_modules matching the lock file it does nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lib="$here/clients/typescript"

log() { printf 'install-console-tools: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

node_major() { node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/'; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1 || (($(node_major) < 18)); then
  [[ $EUID -eq 0 ]] || die "node >= 18 and npm are needed; install them as root: apt-get install nodejs npm"
  log "installing node and npm (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends nodejs npm >&2; then
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends nodejs npm >&2
  fi
  (($(node_major) >= 18)) || die "node $(node --version) is older than 18"
fi
log "node $(node --version), npm $(npm --version)"

# npm ci writes node_modules/.package-lock.json; when it holds every package of the
# lock file (but the optional ones of other platforms) at its version, the install
# is current.
stamp="$lib/node_modules/.package-lock.json"
if [[ -f "$stamp" ]] && node -e '
  const a = require(process.argv[1]).packages, b = require(process.argv[2]).packages;
  for (const k of Object.keys(a)) if (k && !a[k].optional && !b[k]) process.exit(1);
  for (const k of Object.keys(b)) if (k && (!a[k] || a[k].version !== b[k].version)) process.exit(1);
' "$lib/package-lock.json" "$stamp"; then
  log "clients/typescript/node_modules is current"
  exit 0
fi
log "npm ci in clients/typescript"
(cd "$lib" && npm ci --no-audit --no-fund >&2)
