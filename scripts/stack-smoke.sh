#!/usr/bin/env bash
# End-to-end smoke test of the local stack: the path the README walks a developer through,
# run for real on this machine and checked the way a person would see it.
#
# Why this exists: unit and integration tests start their own servers from code; nothing
# else proves that `make up` works on this machine, that .dev/stack.env says what the
# contract says, that a signed webhook becomes a REST-visible status, and that the
# operator dashboard shows it live in a real browser. This script does all of that:
#
#   1. copies the repo (without .git, target/ and .dev/) into a fresh private directory
#      and runs its scripts/stack-up.sh on ports of its own, so a dev stack of this repo
#      (which keeps its pid files, NATS store and PostgreSQL data in .dev/) is never
#      touched, whether it is running or not. The copy's `cargo build` is redirected to
#      this repo, whose freshly built binary the copy then runs;
#   2. sources the copy's .dev/stack.env and checks every documented key is non-empty;
#   3. sends `pending` then `succeeded` webhooks for a new payment with
#      scripts/send-webhook.sh and polls GET /v1/payments/<id> until it is succeeded at
#      version 2; then creates a payment with POST /v1/payments (the README's command),
#      checks it was routed and initiated at the simulator's sandbox gateway, and polls
#      until the simulator's own webhooks settle it;
#   4. fetches $DASHBOARD_URL with curl (200, the dashboard page), then loads it in
#      headless Chromium through chromedriver (WebDriver, driven from Python's standard
#      library) and waits until the rendered table shows the payment as succeeded, the
#      connection is live and the view is "current" (a heartbeat confirmed the position).
#      It also checks the token appears nowhere on the page, that a dropped socket is
#      resumed gap-free (recovered) and that a forged prev_seq gap is detected and healed;
#   5. runs scripts/stack-down.sh --purge and checks no process of the stack is left.
#
# The stack is always stopped on exit, pass or fail; on failure the tails of the stack's
# logs are printed and the browser's DOM, screenshot and driver log are kept.
#
# Usage: scripts/stack-smoke.sh        (scripts/install-browser.sh installs Chromium)
# Environment (all optional):
#   PAYTRACK_SMOKE_NATS_PORT (24222), PAYTRACK_SMOKE_NATS_MONITOR_PORT (28222),
#   PAYTRACK_SMOKE_PG_PORT (25432), PAYTRACK_SMOKE_INGEST_PORT (28080),
#   PAYTRACK_SMOKE_EDGE_PORT (28081), PAYTRACK_SMOKE_SIMULATOR_PORT (28082),
#   PAYTRACK_SMOKE_WEBDRIVER_PORT (29515)
#   PAYTRACK_SMOKE_TIMEOUT       seconds to wait for each asynchronous outcome (30)
#   PAYTRACK_SMOKE_HEARTBEAT_MS  the smoke stack's edge heartbeat, so that "current" is
#                                reached quickly (2000; the product default is 15000)
#   PAYTRACK_SMOKE_KEEP=1        keep the scratch directory even when the test passes
#   CHROMIUM, CHROMEDRIVER       browser and driver (/usr/bin/chromium, /usr/bin/chromedriver)
#   CARGO_TARGET_DIR             where this repo's build output is (as for cargo)
# Ends with a line "smoke: N passed, 0 failed"; exits non-zero on the first failure.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

nats_port="${PAYTRACK_SMOKE_NATS_PORT:-24222}"
nats_monitor_port="${PAYTRACK_SMOKE_NATS_MONITOR_PORT:-28222}"
pg_port="${PAYTRACK_SMOKE_PG_PORT:-25432}"
ingest_port="${PAYTRACK_SMOKE_INGEST_PORT:-28080}"
edge_port="${PAYTRACK_SMOKE_EDGE_PORT:-28081}"
simulator_port="${PAYTRACK_SMOKE_SIMULATOR_PORT:-28082}"
webdriver_port="${PAYTRACK_SMOKE_WEBDRIVER_PORT:-29515}"
timeout="${PAYTRACK_SMOKE_TIMEOUT:-30}"
heartbeat_ms="${PAYTRACK_SMOKE_HEARTBEAT_MS:-2000}"
chromium="${CHROMIUM:-/usr/bin/chromium}"
chromedriver="${CHROMEDRIVER:-/usr/bin/chromedriver}"
python="${PYTHON:-python3}"

