//! Connections that hold a descriptor and do nothing are closed (issue 19,
//! defect 8), on the API's Unix socket and on the metrics port, while live
//! clients with nothing to say stay connected; a stream its client stops
//! reading costs the daemon a bounded backlog, not memory without end.
//! Real peers: raw sockets that send nothing or half a request, and the
//! generated gRPC client.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use conductor_api::v1;
use conductor_test_support::daemon::*;
use conductor_test_support::*;

/// Only a bound for a hung test, never a measured threshold: the timeouts
/// under test are seconds.
const LONG: Duration = Duration::from_secs(60);

const FLAGS: &[&str] = &[
    "--api-keepalive-secs",
    "1",
    "--api-keepalive-timeout-secs",
    "2",
    "--api-idle-timeout-secs",
    "3",
    "--metrics-header-timeout-secs",
    "2",
    "--metrics-idle-timeout-secs",
    "3",
];

/// Read until the peer closes; what it sent. Panics if it is still open
/// after [`LONG`].
fn read_until_closed(mut s: impl Read) -> Vec<u8> {
    let until = Instant::now() + LONG;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("reading: {e}"),
        }
        assert!(
            Instant::now() < until,
            "the server kept the connection open for {LONG:?}; it sent {:?}",
            String::from_utf8_lossy(&got)
        );
    }
}

