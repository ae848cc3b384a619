#!/usr/bin/env bash
# Stops the local paytrack stack that scripts/stack-up.sh started, and checks that none
# of it is left running.
#
# Why this exists: stack-up.sh daemonizes paytrack, nats-server and PostgreSQL, so a plain
# Ctrl-C stops nothing. This stops exactly the processes named in the stack's pid files
# (paytrack gets SIGTERM and up to 15 s to drain before SIGKILL), then looks for anything
# still alive from those processes' sessions or still using this repo's .dev/ and stops
# that too, failing if something survives.
#
# Usage: scripts/stack-down.sh [--purge]
#   --purge  also delete the stack's data (.dev except .dev/bin, and the PostgreSQL data
#            kept under /var/tmp when the repo was not reachable by the postgres user)
# Environment: PAYTRACK_PG_BIN (see ensure-postgres.sh), CARGO_TARGET_DIR.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dev="$repo/.dev"
run_dir="$dev/run"

purge=0
case "${1:-}" in
  --purge) purge=1 ;;
  "") ;;
  *)
    echo "usage: $0 [--purge]" >&2
    exit 2
    ;;
esac

pg_bin="${PAYTRACK_PG_BIN:-/usr/lib/postgresql/15/bin}"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
[[ "$target_dir" == /* ]] || target_dir="$repo/$target_dir"
paytrack_bin="$target_dir/debug/paytrack"
pg_data=""
if [[ -e "$dev/pg" || -L "$dev/pg" ]]; then
  pg_data="$(readlink -m "$dev/pg")"
fi

log() { printf 'stack-down: %s\n' "$*"; }

as_pg() {
  if [[ $EUID -eq 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# shellcheck source=scripts/lib/proc.sh
source "$repo/scripts/lib/proc.sh"

# wait_gone PID SECONDS: true once PID has exited, false on timeout.
wait_gone() {
  local pid="$1" tenths=$(($2 * 10))
  while alive "$pid"; do
    ((tenths-- > 0)) || return 1
    sleep 0.1
  done
}

# stop NAME PID SIGNAL SECONDS: signal, wait, then SIGKILL.
stop() {
  local name="$1" pid="$2" signal="$3" grace="$4"
  log "stopping $name (pid $pid, SIG$signal)"
  kill -s "$signal" "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" "$grace"; then
    log "$name still running after ${grace}s; sending SIGKILL"
    kill -s KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 5 || log "$name (pid $pid) survived SIGKILL"
  fi
}

# The pids we started. Each was made a session leader (setsid; pg_ctl does the same for
# the postmaster), so children they spawn can be found by session id afterwards. The
# postmaster's own children start sessions of their own, so they are noted one by one.
started=()
pg_children=()

# children_of PID: pids whose parent is PID.
children_of() {
  local dir stat fields
  for dir in /proc/[0-9]*; do
    read -r stat 2>/dev/null <"$dir/stat" || continue
    read -r -a fields <<<"${stat##*) }"
    if [[ "${fields[1]}" == "$1" ]]; then echo "${dir#/proc/}"; fi
  done
}

if pid="$(pid_of "$run_dir/paytrack.pid" paytrack)"; then
  started+=("$pid")
  stop paytrack "$pid" TERM 15
else
  log "paytrack: not running"
fi
rm -f "$run_dir/paytrack.pid"

if pid="$(pid_of "$run_dir/nats.pid" nats-server)"; then
  started+=("$pid")
  stop nats-server "$pid" TERM 15
else
  log "nats-server: not running"
fi
rm -f "$run_dir/nats.pid"

if [[ -n "$pg_data" ]] && pid="$(pid_of "$pg_data/postmaster.pid" postgres)"; then
  started+=("$pid")
  mapfile -t pg_children < <(children_of "$pid")
  log "stopping PostgreSQL (pid $pid, pg_ctl stop -m fast)"
  if ! { [[ -x "$pg_bin/pg_ctl" ]] \
    && as_pg "$pg_bin/pg_ctl" -D "$pg_data" stop -m fast -w -t 30 >/dev/null; }; then
    # SIGINT is PostgreSQL's fast shutdown, the same request pg_ctl makes.
    stop PostgreSQL "$pid" INT 30
  fi
  wait_gone "$pid" 5 || true
else
  log "PostgreSQL: not running"
fi

# leftovers: live processes that belong to what we started, or that are nats-server,
# postgres or paytrack processes using this repo's .dev/ (or its relocated PostgreSQL
# data, or this repo's paytrack binary). Prints "pid command" lines.
leftovers() {
  local dir pid stat fields comm cmd s mine
  for dir in /proc/[0-9]*; do
    pid="${dir#/proc/}"
    [[ "$pid" != "$$" ]] || continue
    read -r stat 2>/dev/null <"$dir/stat" || continue
    # After the ")" closing the command name: state ppid pgrp session ...
    read -r -a fields <<<"${stat##*) }"
    [[ "${fields[0]}" != Z ]] || continue
    mine=0
    comm="$(cat "$dir/comm" 2>/dev/null || true)"
    for s in "${started[@]}"; do
      if [[ "$pid" == "$s" || "${fields[3]}" == "$s" ]]; then mine=1; fi
    done
    for s in "${pg_children[@]}"; do
      if [[ "$pid" == "$s" && "$comm" == postgres ]]; then mine=1; fi
    done
    cmd="$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null || true)"
    case "$comm" in
      nats-server | postgres | paytrack)
        if [[ "$cmd" == *"$dev/"* || "$cmd" == *"$paytrack_bin "* ]] \
          || [[ -n "$pg_data" && "$cmd" == *"$pg_data"* ]]; then
          mine=1
        fi
        ;;
    esac
    if ((mine)); then printf '%s %s\n' "$pid" "${cmd:-[$comm]}"; fi
  done
}

indent() {
  local line
  while IFS= read -r line; do printf '  %s\n' "$line"; done <<<"$1"
}

left="$(leftovers)"
if [[ -n "$left" ]]; then
  log "still running, stopping:"
  indent "$left"
  while read -r pid _; do kill -s TERM "$pid" 2>/dev/null || true; done <<<"$left"
  while read -r pid _; do wait_gone "$pid" 5 || kill -s KILL "$pid" 2>/dev/null || true; done <<<"$left"
  sleep 0.5
  left="$(leftovers)"
  if [[ -n "$left" ]]; then
    log "error: could not stop:"
    indent "$left" >&2
    exit 1
  fi
fi
log "nothing of the stack is running"

if ((purge)); then
  if [[ -L "$dev/pg" ]]; then
    pg_base="$(dirname "$pg_data")"
    case "$pg_base" in
      /var/tmp/paytrack-*)
        log "removing $pg_base"
        rm -rf "$pg_base"
        ;;
    esac
  fi
  if [[ -d "$dev" ]]; then
    log "removing the stack's data in $dev (keeping $dev/bin)"
    find "$dev" -mindepth 1 -maxdepth 1 ! -name bin -exec rm -rf {} +
  fi
fi
