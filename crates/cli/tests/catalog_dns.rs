//! The dns catalog plugin on the real kernel, with its default spec: a
//! tiny resolver (Python's standard library) answers on an address of a
//! network namespace the test creates; a process of a pod's container in
//! the other namespace sends known A queries (answered NOERROR) and AAAA
//! queries (answered NXDOMAIN), and each is counted once by pod, query
//! type and return code, with its latency.

mod catalog;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use catalog::*;
use conductor_test_support::*;

const FOUND: u32 = 9;
const MISSING: u32 = 4;

/// Answers `count` queries on `addr`:53, then exits: names under
/// `missing.test` with NXDOMAIN, all others with NOERROR and one A record.
const RESOLVER: &str = r#"
import socket, struct, sys
addr, count = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 53))
print("ready", flush=True)
for _ in range(count):
    data, peer = s.recvfrom(512)
    qid, = struct.unpack(">H", data[:2])
    question = data[12:]
    if b"\x07missing\x04test\x00" in question:
        flags, answers = 0x8183, b""
    else:
        flags = 0x8180
        answers = struct.pack(">HHHIH4s", 0xC00C, 1, 1, 60, 4, bytes([192, 0, 2, 1]))
    count_an = 1 if answers else 0
    s.sendto(struct.pack(">HHHHHH", qid, flags, 1, count_an, 0, 0) + question + answers, peer)
"#;

/// Sends the queries one after another, each after the previous answer,
/// and checks every answer's id and return code.
const CLIENT: &str = r#"
import socket, struct, sys
server, found, missing = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def query(qid, name, qtype):
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", qtype, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.connect((server, 53))
for qid, name, qtype, rcode, n in [(1, "ok.test", 1, 0, found), (1000, "x.missing.test", 28, 3, missing)]:
    for i in range(n):
        s.send(query(qid + i, name, qtype))
        answer = s.recv(512)
        got_id, flags = struct.unpack(">HH", answer[:4])
        assert got_id == qid + i and flags & 0xF == rcode, (got_id, flags)
"#;

#[test]
fn dns_counts_queries_responses_by_rcode_and_latency_by_pod_and_qtype() {
    if !require_root() {
        return;
    }
    let net = NetnsPair::new("dns", 61);
    let cgroups = TestCgroups::new("dns");
    let pod = TestPod::new(&cgroups, 41, "shop", "lookup", &[&net.a_addr]);
    let cluster = Cluster::start(&default_spec("dns"), &cgroups, &[&pod]);
    let host = &cluster.host;

    let total = (FOUND + MISSING).to_string();
    let mut resolver = std::process::Command::new("ip")
        .args(["netns", "exec", &net.b, &python(), "-c", RESOLVER])
        .args([net.b_addr.as_str(), &total])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(resolver.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready", "the resolver did not start");

    let status = pod
        .command(
            Some(&net.a),
            &python(),
            &[
                "-c",
                CLIENT,
                &net.b_addr,
                &FOUND.to_string(),
                &MISSING.to_string(),
            ],
        )
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the client's queries were not all answered"
    );
    assert!(resolver.wait().unwrap().success());

    let series = |metric: &str, rest: &str| {
        format!(r#"dns__{metric}{{plugin="dns",{},{rest}}}"#, pod.labels())
    };
    let nx = series("responses_total", r#"qtype="AAAA",rcode="NXDOMAIN""#);
    host.wait_for_metric(&nx, Duration::from_secs(15), |v| v >= MISSING as f64);
    let text = host.scrape();
    for (metric, rest, want) in [
        ("queries_total", r#"qtype="A""#, FOUND),
        ("queries_total", r#"qtype="AAAA""#, MISSING),
        ("responses_total", r#"qtype="A",rcode="NOERROR""#, FOUND),
        (
            "responses_total",
            r#"qtype="AAAA",rcode="NXDOMAIN""#,
            MISSING,
        ),
        ("latency_seconds_count", r#"qtype="A""#, FOUND),
        ("latency_seconds_count", r#"qtype="AAAA""#, MISSING),
    ] {
        let s = series(metric, rest);
        assert_eq!(value(&text, &s), Some(want as f64), "{s}\n{text}");
    }
    // No other return code or query type for the pod.
    let pod_responses: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("dns__responses_total{") && l.contains(r#"pod="lookup""#))
        .collect();
    assert_eq!(pod_responses.len(), 2, "{pod_responses:#?}");
    let latency = series("latency_seconds_sum", r#"qtype="A""#);
    assert!(value(&text, &latency).is_some_and(|s| s > 0.0), "{latency}");
    for counter in ["malformed_total", "events_lost_total"] {
        assert_eq!(
            value(&text, &format!(r#"dns__{counter}{{plugin="dns"}}"#)),
            Some(0.0),
            "{counter}\n{text}"
        );
    }
    drop(cluster);
}
