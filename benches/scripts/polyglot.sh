#!/bin/sh
# Per-language figures of the exec-counter plugin (Rust, JavaScript,
# Python) on the real kernel, printed as a table: component size, start
# from an empty and from a warm compile cache (host start to "running"),
# resident memory of the host with that one plugin, and host CPU per exec
# event counted. Run as root after `cargo xtask build` and
# `cargo build -p conductor-cli` (or pass CONDUCTOR=path/to/conductor):
#
#   sh benches/scripts/polyglot.sh [EXECS]
#
# The CPU figure is the host process's CPU time (user + system, from
# /proc) over EXECS execs of /bin/true divided by EXECS: it includes the
# ring-buffer read and the host's share, not the execs themselves.
set -eu
cd "$(dirname "$0")/../.."
EXECS=${1:-2000}
CONDUCTOR=${CONDUCTOR:-target/debug/conductor}
ART=$PWD/target/plugins
TMP=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$TMP"' EXIT
PID=

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start() { # component cache-dir -> sets PID and ELAPSED (seconds to "running")
  sed -e "s#\.\./target/plugins/exec_counter\.wasm#$ART/$1#" \
      -e "s#\.\./target/plugins/exec_counter\.bpf\.o#$ART/exec_counter.bpf.o#" \
      examples/exec-counter.yaml > "$TMP/spec.yaml"
  : > "$TMP/log"
  t0=$(date +%s.%N)
  "$CONDUCTOR" run "$TMP/spec.yaml" --metrics-addr 127.0.0.1:0 --cache-dir "$2" > "$TMP/log" 2>&1 &
  PID=$!
  until grep -q "running; press Ctrl-C" "$TMP/log"; do
    kill -0 $PID 2>/dev/null || { cat "$TMP/log"; exit 1; }
    sleep 0.05
  done
  t1=$(date +%s.%N)
  ELAPSED=$(awk "BEGIN {print $t1 - $t0}")
}

stop() { kill -INT $PID; wait $PID 2>/dev/null || true; PID=; }

hz=$(getconf CLK_TCK)
printf '%-12s %9s %12s %12s %10s %14s\n' plugin "size MB" "cold start s" "warm start s" "RSS MiB" "CPU us/event"
for c in exec_counter.wasm exec_counter_js.wasm exec_counter_py.wasm; do
  size=$(stat -c %s "$ART/$c")
  cache="$TMP/cache-$c"
  start "$c" "$cache"; cold=$ELAPSED; stop
  start "$c" "$cache"; warm=$ELAPSED
  sleep 1
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
  before=$(cpu_ticks $PID)
  i=0; while [ $i -lt "$EXECS" ]; do /bin/true; i=$((i + 1)); done
  sleep 1
  after=$(cpu_ticks $PID)
  stop
  printf '%-12s %9.1f %12.2f %12.2f %10.1f %14.1f\n' "${c%.wasm}" \
    "$(awk "BEGIN {print $size / 1000000}")" "$cold" "$warm" "$(awk "BEGIN {print $rss / 1024}")" \
    "$(awk "BEGIN {print ($after - $before) * 1000000 / $hz / $EXECS}")"
done
