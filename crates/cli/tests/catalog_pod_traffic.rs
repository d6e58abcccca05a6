//! The pod-traffic catalog plugin on the real kernel, with its default
//! spec: two pods in network namespaces joined by a veth pair, UDP
//! datagrams of known size between them, and the counts compared to the
//! byte with what was sent.

mod catalog;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use catalog::*;
use conductor_test_support::*;

/// Datagrams per destination, and their payload.
const TO_POD: u64 = 20;
const TO_OUTSIDE: u64 = 5;
const TO_FULL: u64 = 30;
const PAYLOAD: u64 = 1000;
/// What the cgroup skb programs see of one datagram: from the IPv4 header
/// on (20 bytes, no options), the UDP header (8) and the payload.
const IP_BYTES: u64 = 20 + 8 + PAYLOAD;

#[test]
fn pod_traffic_counts_bytes_packets_and_drops_per_pod_and_peer() {
    if !require_root() {
        return;
    }
    let cgroups = TestCgroups::new("pod-traffic");
    let net = NetnsPair::new("pt", 214);
    let client = TestPod::new(&cgroups, 1, "shop", "client", &[&net.a_addr]);
    let server = TestPod::new(&cgroups, 2, "shop", "server", &[&net.b_addr]);
    let cluster = Cluster::start(&default_spec("pod-traffic"), &cgroups, &[&client, &server]);
    let host = &cluster.host;
    let port = 48_000 + (std::process::id() % 1000) as u16;
    let full_port = port + 1000;

    // The server: one socket that takes everything, one whose receive
    // buffer is as small as the kernel allows and that reads nothing until
    // told, so the kernel drops what does not fit.
    let server_script = format!(
        r#"
import socket, sys
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a.bind(("0.0.0.0", {port}))
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
b.bind(("0.0.0.0", {full_port}))
print("ready", flush=True)
a.settimeout(30)
got = 0
for _ in range({want}):
    got += len(a.recv(65536)) == {PAYLOAD}
sys.stdin.readline()
b.setblocking(False)
drained = 0
try:
    while True:
        b.recv(65536)
        drained += 1
except BlockingIOError:
    pass
print(got, drained, flush=True)
"#,
        want = TO_POD + TO_OUTSIDE,
    );
    let mut srv = server
        .command(Some(&net.b), &python(), &["-c", &server_script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(srv.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    let client_script = format!(
        r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
data = b"x" * {PAYLOAD}
for _ in range({TO_POD}):
    s.sendto(data, ("{server}", {port}))
for _ in range({TO_OUTSIDE}):
    s.sendto(data, ("{extra}", {port}))
for _ in range({TO_FULL}):
    s.sendto(data, ("{server}", {full_port}))
"#,
        server = net.b_addr,
        extra = net.b_extra,
    );
    let status = client
        .command(Some(&net.a), &python(), &["-c", &client_script])
        .status()
        .unwrap();
    assert!(status.success());

    let mut stdin = srv.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(srv.wait().unwrap().success());
    let mut counts = line.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    let (got, drained) = (counts.next().unwrap(), counts.next().unwrap());
    assert_eq!(
        got,
        TO_POD + TO_OUTSIDE,
        "the server received every datagram"
    );
    let dropped = TO_FULL - drained;
    assert!(
        dropped > 0,
        "a receive buffer of the minimum size took all {TO_FULL} datagrams"
    );
    println!("small buffer: {drained} datagrams queued, {dropped} dropped");

    // Every datagram has passed both programs and every drop the
    // tracepoint: the scrape reads the maps (the plugin's collect).
    let text = host.scrape();
    let series = |metric: &str, direction: &str, pod: &TestPod, peer_ns: &str, peer: &str| {
        format!(
            r#"pod_traffic__{metric}_total{{plugin="pod-traffic",direction="{direction}",{},peer_namespace="{peer_ns}",peer_pod="{peer}"}}"#,
            pod.labels()
        )
    };
    let check =
        |metric: &str, direction: &str, pod: &TestPod, peer_ns: &str, peer: &str, want: u64| {
            let s = series(metric, direction, pod, peer_ns, peer);
            assert_eq!(
                value(&text, &s),
                Some(want as f64),
                "{s}\nmetrics:\n{}\nlog:\n{}",
                text.lines()
                    .filter(|l| l.contains("shop"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                host.log_text()
            );
        };
    // The client sent to the server pod (two ports) and to an address no
    // pod has.
    check("packets", "tx", &client, "shop", "server", TO_POD + TO_FULL);
    check(
        "bytes",
        "tx",
        &client,
        "shop",
        "server",
        (TO_POD + TO_FULL) * IP_BYTES,
    );
    check("packets", "tx", &client, "", "outside", TO_OUTSIDE);
    check("bytes", "tx", &client, "", "outside", TO_OUTSIDE * IP_BYTES);
    // The server received all of it from the client pod: the ingress
    // program runs before the receive buffer is charged, so what the
    // buffer then refuses is received and dropped.
    let all = TO_POD + TO_OUTSIDE + TO_FULL;
    check("packets", "rx", &server, "shop", "client", all);
    check("bytes", "rx", &server, "shop", "client", all * IP_BYTES);
    // Nothing flowed the other way.
    for (pod, direction) in [(&client, "rx"), (&server, "tx")] {
        let prefix = format!(
            r#"pod_traffic__packets_total{{plugin="pod-traffic",direction="{direction}",{}"#,
            pod.labels()
        );
        assert!(!text.contains(&prefix), "unexpected {prefix}:\n{text}");
    }
    let drops = format!(
        r#"pod_traffic__drops_total{{plugin="pod-traffic",{},reason="socket_rcvbuff"}}"#,
        server.labels()
    );
    assert_eq!(
        value(&text, &drops),
        Some(dropped as f64),
        "{drops}\n{text}"
    );
    assert!(
        !text.contains(&format!(
            "pod_traffic__drops_total{{plugin=\"pod-traffic\",{}",
            client.labels()
        )),
        "the client dropped nothing:\n{text}"
    );
    assert!(value(&text, r#"pod_traffic__flows{plugin="pod-traffic"}"#).unwrap() >= 3.0);

    // A second scrape adds nothing: counters move by what changed.
    let again = host.scrape();
    for s in [
        series("bytes", "rx", &server, "shop", "client"),
        series("bytes", "tx", &client, "shop", "server"),
    ] {
        assert_eq!(value(&again, &s), value(&text, &s), "{s}");
    }
    drop(cluster);
}
