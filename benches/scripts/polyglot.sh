#!/bin/sh
# Per-language figures of the exec-counter plugin (Rust, JavaScript,
# Python) on the real kernel, printed as a table: component size; start
# from an empty compile cache with the optimising compiler first
# (`--no-baseline`, the host before tiered compilation) and with the
# default (baseline code first), and how long until the plugin ran on
# optimised code; start from a warm cache; resident memory of the host
# with that one plugin; host CPU per exec event counted; and the plugin
# thread's CPU per event on optimised and on baseline code. Run as root
# after `cargo xtask build` and `cargo build -p conductor-cli` (or pass
# CONDUCTOR=path/to/conductor):
#
#   sh benches/scripts/polyglot.sh [EXECS]
#
# "host CPU" is the host process's CPU time (user + system, from /proc)
# over EXECS execs of /bin/true divided by EXECS: the ring-buffer read and
# the host's share, not the execs themselves. "thread" is the plugin's own
# thread only (ring read, the call into the plugin, its metric updates):
# on baseline code the process also runs the background compile, so only
# the thread's time is comparable. Components under 4 MiB (Rust) never
# start on baseline code: "-".
set -eu
cd "$(dirname "$0")/../.."
EXECS=${1:-2000}
CONDUCTOR=${CONDUCTOR:-target/debug/conductor}
ART=$PWD/target/plugins
TMP=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$TMP"' EXIT
PID=

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# The plugin's thread (named plugin-<name>, cut to 15 characters).
plugin_tid() {
  for t in /proc/$PID/task/*; do
    case $(cat "$t/comm") in plugin-*) basename "$t"; return ;; esac
  done
}

start() { # component cache-dir [args] -> sets PID, T0 and ELAPSED (seconds to "running")
  c=$1; cache=$2; shift 2
  sed -e "s#\.\./target/plugins/exec_counter\.wasm#$ART/$c#" \
      -e "s#\.\./target/plugins/exec_counter\.bpf\.o#$ART/exec_counter.bpf.o#" \
      examples/exec-counter.yaml > "$TMP/spec.yaml"
  : > "$TMP/log"
  T0=$(date +%s.%N)
  NO_COLOR=1 "$CONDUCTOR" run "$TMP/spec.yaml" --metrics-addr 127.0.0.1:0 --cache-dir "$cache" "$@" > "$TMP/log" 2>&1 &
  PID=$!
  wait_log "plugin running"
  ELAPSED=$(awk "BEGIN {print $(date +%s.%N) - $T0}")
}

wait_log() {
  until grep -q "$1" "$TMP/log"; do
    kill -0 $PID 2>/dev/null || { cat "$TMP/log"; exit 1; }
    sleep 0.05
  done
}

stop() { kill -INT $PID; wait $PID 2>/dev/null || true; PID=; }

# CPU per event in microseconds over EXECS execs: "process" or the plugin's thread.
per_event() {
  tid=$(plugin_tid)
  p0=$(cpu_ticks $PID); t0=$(cpu_ticks "$PID/task/$tid")
  i=0; while [ $i -lt "$EXECS" ]; do /bin/true; i=$((i + 1)); done
  sleep 1
  p1=$(cpu_ticks $PID); t1=$(cpu_ticks "$PID/task/$tid")
  PROCESS_US=$(awk "BEGIN {print ($p1 - $p0) * 1000000 / $hz / $EXECS}")
  THREAD_US=$(awk "BEGIN {print ($t1 - $t0) * 1000000 / $hz / $EXECS}")
}

hz=$(getconf CLK_TCK)
printf '%-16s %7s %10s %10s %10s %9s %8s %9s %10s %10s\n' plugin "size MB" "cold opt s" "cold s" "to opt s" "warm s" "RSS MiB" "host us" "thread us" "base us"
for c in exec_counter.wasm exec_counter_js.wasm exec_counter_py.wasm; do
  size=$(stat -c %s "$ART/$c")
  cache="$TMP/cache-$c"
  start "$c" "$cache" --no-baseline; cold_opt=$ELAPSED; stop
  rm -rf "$cache"
  start "$c" "$cache"; cold=$ELAPSED
  if grep -q "code=baseline" "$TMP/log"; then
    per_event; base=$THREAD_US
    grep -q "plugin moved to optimised code" "$TMP/log" && base="mixed"
    wait_log "plugin moved to optimised code"
    to_opt=$(awk "BEGIN {print $(date +%s.%N) - $T0}")
  else
    base=-; to_opt=$cold
  fi
  stop
  start "$c" "$cache"; warm=$ELAPSED
  sleep 1
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
  per_event
  stop
  printf '%-16s %7.1f %10.2f %10.2f %10.1f %9.2f %8.1f %9.1f %10.1f %10s\n' "${c%.wasm}" \
    "$(awk "BEGIN {print $size / 1000000}")" "$cold_opt" "$cold" "$to_opt" "$warm" \
    "$(awk "BEGIN {print $rss / 1024}")" "$PROCESS_US" "$THREAD_US" "$base"
done