started_at=$SECONDS
passed=0
phase="start"
work=""
root=""
stack_started=0
stack_stopped=0
driver_pid=""

log() { printf 'smoke: %s\n' "$*"; }
die() {
  printf 'smoke: FAILED (%s): %s\n' "$phase" "$*" >&2
  exit 1
}
ok() {
  passed=$((passed + 1))
  printf 'smoke: ok %d - %s\n' "$passed" "$*"
}

for port in "$nats_port" "$nats_monitor_port" "$pg_port" "$ingest_port" "$edge_port" "$simulator_port" "$webdriver_port"; do
  if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then die "invalid port: $port"; fi
done
[[ "$timeout" =~ ^[0-9]+$ && "$heartbeat_ms" =~ ^[0-9]+$ ]] \
  || die "PAYTRACK_SMOKE_TIMEOUT and PAYTRACK_SMOKE_HEARTBEAT_MS must be integers"

# shellcheck source=scripts/lib/proc.sh
source "$repo/scripts/lib/proc.sh"

# port_busy PORT: something accepts connections on 127.0.0.1:PORT.
port_busy() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# stack_processes: "pid command" of every live process that belongs to the smoke stack:
# anything whose command line names the scratch directory or the PostgreSQL data the
# copy relocated under /var/tmp, and any process in the session of a pid recorded below.
declare -a stack_pids=()
stack_processes() {
  local dir pid stat fields cmd mine s pg_base=""
  if [[ -L "$root/.dev/pg" ]]; then pg_base="$(dirname "$(readlink -m "$root/.dev/pg")")"; fi
  for dir in /proc/[0-9]*; do
    pid="${dir#/proc/}"
    [[ "$pid" != "$$" && "$pid" != "$BASHPID" ]] || continue
    read -r stat 2>/dev/null <"$dir/stat" || continue
    read -r -a fields <<<"${stat##*) }"
    [[ "${fields[0]}" != Z ]] || continue
    cmd="$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null || true)"
    [[ -n "$cmd" ]] || continue
    mine=0
    if [[ "$cmd" == *"$root/"* ]] || [[ -n "$pg_base" && "$cmd" == *"$pg_base/"* ]]; then mine=1; fi
    for s in "${stack_pids[@]}"; do
      if [[ "$pid" == "$s" || "${fields[3]}" == "$s" ]]; then mine=1; fi
    done
    # Our own helpers (this script's subshells, grep, the browser) are not the stack.
    case "$(cat "$dir/comm" 2>/dev/null || true)" in
      nats-server | postgres | paytrack | pg_ctl) ;;
      *) mine=0 ;;
    esac
    if ((mine)); then printf '%s %s\n' "$pid" "$cmd"; fi
  done
}

# record_stack_pids: the pids the stack's pid files name, and the postmaster's children
# (its backends run in sessions of their own), for the leftover check.
record_stack_pids() {
  local file pid dir stat fields postmaster=""
  for file in "$root/.dev/run/paytrack.pid" "$root/.dev/run/nats.pid" "$root/.dev/pg/postmaster.pid"; do
    pid="$(head -n 1 "$file" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]]; then stack_pids+=("$pid"); fi
    if [[ "$file" == */postmaster.pid && "$pid" =~ ^[0-9]+$ ]]; then postmaster="$pid"; fi
  done
  [[ -n "$postmaster" ]] || return 0
  for dir in /proc/[0-9]*; do
    read -r stat 2>/dev/null <"$dir/stat" || continue
    read -r -a fields <<<"${stat##*) }"
    if [[ "${fields[1]}" == "$postmaster" ]]; then stack_pids+=("${dir#/proc/}"); fi
  done
}

