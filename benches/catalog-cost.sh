#!/usr/bin/env bash
# A first measurement of the catalog plugins' cost (issue 15), until the
# catalog benchmark exists: runs pod-traffic, tcp, opensnoop, oomkill, dns
# and syscall-latency in one `conductor run` with the kernel's BPF
# statistics on, offers a burst of loopback load (200,000 UDP datagrams of
# 100 bytes, 2,000 TCP connections, 100,000 opens of /etc/hostname, 5,000
# DNS queries to a resolver on 127.0.0.2:53; syscall-latency's default
# allow-list times the reads, writes, sends, receives and closes among
# them) and prints the host's CPU time and RSS,
# each BPF program's runs and mean run time (from /proc/<pid>/fdinfo), the
# host's per-plugin call times and the events each plugin received or lost.
#
#   sudo benches/catalog-cost.sh [path/to/conductor]    (after cargo xtask build)
#
# Figures are not thresholds: compare runs on the same machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
conductor=${1:-$root/target/debug/conductor}
artifacts=${CONDUCTOR_ARTIFACTS:-$root/target/plugins}
work=$(mktemp -d)
trap 'rm -rf "$work"; sysctl -qw kernel.bpf_stats_enabled=0' EXIT
for p in pod-traffic tcp opensnoop oomkill dns syscall-latency; do
  sed "s|../../../target/plugins/|$artifacts/|" "$root/plugins/catalog/$p/$p.yaml"
  echo '---'
done | sed '$d' > "$work/catalog.yaml"

sysctl -qw kernel.bpf_stats_enabled=1
"$conductor" run "$work/catalog.yaml" --metrics-addr 127.0.0.1:19470 > "$work/host.log" 2>&1 &
host=$!
touch "$work/host.log"
for _ in $(seq 100); do
  grep -q "running; press Ctrl-C" "$work/host.log" && break
  kill -0 $host 2>/dev/null || { cat "$work/host.log"; exit 1; }
  sleep 0.2
done
cpu() { awk '{print $14 + $15}' /proc/$host/stat; }
c0=$(cpu); t0=$(date +%s.%N)
python3 - <<'PY'
import os, socket
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.bind(("127.0.0.1", 0)); r.setblocking(False)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
addr, data = r.getsockname(), b"x" * 100
for _ in range(200000):
    s.sendto(data, addr)
    try:
        r.recv(200)
    except BlockingIOError:
        pass
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(128)
for _ in range(2000):
    c = socket.create_connection(l.getsockname()); a, _ = l.accept(); c.close(); a.close()
for _ in range(100000):
    os.close(os.open("/etc/hostname", os.O_RDONLY))
import struct, threading
srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); srv.bind(("127.0.0.2", 53))
def serve():
    while True:
        q, peer = srv.recvfrom(512)
        srv.sendto(q[:2] + b"\x81\x83" + q[4:], peer)
threading.Thread(target=serve, daemon=True).start()
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.connect(("127.0.0.2", 53))
for i in range(5000):
    c.send(struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00\x00\x01\x00\x01")
    c.recv(512)
PY
sleep 1
curl -s 127.0.0.1:19470/metrics > "$work/metrics"
t1=$(date +%s.%N); c1=$(cpu)
echo "host CPU: $(( (c1 - c0) * 10 )) ms over $(echo "$t1 - $t0" | bc) s; $(grep VmRSS /proc/$host/status)"
echo "BPF programs (in load order: pod-traffic ingress, egress, drop; tcp state, retransmit; opensnoop enter, exit; oomkill; dns ingress, egress; syscall-latency enter, exit):"
for fd in /proc/$host/fd/*; do
  info=/proc/$host/fdinfo/${fd##*/}
  grep -q '^prog_type' "$info" 2>/dev/null || continue
  awk '/^prog_id/{id=$2} /^run_cnt/{n=$2} /^run_time_ns/{t=$2}
       END {printf "  prog %s: %d runs, %.0f ns each\n", id, n, n ? t / n : 0}' "$info"
done | sort -k2 -n
kill -INT $host; wait $host || true
grep -E '^conductor_(events_received_total|events_lost_total|plugin_call_duration_seconds_(sum|count))' "$work/metrics" \
  | grep -v 'call="tick"\|call="init"' | grep -v ' 0$' | grep -v ' 0.0$'
