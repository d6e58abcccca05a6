#!/bin/sh
# Runs the plugin on real exec events and checks that it counted exactly
# the ones this script caused. Needs root (it loads BPF programs), curl, and
# `conductor` on PATH (or CONDUCTOR=/path/to/conductor).
#
#   sudo sh tests/run-on-events.sh
set -eu
cd "$(dirname "$0")/.."
conductor=${CONDUCTOR:-conductor}
port=${METRICS_PORT:-9465}
runs=5

"$conductor" build

tmp=$(mktemp -d)
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

# A copy of /bin/true under a name nothing else on the machine runs.
comm=t$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')
cp /bin/true "$tmp/$comm"

# The package `conductor build` assembled, with its default spec.
"$conductor" run target/conductor --metrics-addr "127.0.0.1:$port" \
	--cache-dir "$tmp/cache" 2>"$tmp/log" &
pid=$!
tries=0
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
	tries=$((tries + 1))
	if [ $tries -gt 600 ] || ! kill -0 "$pid" 2>/dev/null; then
		echo "FAIL: the plugin did not start:" >&2
		cat "$tmp/log" >&2
		exit 1
	fi
	sleep 0.1
done

i=0
while [ $i -lt $runs ]; do
	"$tmp/$comm"
	i=$((i + 1))
done

want="{{crate}}__execs_total{plugin=\"{{name}}\",comm=\"$comm\"} $runs"
tries=0
until curl -sf "http://127.0.0.1:$port/metrics" | grep -qxF "$want"; do
	tries=$((tries + 1))
	if [ $tries -gt 300 ]; then
		echo "FAIL: no line '$want' in /metrics:" >&2
		curl -sf "http://127.0.0.1:$port/metrics" | grep '{{crate}}__' >&2 || true
		cat "$tmp/log" >&2
		exit 1
	fi
	sleep 0.1
done
echo "ok: {{name}} counted $runs execs of $comm"
