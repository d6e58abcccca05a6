//! The tcp catalog plugin on the real kernel, with its default spec: two
//! pods in network namespaces joined by a veth pair; connections made,
//! refused and left unanswered on purpose, compared with what the client
//! saw and with the kernel's own retransmit count for its socket.

mod catalog;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use catalog::*;
use conductor_test_support::*;

/// Connections the client completes, and connects it makes to a closed port.
const COMPLETE: u64 = 3;
const REFUSED: u64 = 2;

#[test]
fn tcp_counts_connections_failures_retransmits_and_rtt_per_pod_and_peer() {
    if !require_root() {
        return;
    }
    let cgroups = TestCgroups::new("tcp");
    let net = NetnsPair::new("tc", 215);
    let client = TestPod::new(&cgroups, 11, "shop", "client", &[&net.a_addr]);
    let server = TestPod::new(&cgroups, 12, "shop", "server", &[&net.b_addr]);
    let cluster = Cluster::start(&default_spec("tcp"), &cgroups, &[&client, &server]);
    let host = &cluster.host;
    let port = 49_000 + (std::process::id() % 1000) as u16;
    let closed_port = port + 1000;
    // An address of the veth's subnet that namespace b neither has nor
    // forwards: b drops what is sent there, silently (forwarding is off,
    // so no ICMP), and SYNs to it are retransmitted.
    let silent = net
        .b_extra
        .rsplit_once('.')
        .map(|(p, _)| format!("{p}.4"))
        .unwrap();
    ip(&[
        "-n",
        &net.a,
        "neigh",
        "replace",
        &silent,
        "lladdr",
        "02:cd:00:00:00:0b",
        "dev",
        &net.a_if,
        "nud",
        "permanent",
    ]);

    // The server echoes one line per connection, then closes it.
    let server_script = format!(
        r#"
import socket
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", {port}))
l.listen(16)
print("ready", flush=True)
for _ in range({COMPLETE}):
    c, _ = l.accept()
    c.sendall(c.recv(100))
    c.close()
print("done", flush=True)
"#
    );
    let mut srv = server
        .command(Some(&net.b), &python(), &["-c", &server_script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(srv.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    // The client: complete connections, refused ones, and one to the
    // silent address that times out, reporting the kernel's count of its
    // retransmissions (tcp_info.tcpi_total_retrans, offset 100).
    let client_script = format!(
        r#"
import socket, struct
for _ in range({COMPLETE}):
    s = socket.create_connection(("{server}", {port}))
    s.sendall(b"hello\n")
    assert s.recv(100) == b"hello\n"
    s.close()
for _ in range({REFUSED}):
    try:
        socket.create_connection(("{server}", {closed_port}))
        raise SystemExit("connected to a closed port")
    except ConnectionRefusedError:
        pass
s = socket.socket()
s.settimeout(2.5)
try:
    s.connect(("{silent}", {port}))
    raise SystemExit("connected to a silent address")
except socket.timeout:
    pass
info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
print(struct.unpack_from("I", info, 100)[0], flush=True)
s.close()
"#,
        server = net.b_addr,
    );
    let output = client
        .command(Some(&net.a), &python(), &["-c", &client_script])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "the client failed");
    let retrans: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(
        retrans >= 1,
        "the SYN to the silent address was never retransmitted"
    );
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    assert!(srv.wait().unwrap().success());
    println!("SYN retransmissions of the timed-out connect: {retrans}");

    let conn = |event: &str, pod: &TestPod, peer_ns: &str, peer: &str| {
        format!(
            r#"tcp__connections_total{{plugin="tcp",event="{event}",{},peer_namespace="{peer_ns}",peer_pod="{peer}"}}"#,
            pod.labels()
        )
    };
    let peer_labels = |pod: &TestPod, peer_ns: &str, peer: &str| {
        format!(
            r#"{},peer_namespace="{peer_ns}",peer_pod="{peer}""#,
            pod.labels()
        )
    };
    // The server's side closes last: wait for its closes, then compare all.
    host.wait_for_metric(
        &conn("closed", &server, "shop", "client"),
        Duration::from_secs(20),
        |v| v >= COMPLETE as f64,
    );
    host.wait_for_metric(
        &format!(
            r#"tcp__retransmits_total{{plugin="tcp",{}}}"#,
            peer_labels(&client, "", "outside")
        ),
        Duration::from_secs(20),
        |v| v >= retrans as f64,
    );
    let text = host.scrape();
    let expect = [
        (conn("opened", &client, "shop", "server"), COMPLETE),
        (conn("closed", &client, "shop", "server"), COMPLETE),
        (conn("failed", &client, "shop", "server"), REFUSED),
        (conn("failed", &client, "", "outside"), 1),
        (conn("accepted", &server, "shop", "client"), COMPLETE),
        (conn("closed", &server, "shop", "client"), COMPLETE),
        (
            format!(
                r#"tcp__retransmits_total{{plugin="tcp",{}}}"#,
                peer_labels(&client, "", "outside")
            ),
            retrans,
        ),
        (
            format!(
                r#"tcp__rtt_seconds_count{{plugin="tcp",{}}}"#,
                peer_labels(&client, "shop", "server")
            ),
            COMPLETE,
        ),
        (
            format!(
                r#"tcp__rtt_seconds_count{{plugin="tcp",{}}}"#,
                peer_labels(&server, "shop", "client")
            ),
            COMPLETE,
        ),
    ];
    let shop: Vec<&str> = text.lines().filter(|l| l.contains("shop")).collect();
    for (series, want) in &expect {
        assert_eq!(
            value(&text, series),
            Some(*want as f64),
            "{series}\n{}",
            shop.join("\n")
        );
    }
    // Nothing else happened between the two pods: no other events, and no
    // retransmits on the veth (it loses nothing).
    for (event, pod) in [
        ("accepted", &client),
        ("opened", &server),
        ("failed", &server),
    ] {
        let prefix = format!(
            r#"tcp__connections_total{{plugin="tcp",event="{event}",{}"#,
            pod.labels()
        );
        assert!(
            !text.contains(&prefix),
            "unexpected {prefix}:\n{}",
            shop.join("\n")
        );
    }
    assert!(
        !text.contains(&format!(
            r#"tcp__retransmits_total{{plugin="tcp",{}"#,
            peer_labels(&client, "shop", "server")
        )),
        "retransmits between the pods:\n{}",
        shop.join("\n")
    );
    // Closed connections carry their smoothed RTT (the kernel's is never 0
    // once a segment was acknowledged).
    let rtt_sum = value(
        &text,
        &format!(
            r#"tcp__rtt_seconds_sum{{plugin="tcp",{}}}"#,
            peer_labels(&client, "shop", "server")
        ),
    )
    .unwrap();
    assert!(
        rtt_sum > 0.0,
        "the smoothed RTT of a closed connection is 0"
    );
    assert_eq!(
        value(&text, r#"tcp__events_lost_total{plugin="tcp"}"#),
        Some(0.0)
    );
    drop(cluster);
}
