#!/usr/bin/env bash
# Brings up the whole local paytrack stack on this machine and writes .dev/stack.env.
#
# Why this exists: one command should give a developer (or a demo) a working mesh on a
# fresh machine: NATS with JetStream and PostgreSQL started privately under .dev/, the
# `paytrack` binary running all four services plus the traffic simulator, and a sourceable
# file with the URLs, the dev tenant's secrets and a dashboard token. Everything it starts
# is listed in a pid file, so scripts/stack-down.sh can stop exactly that and nothing else.
#
# Running it again while the stack is up is harmless: a component whose pid file names a
# live process is left alone; .dev/secrets.env is generated once and reused.
#
# Environment (all optional):
#   PAYTRACK_DEV_NATS_PORT          NATS client port              (14222)
#   PAYTRACK_DEV_NATS_MONITOR_PORT  NATS HTTP monitoring port     (18222)
#   PAYTRACK_DEV_PG_PORT            PostgreSQL port               (15432)
#   PAYTRACK_DEV_INGEST_PORT        ingest HTTP port              (18080)
#   PAYTRACK_DEV_EDGE_PORT          ws-edge HTTP/WebSocket port   (18081)
#   PAYTRACK_DEV_READY_TIMEOUT      seconds to wait for /readyz   (60)
#   DEV_TENANT                      the tenant set up for local use (dev)
#   OTHER_TENANT                    a second tenant, to try isolation by hand (other)
#   PAYTRACK_STACK_INFRA_ONLY=1     start only NATS and PostgreSQL: no cargo build, no
#                                   paytrack process, DEV_TOKEN left empty in stack.env
#   PAYTRACK_PG_BIN                 PostgreSQL server bin dir (see ensure-postgres.sh)
# Change ports only while the stack is down: running components keep the ports they have.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dev="$repo/.dev"
run_dir="$dev/run"
log_dir="$dev/logs"

nats_port="${PAYTRACK_DEV_NATS_PORT:-14222}"
nats_monitor_port="${PAYTRACK_DEV_NATS_MONITOR_PORT:-18222}"
pg_port="${PAYTRACK_DEV_PG_PORT:-15432}"
ingest_port="${PAYTRACK_DEV_INGEST_PORT:-18080}"
edge_port="${PAYTRACK_DEV_EDGE_PORT:-18081}"
simulator_port="${PAYTRACK_DEV_SIMULATOR_PORT:-18082}"
ready_timeout="${PAYTRACK_DEV_READY_TIMEOUT:-60}"
dev_tenant="${DEV_TENANT:-dev}"
other_tenant="${OTHER_TENANT:-other}"
infra_only="${PAYTRACK_STACK_INFRA_ONLY:-0}"

nats_url="nats://127.0.0.1:$nats_port"
database_url="postgres://paytrack:paytrack@127.0.0.1:$pg_port/paytrack"
ingest_url="http://127.0.0.1:$ingest_port"
edge_url="http://127.0.0.1:$edge_port"
simulator_url="http://127.0.0.1:$simulator_port"
jwt_issuer="paytrack"
jwt_audience="paytrack"

log() { printf 'stack-up: %s\n' "$*"; }
die() { printf 'stack-up: error: %s\n' "$*" >&2; exit 1; }

on_exit() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    printf 'stack-up: failed (exit %d); scripts/stack-down.sh stops whatever was started\n' "$rc" >&2
  fi
}
trap on_exit EXIT

for port in "$nats_port" "$nats_monitor_port" "$pg_port" "$ingest_port" "$edge_port"; do
  if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    die "invalid port: $port"
  fi
done
[[ "$dev_tenant" =~ ^[a-z0-9][a-z0-9_-]*$ ]] || die "invalid DEV_TENANT: $dev_tenant"
[[ "$other_tenant" =~ ^[a-z0-9][a-z0-9_-]*$ && "$other_tenant" != "$dev_tenant" ]] \
  || die "invalid OTHER_TENANT (must differ from DEV_TENANT): $other_tenant"