print_logs() {
  local f
  [[ -n "$root" && -d "$root/.dev/logs" ]] || return 0
  for f in "$root"/.dev/logs/*.log; do
    [[ -e "$f" ]] || continue
    printf '\n----- tail of %s -----\n' "${f#"$root"/}" >&2
    # The logs never hold the dashboard token, but redact any JWT-looking string anyway.
    tail -n 60 "$f" 2>/dev/null | sed -E 's/eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/<jwt>/g' >&2 || true
  done
  echo >&2
}

stop_driver() {
  local dir stat fields pid
  [[ -n "$driver_pid" ]] || return 0
  # chromedriver was started as a session leader: stop it and whatever browser it left.
  kill -s TERM "$driver_pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do alive "$driver_pid" || break; sleep 0.1; done
  for dir in /proc/[0-9]*; do
    pid="${dir#/proc/}"
    read -r stat 2>/dev/null <"$dir/stat" || continue
    read -r -a fields <<<"${stat##*) }"
    [[ "${fields[0]}" != Z ]] || continue
    if [[ "${fields[3]}" == "$driver_pid" ]] \
      || [[ "$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null || true)" == *"--user-data-dir=$work/chromium-profile"* ]]; then
      kill -s KILL "$pid" 2>/dev/null || true
    fi
  done
  kill -s KILL "$driver_pid" 2>/dev/null || true
  driver_pid=""
}

stack_down() {
  local out rc=0
  stack_stopped=1
  out="$(env -u CARGO_TARGET_DIR bash "$root/scripts/stack-down.sh" --purge 2>&1)" || rc=$?
  printf '%s\n' "$out" | sed 's/^/  /'
  return "$rc"
}

on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop_driver
  if ((rc != 0)); then
    printf 'smoke: failed after %ds\n' "$((SECONDS - started_at))" >&2
    ((stack_started)) && print_logs
  fi
  if ((stack_started && !stack_stopped)); then
    log "stopping the smoke stack"
    record_stack_pids
    stack_down
    left="$(stack_processes)"
    if [[ -n "$left" ]]; then
      printf 'smoke: still running after stack-down:\n%s\n' "$left" >&2
      rc=1
    fi
  fi
  if [[ -n "$work" && -d "$work" ]]; then
    if ((rc != 0)) && [[ -n "$(ls -A "$work/artifacts" 2>/dev/null)" ]]; then
      # Keep what helps to debug the browser check, and nothing with a secret in it.
      find "$work" -mindepth 1 -maxdepth 1 ! -name artifacts -exec rm -rf {} +
      sed -i -E 's/eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/<jwt>/g' "$work"/artifacts/*.log 2>/dev/null
      log "browser artifacts (DOM, screenshot, driver log) kept in $work/artifacts"
    elif [[ "${PAYTRACK_SMOKE_KEEP:-0}" == "1" ]]; then
      log "scratch directory kept: $work"
    else
      rm -rf "$work"
    fi
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- preflight -------------------------------------------------------------------------------
phase="preflight"
for tool in curl openssl "$python" cargo; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
[[ -x "$chromium" ]] || die "$chromium missing: run scripts/install-browser.sh"
[[ -x "$chromedriver" ]] || die "$chromedriver missing: run scripts/install-browser.sh"
for port in "$nats_port" "$nats_monitor_port" "$pg_port" "$ingest_port" "$edge_port" "$simulator_port" "$webdriver_port"; do
  if port_busy "$port"; then
    die "port $port is already in use on 127.0.0.1 (a smoke stack left running? override with PAYTRACK_SMOKE_*_PORT)"
  fi
done

# --- 1. a private copy of the repo, and its stack on the smoke ports ---------------------------
phase="stack-up"
work="$(mktemp -d "${TMPDIR:-/tmp}/paytrack-smoke.XXXXXX")"
root="$work/repo"
mkdir -p "$root" "$work/artifacts" "$work/shim"
tar -C "$repo" --exclude=./.git --exclude=./target --exclude=./.dev -cf - . | tar -C "$root" -xf -
# The pinned nats-server is reused when this repo already has it (the copy re-checks its hash).
if [[ -f "$repo/.dev/bin/nats-server" ]]; then
  mkdir -p "$root/.dev/bin"
  cp -p "$repo/.dev/bin/nats-server" "$root/.dev/bin/nats-server"
fi

real_target="${CARGO_TARGET_DIR:-$repo/target}"
[[ "$real_target" == /* ]] || real_target="$repo/$real_target"
# stack-up.sh builds with `cargo build --bin paytrack` in its own repo: in the copy, that
# builds this repo instead (incrementally, into its usual target dir) and installs the
# binary where the copy's stack-up.sh expects it. A copy of the binary, not a link, so the
# smoke processes are recognizably the copy's and a rebuild here cannot disturb them.
cat >"$work/shim/cargo" <<EOF
#!/usr/bin/env bash
set -euo pipefail
cd $(printf '%q' "$repo")
$(if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then printf 'export CARGO_TARGET_DIR=%q\n' "$CARGO_TARGET_DIR"; fi)
$(printf '%q' "$(command -v cargo)") "\$@"
mkdir -p $(printf '%q' "$root/target/debug")
cp -f $(printf '%q' "$real_target/debug/paytrack") $(printf '%q' "$root/target/debug/paytrack.tmp")
mv -f $(printf '%q' "$root/target/debug/paytrack.tmp") $(printf '%q' "$root/target/debug/paytrack")
EOF
chmod 0755 "$work/shim/cargo"

log "stack-up in $root (NATS $nats_port, monitor $nats_monitor_port, PostgreSQL $pg_port, ingest $ingest_port, edge $edge_port)"
t0=$SECONDS
stack_started=1
env -u CARGO_TARGET_DIR PATH="$work/shim:$PATH" \
  PAYTRACK_DEV_NATS_PORT="$nats_port" PAYTRACK_DEV_NATS_MONITOR_PORT="$nats_monitor_port" \
  PAYTRACK_DEV_PG_PORT="$pg_port" PAYTRACK_DEV_INGEST_PORT="$ingest_port" \
  PAYTRACK_DEV_EDGE_PORT="$edge_port" PAYTRACK_DEV_SIMULATOR_PORT="$simulator_port" \
  PAYTRACK_HEARTBEAT_MS="$heartbeat_ms" \
  bash "$root/scripts/stack-up.sh" >"$work/stack-up.out" 2>&1 \
  || { sed -E 's/token=[A-Za-z0-9._-]+/token=<redacted>/g' "$work/stack-up.out" | tail -n 40 >&2; die "stack-up.sh failed"; }
sed -E 's/token=[A-Za-z0-9._-]+/token=<redacted>/g; s/^/  /' "$work/stack-up.out"
record_stack_pids
ok "stack-up.sh brought the stack up in $((SECONDS - t0))s"

# --- 2. .dev/stack.env ----------------------------------------------------------------------
phase="stack.env"
stack_env="$root/.dev/stack.env"
[[ -s "$stack_env" ]] || die "$stack_env missing or empty"
keys=(NATS_URL DATABASE_URL INGEST_URL EDGE_URL DEV_TENANT JWT_ALG JWT_SECRET JWT_ISSUER JWT_AUDIENCE
  WEBHOOK_SECRET_STDWEBHOOKS WEBHOOK_SECRET_RAZORPAY WEBHOOK_SECRET_STRIPE PUSH_API_KEY DASHBOARD_URL
  OTHER_TENANT OTHER_WEBHOOK_SECRET_STDWEBHOOKS SIMULATOR_URL SIMULATOR_TOKEN)
for key in "${keys[@]}" DEV_TOKEN OTHER_TOKEN; do unset "$key"; done
# shellcheck source=/dev/null
source "$stack_env"
for key in "${keys[@]}"; do
  grep -q "^$key=" "$stack_env" || die "$key is not in stack.env"
  [[ -n "${!key:-}" ]] || die "$key is empty in stack.env"
done
[[ -n "${DEV_TOKEN:-}" ]] || die "DEV_TOKEN is empty in stack.env"
[[ -n "${OTHER_TOKEN:-}" && "$OTHER_TENANT" != "$DEV_TENANT" ]] || die "no second tenant in stack.env"
[[ "$INGEST_URL" == "http://127.0.0.1:$ingest_port" && "$EDGE_URL" == "http://127.0.0.1:$edge_port" ]] \
  || die "stack.env names other ports than the smoke stack's: $INGEST_URL, $EDGE_URL"
[[ "$NATS_URL" == *":$nats_port" && "$DATABASE_URL" == *":$pg_port/"* ]] \
  || die "stack.env names another NATS or PostgreSQL than the smoke stack's"
[[ "$DASHBOARD_URL" == "$EDGE_URL/?token=$DEV_TOKEN&api=$INGEST_URL" ]] \
  || die "DASHBOARD_URL is not the edge's / with the dev token and the API's address"
[[ "$WEBHOOK_SECRET_STDWEBHOOKS" == whsec_* ]] || die "WEBHOOK_SECRET_STDWEBHOOKS is not in its whsec_ form"
[[ "$JWT_ALG" == HS256 ]] || die "JWT_ALG is $JWT_ALG, expected HS256"
ok "stack.env has all ${#keys[@]} documented keys, non-empty, for the smoke ports"

# --- 3. webhooks in, status out ---------------------------------------------------------------
phase="webhooks"
payment_id="pay_smoke_$(date +%s)_$(openssl rand -hex 4)"
merchant_id="m_smoke"
for status in pending succeeded; do
  out="$(bash "$root/scripts/send-webhook.sh" "$payment_id" "$status" "$merchant_id" 2>&1)" \
    || { printf '%s\n' "$out" >&2; die "send-webhook.sh $payment_id $status failed"; }
done
ok "send-webhook.sh accepted pending and succeeded for $payment_id"

phase="REST"
deadline=$((SECONDS + timeout))
answer=""
while :; do
  answer="$(curl -sS --max-time 5 -H "Authorization: Bearer $DEV_TOKEN" "$INGEST_URL/v1/payments/$payment_id" 2>/dev/null || true)"
  state="$(printf '%s' "$answer" | "$python" -c '
import json, sys
try:
    p = json.load(sys.stdin)
    print(p.get("status"), p.get("version"))
except Exception:
    print("- -")
')"
  [[ "$state" == "succeeded 2" ]] && break
  ((SECONDS < deadline)) || die "GET /v1/payments/$payment_id is not succeeded at version 2 after ${timeout}s; last answer: $answer"
  sleep 0.5
done
ok "GET /v1/payments/$payment_id answers succeeded, version 2"

phase="create"
created="$(curl -sS --max-time 10 -w '\n%{http_code}' "$INGEST_URL/v1/payments" \
  -H "Authorization: Bearer $DEV_TOKEN" -H 'content-type: application/json' \
  -H "Idempotency-Key: smoke-$RANDOM-$RANDOM" \
  --data '{"merchant_id":"m_smoke","amount_minor":1250,"currency":"USD","rail":"card","country":"US"}')" \
  || die "POST /v1/payments failed"
code="${created##*$'\n'}"
created="${created%$'\n'*}"
[[ "$code" == 201 ]] || die "POST /v1/payments answered $code: $created"
read -r created_id created_provider created_ref < <(printf '%s' "$created" | "$python" -c '
import json, sys
p = json.load(sys.stdin)
print(p["payment_id"], p["routing"]["provider"], p["routing"].get("provider_ref") or "-")
')
[[ "$created_ref" != "-" ]] || die "the create was not initiated at the simulator: $created"
deadline=$((SECONDS + timeout))
while :; do
  answer="$(curl -sS --max-time 5 -H "Authorization: Bearer $DEV_TOKEN" "$INGEST_URL/v1/payments/$created_id" 2>/dev/null || true)"
  state="$(printf '%s' "$answer" | "$python" -c '
import json, sys
try:
    print(json.load(sys.stdin).get("status"))
except Exception:
    print("-")
')"
  [[ "$state" == succeeded || "$state" == failed ]] && break
  ((SECONDS < deadline)) || die "created payment $created_id did not settle after ${timeout}s; last answer: $answer"
  sleep 0.5
done
ok "POST /v1/payments created $created_id, routed to $created_provider ($created_ref), settled $state by the simulator's webhooks"
# The simulator signs genuine webhooks: it answers nothing without its token.
code="$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "$SIMULATOR_URL/v1/ground-truth")" || die "curl of the simulator failed"
[[ "$code" == 401 ]] || die "the simulator answered HTTP $code without its token"
code="$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $SIMULATOR_TOKEN" \
  "$SIMULATOR_URL/v1/ground-truth")" || die "curl of the simulator failed"
[[ "$code" == 200 ]] || die "the simulator answered HTTP $code with its token"
ok "the simulator answers 401 without its token, 200 with it"

# --- 4. the dashboard --------------------------------------------------------------------------
phase="dashboard (curl)"
code="$(curl -sS --max-time 10 -o "$work/dashboard.html" -w '%{http_code}' "$DASHBOARD_URL")" || die "curl of the dashboard failed"
[[ "$code" == 200 ]] || die "the dashboard answered HTTP $code"
if ! grep -q 'id="payment-rows"' "$work/dashboard.html" || ! grep -q '/v1/ws' "$work/dashboard.html"; then
  die "the page at / is not the operator dashboard"
fi
ok "curl \$DASHBOARD_URL answers 200 with the dashboard ($(wc -c <"$work/dashboard.html") bytes)"

phase="dashboard (browser)"
# The browser's temporary files go into the scratch directory too, so nothing is left
# behind in /tmp even if it is killed.
mkdir -p "$work/tmp"
TMPDIR="$work/tmp" setsid "$chromedriver" --port="$webdriver_port" --log-path="$work/artifacts/chromedriver.log" \
  >/dev/null 2>&1 </dev/null &
driver_pid=$!
cat >"$work/check_dashboard.py" <<'PY'
"""Drives headless Chromium through chromedriver (W3C WebDriver over HTTP, standard
library only) to check what the operator dashboard renders."""
import base64, json, os, sys, time, urllib.error, urllib.request

DRIVER = "http://127.0.0.1:%s" % os.environ["WEBDRIVER_PORT"]
URL = os.environ["DASHBOARD_URL"]
TOKEN = os.environ["DEV_TOKEN"]
PAYMENT = os.environ["PAYMENT_ID"]
TIMEOUT = float(os.environ["SMOKE_TIMEOUT"])
HEARTBEAT_S = float(os.environ["HEARTBEAT_MS"]) / 1000.0
ARTIFACTS = os.environ["ARTIFACTS"]


def call(method, path, body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(DRIVER + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}").get("value")
    except urllib.error.HTTPError as e:
        raise RuntimeError("%s %s: HTTP %s %s" % (method, path, e.code, e.read()[:400])) from None


def wait_for(what, predicate, timeout):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last and last.get("ok"):
            return last
        time.sleep(0.25)
    raise AssertionError("%s: not within %.0fs; last seen: %s" % (what, timeout, json.dumps(last)))


def redact(text):
    return text.replace(TOKEN, "<token>")


deadline = time.time() + 20
while True:
    try:
        if call("GET", "/status", timeout=2).get("ready"):
            break
    except Exception:
        pass
    if time.time() > deadline:
        sys.exit("chromedriver did not become ready")
    time.sleep(0.2)

caps = {"capabilities": {"alwaysMatch": {
    "browserName": "chrome",
    "pageLoadStrategy": "normal",
    "goog:chromeOptions": {
        "binary": os.environ["CHROMIUM"],
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,900",
                 "--user-data-dir=" + os.environ["USER_DATA_DIR"]],
    },
}}}
session = call("POST", "/session", caps)["sessionId"]
base = "/session/" + session


def js(script, *args):
    return call("POST", base + "/execute/sync", {"script": script, "args": list(args)})


# Test instrumentation only: keep a handle on the page's sockets so the test can drop one.
call("POST", base + "/goog/cdp/execute", {"cmd": "Page.addScriptToEvaluateOnNewDocument", "params": {"source": """
  (function () {
    var Native = window.WebSocket;
    window.__smokeSockets = [];
    window.WebSocket = function (url, protocols) {
      var s = protocols === undefined ? new Native(url) : new Native(url, protocols);
      window.__smokeSockets.push(s);
      return s;
    };
    window.WebSocket.prototype = Native.prototype;
    ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED'].forEach(function (k) { window.WebSocket[k] = Native[k]; });
  })();"""}})

STATE = """
  var id = arguments[0];
  var row = document.querySelector('tr[data-payment-id="' + id + '"]');
  function f(name) { var c = row && row.querySelector('td[data-field="' + name + '"]'); return c ? c.textContent.trim() : null; }
  function s(sel) { var n = document.querySelector(sel); return n ? { state: n.dataset.state, text: n.textContent.trim() } : null; }
  return { row: !!row, status: f('status'), version: f('version'), merchant: f('merchant_id'), persisted: f('persisted'),
    conn: s('#conn'), currency: s('#currency'), continuity: s('#continuity'),
    session: (document.getElementById('session-id') || {}).textContent, gaps: (document.getElementById('gaps') || {}).textContent,
    transport: (document.getElementById('transport') || {}).textContent, href: location.href };
"""


def state():
    return js(STATE, PAYMENT)


try:
    call("POST", base + "/url", {"url": URL})

    def shows_payment():
        s = state()
        s["ok"] = s["status"] == "succeeded" and s["version"] == "2" and (s["conn"] or {}).get("state") == "live"
        return s
    s = wait_for("the dashboard shows %s succeeded at version 2" % PAYMENT, shows_payment, TIMEOUT)
    print("ok: row %s: status %s, version %s, merchant %s, connection %s, continuity %s, transport %s"
          % (PAYMENT, s["status"], s["version"], s["merchant"], s["conn"]["text"], s["continuity"]["text"],
             s["transport"]))
    if s["merchant"] != "m_smoke" or s["transport"] != "websocket":
        raise AssertionError("unexpected merchant or transport: %s" % json.dumps(s))

    def current():
        s = state()
        s["ok"] = (s["currency"] or {}).get("state") == "current"
        return s
    s = wait_for("the view becomes current (heartbeat confirms the position)", current, HEARTBEAT_S * 3 + 10)
    print("ok: currency %s (session %s)" % (s["currency"]["text"], s["session"]))

    html = js("return document.documentElement.outerHTML;")
    if TOKEN in html or TOKEN in s["href"]:
        raise AssertionError("the token is visible on the page or in its address")
    print("ok: the token appears neither in the DOM nor in the address bar")

    # A dropped socket: the page reconnects and resumes from its last position gap-free.
    first_session = s["session"]
    js("var a = window.__smokeSockets; a[a.length - 1].close();")

    def resumed():
        s = state()
        s["ok"] = (s["session"] not in (first_session, "—") and (s["conn"] or {}).get("state") == "live"
                   and (s["continuity"] or {}).get("state") == "recovered" and s["status"] == "succeeded")
        return s
    s = wait_for("the page resumes after a dropped socket (recovered)", resumed, TIMEOUT)
    print("ok: reconnected as session %s, continuity %s" % (s["session"], s["continuity"]["text"]))

    # A forged event whose prev_seq does not chain: the page must flag the gap and
    # resubscribe from its last good position.
    js("""
      var a = window.__smokeSockets, sock = a[a.length - 1];
      sock.onmessage({ data: JSON.stringify({ type: 'event', channel: 'payments', kind: 'transition',
        position: { epoch: 'forged', seq: 999999999 }, prev_seq: 999999998, payment_id: 'pay_forged',
        merchant_id: 'm_forged', version: 1, status: 'failed', final: false }) });""")

    def healed():
        s = state()
        s["ok"] = (s["gaps"] == "1" and (s["continuity"] or {}).get("state") == "recovered"
                   and s["status"] == "succeeded")
        return s
    s = wait_for("the page flags a forged gap and resubscribes (recovered)", healed, TIMEOUT)
    if js("return !!document.querySelector('tr[data-payment-id=\"pay_forged\"]');"):
        raise AssertionError("the event after the gap was applied")
    print("ok: gap detected (%s), resubscribed, continuity %s" % (s["gaps"], s["continuity"]["text"]))
except Exception as e:
    try:
        with open(os.path.join(ARTIFACTS, "dom.html"), "w") as out:
            out.write(redact(js("return document.documentElement.outerHTML;")))
        shot = call("GET", base + "/screenshot")
        with open(os.path.join(ARTIFACTS, "screenshot.png"), "wb") as out:
            out.write(base64.b64decode(shot))
        logs = js("return Array.prototype.map.call(document.querySelectorAll('#log li'), function (li) { return li.textContent; }).slice(0, 30);")
        print("dashboard event log (newest first):\n  " + "\n  ".join(redact(l) for l in logs or []), file=sys.stderr)
    except Exception as inner:
        print("could not save the browser's state: %s" % inner, file=sys.stderr)
    print("FAILED: %s" % redact(str(e)), file=sys.stderr)
    sys.exit(1)
finally:
    try:
        call("DELETE", base, timeout=20)
    except Exception:
        pass
PY
mkdir -p "$work/chromium-profile"
t0=$SECONDS
WEBDRIVER_PORT="$webdriver_port" DASHBOARD_URL="$DASHBOARD_URL" DEV_TOKEN="$DEV_TOKEN" PAYMENT_ID="$payment_id" \
  SMOKE_TIMEOUT="$timeout" HEARTBEAT_MS="$heartbeat_ms" ARTIFACTS="$work/artifacts" CHROMIUM="$chromium" \
  USER_DATA_DIR="$work/chromium-profile" "$python" "$work/check_dashboard.py" \
  | sed 's/^/  /' || die "headless Chromium did not see what it should (see above)"
stop_driver
ok "headless Chromium: $payment_id succeeded on the dashboard, current, resumed and gap-healed in $((SECONDS - t0))s"

# --- 5. stack-down leaves nothing ------------------------------------------------------------
phase="stack-down"
t0=$SECONDS
record_stack_pids
stack_down || die "stack-down.sh failed"
for pid in "${stack_pids[@]}"; do
  if alive "$pid"; then die "pid $pid ($(cat "/proc/$pid/comm" 2>/dev/null)) survived stack-down"; fi
done
left="$(stack_processes)"
[[ -z "$left" ]] || die "still running after stack-down: $left"
ok "stack-down.sh stopped everything in $((SECONDS - t0))s (nats-server, PostgreSQL, paytrack: none left)"

log "done in $((SECONDS - started_at))s"
echo "smoke: $passed passed, 0 failed"
