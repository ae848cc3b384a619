#!/usr/bin/env bash
# Makes sure PostgreSQL 15 server binaries are on this machine and prints their directory.
#
# Why this exists: the local stack (scripts/stack-up.sh) and the integration tests start
# their own throwaway PostgreSQL from the server binaries (initdb, postgres, pg_ctl); they
# never use a system-wide cluster. A fresh Debian 12 machine may lack them, so when run as
# root this installs Debian's postgresql-15 without letting the package start a cluster.
#
# stdout: the bin directory (and nothing else), so callers can do
#   pg_bin="$(scripts/ensure-postgres.sh)"
# Environment: PAYTRACK_PG_BIN overrides the bin directory (default
# /usr/lib/postgresql/15/bin).
set -euo pipefail

pg_bin="${PAYTRACK_PG_BIN:-/usr/lib/postgresql/15/bin}"

log() { printf 'ensure-postgres: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
have_binaries() { [[ -x "$pg_bin/postgres" && -x "$pg_bin/initdb" && -x "$pg_bin/pg_ctl" ]]; }

install_postgresql() {
  # policy-rc.d exit code 101 tells invoke-rc.d "not allowed": the package's postinst then
  # creates its default cluster but does not start it. An existing policy is left alone.
  local policy=/usr/sbin/policy-rc.d added_policy=""
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    added_policy=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql-15
  } >&2 || rc=$?
  if [[ -n "$added_policy" ]]; then rm -f "$policy"; fi
  [[ $rc -eq 0 ]] || die "apt-get install postgresql-15 failed (exit $rc)"

  # Where a service manager ignored the policy anyway, stop what the package started:
  # paytrack never uses the system cluster and its port 5432 should stay free.
  if command -v pg_lsclusters >/dev/null 2>&1; then
    local ver cluster _port status _rest
    while read -r ver cluster _port status _rest; do
      if [[ "$status" == online* ]]; then
        log "stopping the package's cluster $ver/$cluster"
        pg_ctlcluster "$ver" "$cluster" stop >&2 || true
      fi
    done < <(pg_lsclusters -h 2>/dev/null || true)
  fi
}

if ! have_binaries; then
  if [[ -n "${PAYTRACK_PG_BIN:-}" ]]; then
    die "PAYTRACK_PG_BIN=$pg_bin has no postgres/initdb/pg_ctl"
  fi
  [[ $EUID -eq 0 ]] || die "PostgreSQL 15 server binaries missing in $pg_bin; install postgresql-15 as root"
  log "PostgreSQL 15 server binaries missing; installing postgresql-15"
  install_postgresql
  have_binaries || die "postgresql-15 installed, but $pg_bin still lacks postgres/initdb/pg_ctl"
fi

# initdb and postgres refuse to run as root, so stack-up runs them as this user.
if [[ $EUID -eq 0 ]] && ! id -u postgres >/dev/null 2>&1; then
  log "creating the postgres system user"
  useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

echo "$pg_bin"