fn metrics_addr(d: &Daemon) -> String {
    d.metrics_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

/// API connections the daemon holds: its descriptors that are connected
/// Unix sockets on the API socket's path (accepted sockets carry the path
/// the listener was bound to in /proc/net/unix: the daemon binds a
/// temporary name beside the socket and renames it, hence the prefix). Counting these, not all
/// descriptors, keeps files or /proc directories the daemon holds for a
/// moment after start-up out of the count.
fn api_connections(pid: i32, socket: &Path) -> usize {
    let socket = socket.to_string_lossy();
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    // Num RefCount Protocol Flags Type St Inode Path; St 03 is connected.
    let inodes: std::collections::HashSet<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() >= 8 && f[5] == "03" && f[7].starts_with(&*socket)).then(|| f[6].to_owned())
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|t| {
            let t = t.to_string_lossy().into_owned();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .filter(|inode| inodes.contains(inode))
        .count()
}

/// A peer that connects to the API socket and sends nothing, and one that
/// sends half the HTTP/2 preface, are disconnected and their descriptors
/// freed; before, both were held forever.
#[test]
fn silent_and_half_open_api_connections_are_closed() {
    let daemon = Daemon::start_with(FLAGS);
    let before = api_connections(daemon.pid(), &daemon.socket);
    let silent = UnixStream::connect(&daemon.socket).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut half = UnixStream::connect(&daemon.socket).unwrap();
    half.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    // Both connections are open in the daemon now.
    let held = || {
        let links: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .map(|p| p.display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        format!("the daemon holds {links:?}")
    };
    wait_for(LONG, "the daemon to accept both", held, || {
        (api_connections(daemon.pid(), &daemon.socket) >= before + 2).then_some(())
    });
    read_until_closed(&silent);
    read_until_closed(&half);
    wait_for(
        LONG,
        "the daemon to close both sockets",
        || daemon.log_text(),
        || (api_connections(daemon.pid(), &daemon.socket) <= before).then_some(()),
    );
}

/// A real client with a Watch open and nothing happening for several idle
/// timeouts stays connected (it answers the daemon's HTTP/2 pings) and
/// still gets the next change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_stays_connected() {
    let daemon = Daemon::start_with(FLAGS);
    let mut watcher = daemon.client().await;
    let mut stream = watcher
        .watch(v1::WatchRequest {
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // Three idle timeouts without a change.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let mut c = daemon.client().await;
    c.load(load_request(&steady_spec("after-quiet", "x")))
        .await
        .unwrap();
    let event = tokio::time::timeout(LONG, stream.message())
        .await
        .expect("the watch delivered nothing")
        .expect("the watch connection was closed")
        .expect("the watch ended");
    assert_eq!(
        event.status.map(|s| s.name).as_deref(),
        Some("after-quiet"),
        "log:\n{}",
        daemon.log_text()
    );
}

/// The tick number of a `chatty` log line, if it is one.
fn chatty_tick(message: &str) -> Option<u64> {
    let rest = message
        .strip_prefix("chatty tick ")
        .or_else(|| message.strip_prefix("chatty stdout tick "))?;
    rest.split(' ').next()?.parse().ok()
}

/// A `Logs --follow` stream whose client stops reading while its plugin
/// logs on: the daemon keeps at most its backlog for it (the HTTP/2 window,
/// h2's send buffer and the socket buffers held about 2,000 of these lines
/// here, the backlog 1,024 more), so when the client reads again it is told how many lines it
/// missed and goes on with current lines, instead of the daemon having
/// queued everything. Before the backlog was bounded this could not pass:
/// the reader would get every line in order and no note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_reader_that_stops_reading_is_told_what_it_missed() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let mut c = daemon.client().await;
    // ~650-byte lines: the log budget's rate in lines and in bytes meet
    // there, so the reader's buffers fill with the fewest seconds of logging.
    let spec = format!(
        "name: chatty\ncomponent: {}\ntickIntervalMs: 10\nconfig:\n  lineBytes: \"650\"\n",
        path_str(&artifact("testing_chatty.wasm"))
    );
    c.load(load_request(&spec)).await.unwrap();
    let chatty_lines = |d: &Daemon| {
        d.log_text()
            .lines()
            .filter(|l| l.contains("chatty tick") || l.contains("chatty stdout tick"))
            .count()
    };
    let mut reader = daemon.client().await;
    let mut stream = reader
        .logs(v1::LogsRequest {
            name: "chatty".into(),
            follow: true,
            tail: 0,
        })
        .await
        .unwrap()
        .into_inner();
    // Not reading while well over window + buffers + backlog are logged.
    let start = chatty_lines(&daemon);
    let until = Instant::now() + Duration::from_secs(180);
    while chatty_lines(&daemon) < start + 6000 {
        assert!(
            Instant::now() < until,
            "chatty logged only {} lines; log:\n{}",
            chatty_lines(&daemon) - start,
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logged = chatty_lines(&daemon) - start;
    // Now read: the lines that were queued, then the note, then current ones.
    let mut before = Vec::new();
    let skipped = loop {
        let line = tokio::time::timeout(LONG, stream.message())
            .await
            .expect("no line arrived")
            .expect("the stream failed")
            .expect("the stream ended");
        if let Some(rest) = line
            .message
            .strip_suffix(" lines were skipped: this reader fell behind")
        {
            assert_eq!(line.level, "warn", "{line:?}");
            break rest.parse::<u64>().expect("a count of skipped lines");
        }
        before.push(line.message);
        assert!(
            before.len() <= logged + 2000,
            "read {} lines, more than were logged while the reader stalled, and no note",
            before.len()
        );
    };
    let last_before = before
        .iter()
        .filter_map(|m| chatty_tick(m))
        .max()
        .unwrap_or(0);
    let after = loop {
        let line = tokio::time::timeout(LONG, stream.message())
            .await
            .expect("no line arrived after the note")
            .expect("the stream failed")
            .expect("the stream ended");
        if let Some(tick) = chatty_tick(&line.message) {
            break tick;
        }
    };
    println!(
        "{logged} lines logged while unread; {} delivered before the note, {skipped} skipped",
        before.len()
    );
    assert!(skipped > 0);
    assert!(
        before.len() < logged,
        "all {logged} lines were queued for the reader"
    );
    assert!(
        after > last_before,
        "after the note the reader got tick {after}, not newer than {last_before}"
    );
    c.unload(v1::UnloadRequest {
        name: "chatty".into(),
    })
    .await
    .unwrap();
}

/// A `Watch` whose client stops reading while a plugin is updated over and
/// over (each change carries the plugin's ~40 KB config, so the HTTP/2
/// window and socket buffers hold few of them): the daemon keeps at most its
/// 1,024-change backlog for the reader, and when it reads again it gets the
/// changes that were queued, then the current state (it skips intermediate
/// generations, never the last one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_stops_reading_skips_to_the_current_state() {
    if !require_root() {
        return;
    }
    const UPDATES: u64 = 1500;
    let daemon = Daemon::start();
    let mut c = daemon.client().await;
    let big = "x".repeat(40_000);
    c.load(load_request(&steady_spec("churned", &format!("0 {big}"))))
        .await
        .unwrap();
    let mut reader = daemon.client().await;
    let mut stream = reader
        .watch(v1::WatchRequest {
            name: "churned".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = 0;
    for i in 1..=UPDATES {
        let status = c
            .update(v1::UpdateRequest {
                spec: Some(wire_spec(&steady_spec("churned", &format!("{i} {big}")))),
                annotations: HashMap::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("update {i}: {e}; log:\n{}", daemon.log_text()))
            .into_inner()
            .status
            .expect("a status");
        last = status.generation;
    }
    // Read until the last generation arrives.
    let mut generations = Vec::new();
    loop {
        let event = tokio::time::timeout(LONG, stream.message())
            .await
            .expect("the watch delivered nothing")
            .expect("the watch failed")
            .expect("the watch ended");
        let status = event.status.expect("a status");
        generations.push(status.generation);
        if status.generation == last {
            break;
        }
        assert!(
            generations.len() as u64 <= 4 * UPDATES,
            "{} events and generation {last} never came",
            generations.len()
        );
    }
    let gaps = generations.windows(2).filter(|w| w[1] > w[0] + 1).count();
    println!(
        "{UPDATES} updates while unread: {} events read, {gaps} skips, last generation {last}",
        generations.len()
    );
    assert!(
        gaps >= 1,
        "the reader got every generation in order: nothing was bounded ({generations:?})"
    );
    assert!(
        generations.windows(2).all(|w| w[1] >= w[0]),
        "generations went backwards: {generations:?}"
    );
}

/// On the metrics port: a silent connection, a request whose headers never
/// end (one byte at a time, faster than the idle timeout: only the
/// header-read timeout ends it) and a keep-alive connection left idle after
/// a scrape are all closed; a plain scrape still works.
#[test]
fn slow_and_idle_metrics_connections_are_closed() {
    let daemon = Daemon::start_with(FLAGS);
    let addr = metrics_addr(&daemon);
    assert!(daemon.scrape().contains("conductor_"), "a scrape works");

    let silent = TcpStream::connect(&addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    read_until_closed(&silent);

    // Slowloris: a header byte every 500 ms never lets the idle timeout
    // fire.
    let slow = TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut writer = slow.try_clone().unwrap();
    writer
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let until = Instant::now() + LONG;
    let mut buf = [0u8; 4096];
    let mut answer = Vec::new();
    'slow: loop {
        assert!(
            Instant::now() < until,
            "a request whose headers never end was kept for {LONG:?}"
        );
        if writer.write_all(b"X").is_err() {
            break; // closed by the daemon
        }
        match (&slow).read(&mut buf) {
            Ok(0) => break 'slow,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break 'slow,
            Err(_) => {} // nothing yet
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains(" 200 "), "{answer}");

    // Keep-alive, then idle.
    let mut kept = TcpStream::connect(&addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let got = String::from_utf8_lossy(&read_until_closed(&kept)).into_owned();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.ends_with("ok\n"), "{got}");
}

/// The idle timeout must exceed the ping interval, or live clients would be
/// cut off: the daemon refuses such flags and says which.
#[test]
fn an_idle_timeout_below_the_ping_interval_is_refused() {
    let out = cli_output(
        std::process::Command::new(conductor_bin())
            .arg("serve")
            .args(["--socket", "/nonexistent/conductor.sock"])
            .args([
                "--api-keepalive-secs",
                "30",
                "--api-idle-timeout-secs",
                "10",
            ]),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--api-idle-timeout-secs"), "{err}");
}
