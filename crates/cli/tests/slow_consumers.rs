//! Watch and Logs streams that are never read, while plugins churn, keep
//! the daemon's memory bounded (issue 19): each stream holds at most its
//! HTTP/2 window and a place in a fixed-size broadcast backlog; a reader
//! that fell behind is told (Logs: a note with the number of lines skipped)
//! or re-sent the current state (Watch).

use std::time::Duration;

use conductor_api::v1;
use conductor_test_support::daemon::*;
use conductor_test_support::*;

const LONG: Duration = Duration::from_secs(120);
const MIB: u64 = 1 << 20;
const WATCHERS: usize = 32;
const FOLLOWERS: usize = 8;
/// Load + unload cycles per phase; each makes about four changes, so a
/// phase alone is more than a watcher's backlog (1024) and HTTP/2 window.
const CYCLES: usize = 300;

fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/<pid>/status")
        * 1024
}

async fn churn(c: &mut v1::conductor_client::ConductorClient<tonic::transport::Channel>, n: usize) {
    for _ in 0..n {
        c.load(load_request(&steady_spec("churn", "x")))
            .await
            .unwrap();
        c.unload(v1::UnloadRequest {
            name: "churn".into(),
        })
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_watch_and_logs_streams_stay_bounded() {
    let daemon = Daemon::start();
    let pid = daemon.pid();
    let mut c = daemon.client().await;
    let chatty = format!(
        "name: chatty\ncomponent: {}\n",
        path_str(&artifact("testing_chatty.wasm"))
    );
    c.load(load_request(&chatty)).await.unwrap();

    // A watcher that keeps up, counting every change.
    let mut fast = daemon
        .client()
        .await
        .watch(v1::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let counted = tokio::spawn(async move {
        let mut n = 0usize;
        while let Ok(Some(e)) = fast.message().await {
            n += 1;
            if e.status
                .is_some_and(|s| s.name == "marker" && s.phase == v1::Phase::Running as i32)
            {
                return n;
            }
        }
        panic!("the fast watcher's stream ended before the marker");
    });

    // Streams never read, each on its own connection as separate clients.
    let mut slow_watches = Vec::new();
    for _ in 0..WATCHERS {
        let mut w = daemon.client().await;
        slow_watches.push(
            w.watch(v1::WatchRequest::default())
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let mut slow_logs = Vec::new();
    for _ in 0..FOLLOWERS {
        let mut l = daemon.client().await;
        slow_logs.push(
            l.logs(v1::LogsRequest {
                name: "chatty".into(),
                follow: true,
                tail: 1,
            })
            .await
            .unwrap()
            .into_inner(),
        );
    }

    churn(&mut c, 20).await; // warm the allocator and the compile cache
    let start = rss(pid);
    churn(&mut c, CYCLES).await;
    let first = rss(pid);
    churn(&mut c, CYCLES).await;
    let second = rss(pid);
    println!(
        "daemon VmRSS: {:.1} MiB at start, {:.1} MiB after {CYCLES} cycles, {:.1} MiB after {}, with {WATCHERS} watchers and {FOLLOWERS} log followers unread",
        start as f64 / MIB as f64,
        first as f64 / MIB as f64,
        second as f64 / MIB as f64,
        2 * CYCLES
    );
    // Unbounded buffering would add about as much in the second phase as
    // in the first (tens of MiB for this many streams); bounded, the second
    // phase adds nothing that stays.
    assert!(
        second.saturating_sub(first) < 8 * MIB,
        "the daemon grew by {} KiB in the second phase",
        second.saturating_sub(first) / 1024
    );

    c.load(load_request(&steady_spec("marker", "x")))
        .await
        .unwrap();
    let all = tokio::time::timeout(LONG, counted)
        .await
        .expect("the fast watcher never saw the marker")
        .unwrap();

    // A slow watcher, read at last: it skipped what it could not hold and
    // then has the current state, up to the marker.
    let mut slow = slow_watches.pop().unwrap();
    let mut read = 0usize;
    let mut chatty_seen = false;
    loop {
        let e = tokio::time::timeout(LONG, slow.message())
            .await
            .expect("the slow watcher never saw the marker")
            .expect("the slow watcher's stream failed")
            .expect("the slow watcher's stream ended");
        read += 1;
        let s = e.status.unwrap();
        chatty_seen |= s.name == "chatty";
        if s.name == "marker" && s.phase == v1::Phase::Running as i32 {
            break;
        }
    }
    println!("the fast watcher read {all} events, the slow one {read}");
    assert!(
        read < all,
        "the slow watcher got every one of {all} changes: nothing bounded its backlog"
    );
    assert!(chatty_seen, "the resync re-sent the plugins' state");

    // A slow log follower, read at last, is told it fell behind.
    let mut logs = slow_logs.pop().unwrap();
    let note = wait_for_note(&mut logs).await;
    assert!(note.contains("lines were skipped"), "{note}");
}

async fn wait_for_note(logs: &mut tonic::Streaming<v1::LogLine>) -> String {
    loop {
        let line = tokio::time::timeout(LONG, logs.message())
            .await
            .expect("no lag note in the slow follower's stream")
            .expect("the log stream failed")
            .expect("the log stream ended");
        if line.message.contains("fell behind") {
            return line.message;
        }
    }
}
