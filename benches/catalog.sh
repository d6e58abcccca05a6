#!/usr/bin/env bash
# The catalog benchmark (issue 15): every catalog plugin (pod-traffic, tcp,
# dns, opensnoop, oomkill, syscall-latency, pod-pressure) and exec-counter
# in one `conductor run`, under a steady synthetic load on loopback for
# DURATION seconds: UDP datagrams, TCP connections, DNS queries to a
# resolver on 127.0.0.2:53, file opens and process executions, each at a
# fixed rate per second. It prints, per plugin, the events it handled per
# second, the CPU of its host thread (calls, draining, host work) per event
# and per second, events lost, and each BPF program's runs and mean run
# time (kernel BPF statistics, by program name); then the host's total CPU
# and resident memory.
#
#   sudo benches/catalog.sh [path/to/conductor]     (after cargo xtask build)
#   DURATION=20 UDP=20000 TCP=200 DNS=500 OPENS=10000 EXECS=50 sudo benches/catalog.sh
#
# Figures are not thresholds: compare runs on the same machine, and say how
# loaded it was.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
conductor=${1:-$root/target/release/conductor}
artifacts=${CONDUCTOR_ARTIFACTS:-$root/target/plugins}
export DURATION=${DURATION:-20} UDP=${UDP:-20000} TCP=${TCP:-200} DNS=${DNS:-500} OPENS=${OPENS:-10000} EXECS=${EXECS:-50}
work=$(mktemp -d)
trap 'kill $host 2>/dev/null || true; rm -rf "$work"; sysctl -qw kernel.bpf_stats_enabled=0' EXIT
{
  for p in pod-traffic tcp dns opensnoop oomkill syscall-latency pod-pressure; do
    sed "s|../../../target/plugins/|$artifacts/|" "$root/plugins/catalog/$p/$p.yaml"
    echo '---'
  done
  sed "s|../target/plugins/|$artifacts/|" "$root/examples/exec-counter.yaml"
} > "$work/catalog.yaml"

sysctl -qw kernel.bpf_stats_enabled=1
"$conductor" run "$work/catalog.yaml" --metrics-addr 127.0.0.1:19470 > "$work/host.log" 2>&1 &
host=$!
for _ in $(seq 300); do
  grep -q "running; press Ctrl-C" "$work/host.log" 2>/dev/null && break
  kill -0 $host 2>/dev/null || { cat "$work/host.log"; exit 1; }
  sleep 0.2
done
curl -s 127.0.0.1:19470/metrics > "$work/before"
ticks() { awk '{print $14 + $15}' /proc/$host/stat; }
c0=$(ticks); t0=$(date +%s.%N)
python3 - <<'PY'
import os, socket, struct, subprocess, threading, time
d = float(os.environ["DURATION"])
rates = {k: int(os.environ[k]) for k in ("UDP", "TCP", "DNS", "OPENS", "EXECS")}
stop = time.monotonic() + d

def paced(rate, once):
    # `rate` per second in 10 ms slices, catching up when behind.
    if rate == 0:
        return
    start, done = time.monotonic(), 0
    while (now := time.monotonic()) < stop:
        due = int((now - start) * rate)
        while done < due:
            once(); done += 1
        time.sleep(0.01)

def udp():
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.bind(("127.0.0.1", 0)); r.setblocking(False)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr, data = r.getsockname(), b"x" * 100
    def once():
        s.sendto(data, addr)
        try: r.recv(200)
        except BlockingIOError: pass
    paced(rates["UDP"], once)

def tcp():
    l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(128)
    def once():
        c = socket.create_connection(l.getsockname()); a, _ = l.accept(); c.close(); a.close()
    paced(rates["TCP"], once)

srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); srv.bind(("127.0.0.2", 53))
def serve():
    while True:
        q, peer = srv.recvfrom(512)
        srv.sendto(q[:2] + b"\x81\x83" + q[4:], peer)
