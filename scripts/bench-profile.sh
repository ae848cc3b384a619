#!/usr/bin/env bash
# Profiles one bench figure: runs paytrack-bench for that figure alone, records the
# process that does the work with `perf record` while the load runs, and renders a
# flame graph SVG with inferno. The bench process runs ingest, the reconciler, the
# projector and the clients; the edge and nats-server run in their own processes, so
# the edge's figures record the whole machine (each process is a root of the graph).
#
#   scripts/bench-profile.sh e2e        # 10k sessions, 1,000 transitions/s for 60 s
#   scripts/bench-profile.sh projector  # the projector catching up on 40,000 transitions
#   scripts/bench-profile.sh ingest     # webhooks for 60 s while the mesh consumes them
#   scripts/bench-profile.sh storm      # 10k sessions resuming at once (whole machine)
#   scripts/bench-profile.sh fanout     # the edge connecting and broadcasting to 15k (whole machine)
#
# Needs perf (linux-perf) and the bench built with `--profile profiling` (release code
# with line tables). Writes bench/results/flame-<figure>.svg and the perf summary
# bench/results/flame-<figure>.txt (top symbols, self time).
# Environment: PROFILE_SECS (how long to record; default 30), CARGO_TARGET_DIR.
set -euo pipefail

figure="${1:?usage: bench-profile.sh e2e|projector|ingest|storm|fanout}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
bench="$target/profiling/paytrack-bench"
out="$repo/bench/results"
secs="${PROFILE_SECS:-30}"
inferno_version=0.12.8
scope=bench

case "$figure" in
  e2e)
    args=(--only 2 --sessions 10000 --loads 1000 --load-secs 60)
    marker="end to end: 1000/s offered to 10000 sessions"
    ;;
  projector)
    args=(--only 5 --projector-sizes 40000)
    marker="projector: catching up on 40000 transitions"
    ;;
  ingest)
    args=(--only 1)
    marker="ingest: webhooks for 60 s while the mesh consumes them"
    ;;
  storm)
    args=(--only 4)
    marker="reconnect storm: dropping 10000 sessions"
    scope=all
    secs="${PROFILE_SECS:-15}"
    ;;
  fanout)
    args=(--only 3)
    marker="fan-out: ws-edge holding 15000 sessions"
    scope=all
    ;;
  *) echo "unknown figure $figure (e2e, projector, ingest, storm or fanout)" >&2; exit 2 ;;
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
perf record -F 99 --call-graph dwarf,32768 "${target_args[@]}" -o "$work/perf.data" -- sleep "$secs" 2>"$work/perf.log"
wait "$pid" || { tail -n 30 "$log" >&2; echo "the bench run failed" >&2; exit 1; }

perf script -i "$work/perf.data" --no-inline 2>/dev/null | inferno-collapse-perf >"$work/folded"
inferno-flamegraph --title "paytrack-bench: $figure (${args[*]})" <"$work/folded" >"$out/flame-$figure.svg"
perf report -i "$work/perf.data" --no-inline --no-children --sort symbol --stdio >"$work/report" 2>/dev/null || true
{
  echo "# perf record -F 99 --call-graph dwarf of the $([[ $scope == all ]] && echo 'whole machine' || echo 'bench process'), $secs s: paytrack-bench ${args[*]}"
  echo "# share of the samples by process"
  perf report -i "$work/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -n 12 || true
  echo "# top symbols by self time"
  grep -E '^ +[0-9.]+%' "$work/report" | head -n 40 | sed -E 's/ +- +- *$//; s/ +$//' || true
  echo "# the run's own figures"
  grep -E '^(\| [0-9]|- )' "$work/results/results.md" || true
} >"$out/flame-$figure.txt"
echo "wrote $out/flame-$figure.svg and $out/flame-$figure.txt"