command -v curl >/dev/null || die "curl is required"
command -v openssl >/dev/null || die "openssl is required"

# shellcheck source=scripts/lib/proc.sh
source "$repo/scripts/lib/proc.sh"
# shellcheck source=scripts/lib/stack-env.sh
source "$repo/scripts/lib/stack-env.sh"

# pid_alive FILE COMM: FILE names a live process called COMM.
pid_alive() { pid_of "$@" >/dev/null; }

# initdb and postgres refuse to run as root: as root, run them as the postgres user,
# from / because that user may not be allowed into the current directory.
as_pg() {
  if [[ $EUID -eq 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

tail_log() {
  if [[ -f "$1" ]]; then tail -n "${2:-40}" "$1" >&2; fi
}

mkdir -p "$dev" "$run_dir" "$log_dir"

# --- tools ---------------------------------------------------------------------------
nats_bin="$(bash "$repo/scripts/install-nats-server.sh")"
pg_bin="$(bash "$repo/scripts/ensure-postgres.sh")"
psql_bin="$pg_bin/psql"
[[ -x "$psql_bin" ]] || psql_bin="$(command -v psql)" || die "psql not found"

# --- dev secrets (generated once) --------------------------------------------------------
secrets_file="$dev/secrets.env"
if [[ ! -s "$secrets_file" ]]; then
  log "generating dev secrets in $secrets_file"
  (
    umask 077
    {
      echo "# Local development secrets for the dev tenant; generated once by stack-up.sh."
      echo "PAYTRACK_JWT_SECRET=$(openssl rand -hex 32)"
      # Standard Webhooks form: whsec_ + base64 of the key (24 bytes: 32 chars, no padding).
      echo "WEBHOOK_SECRET_STDWEBHOOKS=whsec_$(openssl rand -base64 24)"
      # Provider-style secrets, hex after the prefix: valid whichever way a verifier reads them.
      echo "WEBHOOK_SECRET_RAZORPAY=whsec_$(openssl rand -hex 24)"
      echo "WEBHOOK_SECRET_STRIPE=whsec_$(openssl rand -hex 24)"
      echo "PUSH_API_KEY=pk_dev_$(openssl rand -hex 24)"
    } >"$secrets_file.tmp"
    mv -f "$secrets_file.tmp" "$secrets_file"
  )
fi
# shellcheck source=/dev/null
source "$secrets_file"
for key in PAYTRACK_JWT_SECRET WEBHOOK_SECRET_STDWEBHOOKS WEBHOOK_SECRET_RAZORPAY \
  WEBHOOK_SECRET_STRIPE PUSH_API_KEY; do
  [[ -n "${!key:-}" ]] || die "$key missing in $secrets_file (delete the file to regenerate it)"
done
# The second tenant's secret, added to secrets files made before it existed.
if [[ -z "${OTHER_WEBHOOK_SECRET_STDWEBHOOKS:-}" ]]; then
  OTHER_WEBHOOK_SECRET_STDWEBHOOKS="whsec_$(openssl rand -base64 24)"
  echo "OTHER_WEBHOOK_SECRET_STDWEBHOOKS=$OTHER_WEBHOOK_SECRET_STDWEBHOOKS" >>"$secrets_file"
fi
# The simulator's API token (it signs genuine webhooks), added to older secrets files.
if [[ -z "${SIMULATOR_TOKEN:-}" ]]; then
  SIMULATOR_TOKEN="sim_$(openssl rand -hex 24)"
  echo "SIMULATOR_TOKEN=$SIMULATOR_TOKEN" >>"$secrets_file"
fi

# --- NATS users (generated once) ---------------------------------------------------------
# One password per user of nats/auth.conf (generated from nats/src/auth.rs). nats-server
# reads them from its environment, paytrack from the settings of the same names.
nats_users_file="$dev/nats-users.env"
nats_password_keys=(PAYTRACK_NATS_INGEST_PASSWORD PAYTRACK_NATS_RECONCILER_PASSWORD
  PAYTRACK_NATS_PROJECTOR_PASSWORD PAYTRACK_NATS_EDGE_PASSWORD PAYTRACK_NATS_READER_PASSWORD
  PAYTRACK_NATS_ADMIN_PASSWORD)
if [[ ! -s "$nats_users_file" ]]; then
  log "generating NATS user passwords in $nats_users_file"
  (
    umask 077
    {
      echo "# Local NATS user passwords (nats/auth.conf); generated once by stack-up.sh."
      # Letters and digits, starting with a letter: nats-server reads them as bare strings.
      for key in "${nats_password_keys[@]}"; do echo "$key=p$(openssl rand -hex 24)"; done
    } >"$nats_users_file.tmp"
    mv -f "$nats_users_file.tmp" "$nats_users_file"
  )
fi
# shellcheck source=/dev/null
source "$nats_users_file"
# The tenant readers of nats/auth.conf (reader-dev, reader-other: LOCAL_TENANT_READERS in
# nats/src/auth.rs), added to files made before they existed.
for key in PAYTRACK_NATS_READER_PASSWORD_dev PAYTRACK_NATS_READER_PASSWORD_other; do
  if [[ -z "${!key:-}" ]]; then
    printf -v "$key" '%s' "p$(openssl rand -hex 24)"
    echo "$key=${!key}" >>"$nats_users_file"
  fi
  nats_password_keys+=("$key")
done
for key in "${nats_password_keys[@]}"; do
  [[ "${!key:-}" =~ ^[A-Za-z][A-Za-z0-9]*$ ]] \
    || die "$key missing or malformed in $nats_users_file (delete the file to regenerate it)"
  export "${key?}"
done

# --- NATS ------------------------------------------------------------------------------
nats_log="$log_dir/nats.log"
nats_pidfile="$run_dir/nats.pid"
nats_health="http://127.0.0.1:$nats_monitor_port/healthz?js-enabled-only=true"
if pid_alive "$nats_pidfile" nats-server; then
  log "nats-server already running (pid $(head -n 1 "$nats_pidfile"))"
else
  rm -f "$nats_pidfile"
  log "starting nats-server on 127.0.0.1:$nats_port"
  printf '=== %s stack-up: starting nats-server\n' "$(date -u +%FT%TZ)" >>"$nats_log"
  # From the repo root: nats/local.conf keeps JetStream's store_dir relative (.dev/nats).
  (
    cd "$repo"
    exec setsid nohup "$nats_bin" -c "$repo/nats/local.conf" -a 127.0.0.1 \
      -p "$nats_port" -m "$nats_monitor_port" --pid "$nats_pidfile" \
      >>"$nats_log" 2>&1 </dev/null
  ) &
  nats_pid=$!
  for ((i = 0; ; i++)); do
    if [[ -s "$nats_pidfile" ]] && curl -fsS --max-time 2 -o /dev/null "$nats_health" 2>/dev/null; then
      break
    fi
    if ! alive "$nats_pid" || ((i >= 100)); then
      tail_log "$nats_log"
      die "nats-server did not become healthy at $nats_health"
    fi
    sleep 0.2
  done
  log "nats-server ready (pid $(head -n 1 "$nats_pidfile"))"
fi

# --- PostgreSQL --------------------------------------------------------------------------
# The data dir, the socket dir and the server log must be reachable by the postgres user
# when we run as root. A repo under a private directory (say mktemp -d, mode 700) is not,
# and a deep repo path can make the socket path exceed the 107-byte limit of Unix sockets.
# In those cases all three live under /var/tmp/paytrack-<hash of the repo path>/ and
# .dev/pg and .dev/logs/postgres.log are symlinks to them; stack-down.sh follows the links.
socket_fits() { local s="$1/.s.PGSQL.$pg_port"; ((${#s} < 100)); }
if [[ -L "$dev/pg" ]]; then
  pg_base="$(dirname "$(readlink -m "$dev/pg")")"
  pg_outside=1
elif [[ -d "$dev/pg" ]]; then
  pg_outside=0
elif [[ $EUID -eq 0 ]] && ! { as_pg test -x "$run_dir" && as_pg test -x "$log_dir"; }; then
  pg_outside=1
elif ! socket_fits "$run_dir/pg"; then
  pg_outside=1
else
  pg_outside=0
fi

if ((pg_outside)); then
  pg_base="${pg_base:-/var/tmp/paytrack-$(printf '%s' "$repo" | sha256sum | cut -c1-12)}"
  if [[ -e "$pg_base" ]]; then
    [[ -d "$pg_base" && ! -L "$pg_base" && -O "$pg_base" ]] \
      || die "$pg_base exists but is not a directory owned by $(id -un); remove it"
  else
    mkdir -m 0711 "$pg_base"
  fi
  pg_data="$pg_base/pg"
  pg_sock="$pg_base/run"
  pg_log="$pg_base/postgres.log"
  mkdir -p "$pg_data"
  ln -sfn "$pg_data" "$dev/pg"
  ln -sfn "$pg_log" "$log_dir/postgres.log"
  log "PostgreSQL data lives in $pg_base (.dev/pg links there): the repo is out of"
  log "  the postgres user's reach, or its path is too long for a Unix socket"
else
  pg_data="$dev/pg"
  pg_sock="$run_dir/pg"
  pg_log="$log_dir/postgres.log"
  mkdir -p "$pg_data"
fi
mkdir -p "$pg_sock"
touch "$pg_log"
if [[ $EUID -eq 0 ]]; then
  chown postgres:postgres "$pg_data" "$pg_sock" "$pg_log"
fi
chmod 0700 "$pg_data"

if [[ ! -f "$pg_data/PG_VERSION" ]]; then
  log "initializing PostgreSQL cluster in $pg_data"
  as_pg "$pg_bin/initdb" -D "$pg_data" -A trust -U postgres --encoding=UTF8 --no-locale \
    >"$log_dir/initdb.log" 2>&1 || { tail_log "$log_dir/initdb.log"; die "initdb failed"; }
fi

# orphaned_pg_backends: live PostgreSQL child processes whose postmaster is gone.
orphaned_pg_backends() {
  local dir stat fields parent_comm found=1
  for dir in /proc/[0-9]*; do
    [[ "$(cat "$dir/comm" 2>/dev/null || true)" == postgres ]] || continue
    read -r stat 2>/dev/null <"$dir/stat" || continue
    read -r -a fields <<<"${stat##*) }"
    [[ "${fields[0]}" != Z ]] || continue
    [[ "$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null || true)" == "postgres: "* ]] || continue
    parent_comm="$(cat "/proc/${fields[1]}/comm" 2>/dev/null || true)"
    if [[ "$parent_comm" != postgres ]]; then
      echo "${dir#/proc/}"
      found=0
    fi
  done
  return "$found"
}

pg_pidfile="$pg_data/postmaster.pid"
if pid_alive "$pg_pidfile" postgres; then
  log "PostgreSQL already running (pid $(head -n 1 "$pg_pidfile"))"
else
  # A postmaster that died stays a zombie until init reaps it (some container inits do so
  # only now and then), and PostgreSQL takes its stale lock files for a live server. With
  # the postmaster surely dead and none of its backends left, the lock files can go.
  old_pid="$(head -n 1 "$pg_pidfile" 2>/dev/null || true)"
  if [[ "$old_pid" =~ ^[0-9]+$ && -d "/proc/$old_pid" ]] && ! alive "$old_pid"; then
    if orphans="$(orphaned_pg_backends)"; then
      die "PostgreSQL backends without a postmaster still run (pids: ${orphans//$'\n'/ }); stop them first"
    fi
    log "removing stale postmaster.pid (pid $old_pid exited but was never reaped)"
    rm -f "$pg_pidfile"
    # The socket's lock file names the same dead pid.
    sock_lock="$pg_sock/.s.PGSQL.$pg_port.lock"
    if [[ "$(head -n 1 "$sock_lock" 2>/dev/null || true)" == "$old_pid" ]]; then
      rm -f "$sock_lock" "$pg_sock/.s.PGSQL.$pg_port"
    fi
  fi
  log "starting PostgreSQL on 127.0.0.1:$pg_port"
  as_pg "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_log" -w -t 60 \
    -o "-p $pg_port -k '$pg_sock' -c listen_addresses=127.0.0.1" start >/dev/null \
    || { tail_log "$pg_log"; die "PostgreSQL did not start"; }
  log "PostgreSQL ready (pid $(head -n 1 "$pg_pidfile"))"
fi

psql_admin() {
  PGCONNECT_TIMEOUT=5 "$psql_bin" -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres \
    -X -q -t -A -v ON_ERROR_STOP=1 "$@"
}
# CREATEDB as well, so sqlx-style tests can make a database per test against this server.
psql_admin -c "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'paytrack') THEN
    CREATE ROLE paytrack LOGIN CREATEDB PASSWORD 'paytrack';
  END IF;
END \$\$;"
if [[ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'paytrack'")" != "1" ]]; then
  psql_admin -c "CREATE DATABASE paytrack OWNER paytrack"
fi

# --- paytrack (all four services + simulator in one process) ----------------------------
token=""
other_token=""
if [[ "$infra_only" == "1" ]]; then
  log "PAYTRACK_STACK_INFRA_ONLY=1: not building or starting paytrack"
else
  target_dir="${CARGO_TARGET_DIR:-$repo/target}"
  [[ "$target_dir" == /* ]] || target_dir="$repo/$target_dir"
  paytrack_bin="$target_dir/debug/paytrack"
  paytrack_pidfile="$run_dir/paytrack.pid"
  paytrack_log="$log_dir/paytrack.log"
  paytrack_env=(
    PAYTRACK_NATS_URL="$nats_url"
    PAYTRACK_NATS_INGEST_PASSWORD="$PAYTRACK_NATS_INGEST_PASSWORD"
    PAYTRACK_NATS_RECONCILER_PASSWORD="$PAYTRACK_NATS_RECONCILER_PASSWORD"
    PAYTRACK_NATS_PROJECTOR_PASSWORD="$PAYTRACK_NATS_PROJECTOR_PASSWORD"
    PAYTRACK_NATS_EDGE_PASSWORD="$PAYTRACK_NATS_EDGE_PASSWORD"
    PAYTRACK_DATABASE_URL="$database_url"
    PAYTRACK_INGEST_LISTEN="127.0.0.1:$ingest_port"
    PAYTRACK_EDGE_LISTEN="127.0.0.1:$edge_port"
    PAYTRACK_JWT_SECRET="$PAYTRACK_JWT_SECRET"
    PAYTRACK_JWT_ISSUER="$jwt_issuer"
    PAYTRACK_JWT_AUDIENCE="$jwt_audience"
    PAYTRACK_WEBHOOK_SECRETS="$(webhook_secrets_setting)"
    # The backend key is given by its SHA-256 only: the settings never hold it.
    PAYTRACK_API_KEY_HASHES="$dev_tenant=$(printf %s "$PUSH_API_KEY" | sha256sum | cut -d' ' -f1)"
    PAYTRACK_SIMULATOR_TENANT="$dev_tenant"
    PAYTRACK_SIMULATOR_LISTEN="127.0.0.1:$simulator_port"
    # Every call to the simulator's API carries it: ingest's and the reconciler's too.
    PAYTRACK_SIMULATOR_TOKEN="$SIMULATOR_TOKEN"
    # Payments created through the API are initiated at the simulator's sandbox
    # gateways, which then send each provider's webhooks.
    PAYTRACK_PROVIDER_URLS="$(gateway_urls_setting "$simulator_url")"
    # The stuck-payment sweep asks the same gateways' status-query API, so a payment
    # whose outcome webhook never came is settled (or alerted on) locally too.
    PAYTRACK_RECONCILER_STATUS_QUERY_URLS="$(gateway_urls_setting "$simulator_url")"
  )

  if pid_alive "$paytrack_pidfile" paytrack; then
    log "paytrack already running (pid $(head -n 1 "$paytrack_pidfile"))"
  else
    rm -f "$paytrack_pidfile"
    log "building paytrack"
    (cd "$repo" && cargo build --bin paytrack)
    [[ -x "$paytrack_bin" ]] || die "cargo build succeeded but $paytrack_bin is missing"
    # The layout step: streams and KV buckets are created and updated by the NATS admin
    # only; the services verify them at start and refuse to run on a wrong one. The
    # tenant readers of nats/auth.conf get their mirrors in their own accounts.
    log "applying the JetStream layout as the NATS admin"
    env "${paytrack_env[@]}" PAYTRACK_NATS_ADMIN_PASSWORD="$PAYTRACK_NATS_ADMIN_PASSWORD" \
      "$paytrack_bin" layout --tenant-reader dev --tenant-reader other >>"$paytrack_log" 2>&1 \
      || { tail_log "$paytrack_log" 30; die "paytrack layout failed (log: $paytrack_log)"; }
    log "starting paytrack (ingest $ingest_url, edge $edge_url); migrations run at start-up"
    printf '=== %s stack-up: starting paytrack\n' "$(date -u +%FT%TZ)" >>"$paytrack_log"
    (
      cd "$repo"
      exec env "${paytrack_env[@]}" setsid nohup "$paytrack_bin" run --simulate \
        >>"$paytrack_log" 2>&1 </dev/null
    ) &
    echo "$!" >"$paytrack_pidfile"
  fi

  paytrack_pid="$(head -n 1 "$paytrack_pidfile")"
  deadline=$((SECONDS + ready_timeout))
  until curl -fsS --max-time 2 -o /dev/null "$ingest_url/readyz" 2>/dev/null \
    && curl -fsS --max-time 2 -o /dev/null "$edge_url/readyz" 2>/dev/null; do
    if ! alive "$paytrack_pid"; then
      tail_log "$paytrack_log" 60
      die "paytrack exited during start-up (log: $paytrack_log)"
    fi
    if ((SECONDS >= deadline)); then
      tail_log "$paytrack_log" 60
      die "paytrack not ready after ${ready_timeout}s (log: $paytrack_log)"
    fi
    sleep 0.5
  done
  log "paytrack ready (pid $paytrack_pid)"

  token="$(env "${paytrack_env[@]}" "$paytrack_bin" mint-token --tenant "$dev_tenant" \
    --sub dev-operator --ttl-secs 604800)"
  token="${token//[[:space:]]/}"
  [[ "$token" =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]] \
    || die "mint-token did not print a JWT"
  other_token="$(env "${paytrack_env[@]}" "$paytrack_bin" mint-token --tenant "$other_tenant" \
    --sub other-operator --ttl-secs 604800)"
  other_token="${other_token//[[:space:]]/}"
fi

# --- .dev/stack.env ------------------------------------------------------------------------
# The console calls the REST API (ingest) from the browser; `api` tells it where.
dashboard_url="$edge_url/?api=$ingest_url"
[[ -z "$token" ]] || dashboard_url="$edge_url/?token=$token&api=$ingest_url"
stack_env="$dev/stack.env"
(
  umask 077
  render_stack_env >"$stack_env.tmp"
  mv -f "$stack_env.tmp" "$stack_env"
)

cat <<EOF

paytrack local stack is up
  NATS        $nats_url  (monitoring http://127.0.0.1:$nats_monitor_port; users in nats/auth.conf,
              admin and reader passwords in .dev/stack.env)
  PostgreSQL  $database_url
  ingest      $ingest_url
  edge        $edge_url  (WebSocket ws://127.0.0.1:$edge_port/v1/ws)
  simulator   $simulator_url  (sandbox providers: stdwebhooks, razorpay, stripe)
  dashboard   ${dashboard_url}
  logs        $log_dir/
Load the settings into a shell with:  source .dev/stack.env
Then the CLI works as is, e.g.:       paytrack trigger stuck_pending   (docs/cli.md)
Stop everything with:                 scripts/stack-down.sh   (or make down)
EOF
if [[ "$infra_only" == "1" ]]; then
  echo "(infra only: paytrack was not started, so ingest/edge are not listening)"
fi