threading.Thread(target=serve, daemon=True).start()
def dns():
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.connect(("127.0.0.2", 53))
    n = [0]
    def once():
        n[0] = (n[0] + 1) & 0xffff
        c.send(struct.pack(">HHHHHH", n[0], 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00\x00\x01\x00\x01")
        c.recv(512)
    paced(rates["DNS"], once)

def opens():
    paced(rates["OPENS"], lambda: os.close(os.open("/etc/hostname", os.O_RDONLY)))

def execs():
    paced(rates["EXECS"], lambda: subprocess.run(["/bin/true"]))

ts = [threading.Thread(target=f) for f in (udp, tcp, dns, opens, execs)]
for t in ts: t.start()
for t in ts: t.join()
PY
t1=$(date +%s.%N); c1=$(ticks)
sleep 1
curl -s 127.0.0.1:19470/metrics > "$work/after"
rss=$(awk '/VmRSS/{print $2}' /proc/$host/status)

# BPF programs of the host: name, runs, mean run time.
python3 - "$host" > "$work/progs" <<'PY'
import ctypes, os, sys
pid = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
SYS_BPF, PROG_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD = 321, 13, 15
def bpf(cmd, attr):
    return libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
for fd in os.listdir(f"/proc/{pid}/fdinfo"):
    try:
        info = dict(l.split(":", 1) for l in open(f"/proc/{pid}/fdinfo/{fd}").read().splitlines() if ":" in l)
    except OSError:
        continue
    if "prog_type" not in info:  # links carry a prog_id too
        continue
    pid_ = int(info["prog_id"]); runs = int(info.get("run_cnt", 0)); ns = int(info.get("run_time_ns", 0))
    attr = (ctypes.c_uint32 * 4)(pid_, 0, 0, 0)
    pfd = bpf(PROG_GET_FD_BY_ID, attr)
    name = "?"
    if pfd >= 0:
        buf = ctypes.create_string_buffer(256)
        iattr = (ctypes.c_uint64 * 2)()
        iattr[0] = pfd | (256 << 32)
        iattr[1] = ctypes.addressof(buf)
        if bpf(OBJ_GET_INFO_BY_FD, iattr) == 0:
            name = buf.raw[64:80].split(b"\0")[0].decode()
        os.close(pfd)
    print(f"{name} {info['prog_type'].strip()} {runs} {ns}")
PY

python3 - "$work/before" "$work/after" "$work/progs" <<PY
import re, sys
def load(path):
    out = {}
    for line in open(path):
        if line.startswith("#"): continue
        m = re.match(r'(\w+)\{([^}]*)\} (\S+)', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            out.setdefault((m.group(1), labels.get("plugin", "")), 0.0)
            out[(m.group(1), labels.get("plugin", ""))] += float(m.group(3))
    return out
b, a = load(sys.argv[1]), load(sys.argv[2])
d = lambda k: a.get(k, 0.0) - b.get(k, 0.0)
secs = $t1 - $t0
plugins = ["pod-traffic", "tcp", "dns", "opensnoop", "oomkill", "syscall-latency", "pod-pressure", "exec-counter"]
print(f"load for {secs:.1f} s: UDP $UDP/s, TCP $TCP/s, DNS $DNS/s, opens $OPENS/s, execs $EXECS/s")
print(f"{'plugin':<16} {'events/s':>10} {'lost':>8} {'host CPU/s':>11} {'µs/event':>9}")
for p in plugins:
    ev = d(("conductor_events_received_total", p)); lost = d(("conductor_events_lost_total", p))
    cpu = d(("conductor_plugin_cpu_seconds_total", p))
    per = f"{cpu / ev * 1e6:9.2f}" if ev else f"{'-':>9}"
    print(f"{p:<16} {ev / secs:>10.0f} {lost:>8.0f} {cpu / secs * 1000:>8.1f} ms {per}")
# Which plugin a program belongs to, by its name and type (opensnoop and
# syscall-latency both name theirs on_enter/on_exit: tracepoint vs tp_btf).
owner = {"count_ingress": "pod-traffic", "count_egress": "pod-traffic", "count_drop": "pod-traffic",
         "on_state": "tcp", "on_retransmit": "tcp", "on_ingress": "dns", "on_egress": "dns",
         "on_mark_victim": "oomkill", "handle_exec": "exec-counter"}
print(f"BPF programs (kernel statistics):\n  {'plugin':<16} {'program':<16} {'runs/s':>10} {'ns/run':>8}")
rows = []
for line in open(sys.argv[3]):
    name, ptype, runs, ns = line.split(); runs, ns = int(runs), int(ns)
    plugin = owner.get(name) or ("opensnoop" if ptype == "5" else "syscall-latency" if ptype == "26" else "?")
    rows.append((plugins.index(plugin) if plugin in plugins else 99, plugin, name, runs, ns))
for _, plugin, name, runs, ns in sorted(rows):
    print(f"  {plugin:<16} {name:<16} {runs / secs:>10.0f} {ns / runs if runs else 0:>8.0f}")
PY
echo "host: $(( (c1 - c0) * 10 )) ms CPU over the load ($(awk "BEGIN{printf \"%.1f\", ($c1 - $c0) / 100 / ($t1 - $t0) * 100}") % of one core), RSS $((rss / 1024)) MiB"
kill -INT $host; wait $host || true
