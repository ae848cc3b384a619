#!/usr/bin/env bash
# Profiles one bench figure: runs paytrack-bench for that figure alone, records the
# process that does the work with `perf record` while the load runs, and renders a
# flame graph SVG with inferno. The bench process runs ingest, the reconciler, the
# projector and the clients; the edge and nats-server run in their own processes, so
# each process is a root of the graph.
#
#   scripts/bench-profile.sh e2e        # 10k sessions, 1,000 transitions/s for 60 s
#   scripts/bench-profile.sh e2e300     # 2k sessions, 300 transitions/s for 60 s
#   scripts/bench-profile.sh projector  # the projector catching up on 40,000 transitions
#   scripts/bench-profile.sh ingest     # a burst of 100,000 webhooks, consumers stopped
#   scripts/bench-profile.sh ingest-live # webhooks for 60 s while the mesh consumes them
#   scripts/bench-profile.sh storm      # 10k sessions resuming at once
#   scripts/bench-profile.sh fanout     # the edge connecting 15k sessions and broadcasting to them
#
# Every figure but the projector's records the whole machine (`perf record -a`): the
# work of a missed target is shared by the bench process, nats-server, the edge and
# PostgreSQL, and the summary gives each process's share of the samples.
#
# Needs perf (linux-perf) and the bench built with `--profile profiling` (release code
# with line tables). Writes bench/results/flame-<figure>.svg and the perf summary
# bench/results/flame-<figure>.txt (top symbols, self time).
# Environment: PROFILE_SECS (how long to record; default 30), PROFILE_HZ (samples per
# second and core; default 99), CARGO_TARGET_DIR.
set -euo pipefail

figure="${1:?usage: bench-profile.sh e2e|e2e300|projector|ingest|ingest-live|storm|fanout}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
bench="$target/profiling/paytrack-bench"
out="$repo/bench/results"
secs="${PROFILE_SECS:-30}"
hz="${PROFILE_HZ:-99}"
inferno_version=0.12.8
scope=all

case "$figure" in
  e2e)
    args=(--only 2 --sessions 10000 --loads 1000 --load-secs 60)
    marker="end to end: 1000/s offered to 10000 sessions"
    ;;
  e2e300)
    args=(--only 2 --sessions 2000 --loads 300 --load-secs 60)
    marker="end to end: 300/s offered to 2000 sessions"
    ;;
  projector)
    args=(--only 5 --projector-sizes 40000)
    marker="projector: catching up on 40000 transitions"
    scope=bench
    ;;
  ingest)
    args=(--only 1 --ingest-sizes 100000 --load-secs 5)
    marker="ingest: 100000 webhooks"
    secs="${PROFILE_SECS:-8}"
    hz="${PROFILE_HZ:-299}"
    ;;
  ingest-live)
    args=(--only 1)
    marker="ingest: webhooks for 60 s while the mesh consumes them"
    ;;
  storm)
    args=(--only 4)
    marker="reconnect storm: dropping 10000 sessions"
    secs="${PROFILE_SECS:-15}"
    ;;
  fanout)
    args=(--only 3)
    marker="fan-out: ws-edge holding 15000 sessions"
    # The edge's 15k sessions connecting and its broadcasts; the bare servers follow.
    secs="${PROFILE_SECS:-6}"
    hz="${PROFILE_HZ:-299}"
    ;;
  *) echo "unknown figure $figure (e2e, e2e300, projector, ingest, ingest-live, storm or fanout)" >&2; exit 2 ;;
esac

command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
if ! command -v inferno-flamegraph >/dev/null || ! cargo install --list | grep -qx "inferno v$inferno_version:"; then
  cargo install --locked --version "$inferno_version" inferno
fi
[[ -x "$bench" ]] || (cd "$repo" && cargo build --profile profiling --locked -p paytrack-bench)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log="$work/bench.log"
ulimit -n "$(ulimit -Hn)"
(cd "$repo" && "$bench" --out "$work/results" "${args[@]}") >"$work/stdout" 2>"$log" &
pid=$!

# Wait for the load to start, then record the bench process for $secs seconds.
until grep -qF "$marker" "$log"; do
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "the bench ended before the load" >&2; exit 1; }
  sleep 1
done
if [[ "$scope" == all ]]; then target_args=(-a); else target_args=(-p "$pid"); fi
# perf ends early (and says the sleep was terminated) when a recorded process ends first.
perf record -F "$hz" --call-graph dwarf,32768 "${target_args[@]}" -o "$work/perf.data" -- sleep "$secs" 2>"$work/perf.log" || true
[[ -s "$work/perf.data" ]] || { cat "$work/perf.log" >&2; echo "perf recorded nothing" >&2; exit 1; }
wait "$pid" || { tail -n 30 "$log" >&2; echo "the bench run failed" >&2; exit 1; }

perf script -i "$work/perf.data" --no-inline 2>/dev/null | inferno-collapse-perf >"$work/folded"
inferno-flamegraph --title "paytrack-bench: $figure (${args[*]})" <"$work/folded" >"$out/flame-$figure.svg"
perf report -i "$work/perf.data" --no-inline --no-children --sort symbol --stdio >"$work/report" 2>/dev/null || true
{
  echo "# perf record -F $hz --call-graph dwarf of the $([[ $scope == all ]] && echo 'whole machine' || echo 'bench process'), $secs s: paytrack-bench ${args[*]}"
  echo "# share of the samples by process"
  perf report -i "$work/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -n 12 || true
  echo "# top symbols by self time"
  grep -E '^ +[0-9.]+%' "$work/report" | head -n 40 | sed -E 's/ +- +- *$//; s/ +$//' || true
  echo "# the run's own figures"
  grep -E '^(\| [0-9]|- )' "$work/results/results.md" || true
} >"$out/flame-$figure.txt"
echo "wrote $out/flame-$figure.svg and $out/flame-$figure.txt"
