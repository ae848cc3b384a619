#!/usr/bin/env bash
# Makes sure headless Chromium and its WebDriver are on this machine.
#
# Why this exists: scripts/stack-smoke.sh checks the operator dashboard the way a person
# sees it, in a real browser: Chromium driven through chromedriver (WebDriver), because
# the dashboard's live WebSocket has to be given real time to deliver, which a one-shot
# `chromium --dump-dom` does not wait for reliably. A fresh Debian 12 machine has neither
# program, and Debian's packages are the only browser build this machine can install.
#
# Idempotent: with /usr/bin/chromium and /usr/bin/chromedriver present it does nothing.
# As root it installs Debian's `chromium` and `chromium-driver`; as anyone else it only
# says what is missing and fails.
# Environment: CHROMIUM (default /usr/bin/chromium), CHROMEDRIVER (default
# /usr/bin/chromedriver) name binaries to use instead; both must then exist.
set -euo pipefail

chromium="${CHROMIUM:-/usr/bin/chromium}"
chromedriver="${CHROMEDRIVER:-/usr/bin/chromedriver}"

log() { printf 'install-browser: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

missing=()
[[ -x "$chromium" ]] || missing+=(chromium)
[[ -x "$chromedriver" ]] || missing+=(chromium-driver)

if ((${#missing[@]})); then
  if [[ -n "${CHROMIUM:-}${CHROMEDRIVER:-}" ]]; then
    die "CHROMIUM=${CHROMIUM:-} / CHROMEDRIVER=${CHROMEDRIVER:-}: missing ${missing[*]}"
  fi
  [[ $EUID -eq 0 ]] || die "missing ${missing[*]}; install them as root: apt-get install chromium chromium-driver"
  log "installing ${missing[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  # The package lists may be absent or stale on a fresh machine; a failed install is
  # retried once after refreshing them.
  if ! apt-get install -y -q --no-install-recommends chromium chromium-driver >&2; then
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends chromium chromium-driver >&2
  fi
  [[ -x "$chromium" && -x "$chromedriver" ]] || die "installed, but $chromium or $chromedriver is still missing"
fi

log "$("$chromium" --version 2>/dev/null | head -n 1 || echo "chromium (version unknown)")"
log "$("$chromedriver" --version 2>/dev/null | head -n 1 || echo "chromedriver (version unknown)")"
