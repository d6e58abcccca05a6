//! A plugin that keeps faulting (the `trap` test component panics on every
//! tick) goes to `CrashLoopBackOff` with its last error and next retry in
//! its status, the CLI and `/readyz`; `restart.maxBackoffSeconds` caps the
//! wait and `restart.giveUpAfter` stops retrying.

use std::time::{Duration, SystemTime};

use conductor_api::v1::{self, Phase};
use conductor_test_support::daemon::*;
use conductor_test_support::*;

const LONG: Duration = Duration::from_secs(60);

fn trap_spec(name: &str, restart: &str) -> String {
    format!(
        "name: {name}\ncomponent: {}\ntickIntervalMs: 10\nrestart: {restart}\n",
        path_str(&artifact("testing_trap.wasm"))
    )
}

/// A protobuf timestamp's seconds and nanoseconds as a `SystemTime`.
fn time(seconds: i64, nanos: i32) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(seconds as u64, nanos as u32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_keeps_faulting_is_in_crash_loop_back_off_with_its_next_retry() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    let mut c = d.client().await;
    c.load(load_request(&trap_spec("looper", "{maxBackoffSeconds: 1}")))
        .await
        .unwrap();
    let s = wait_for_phase(&mut c, "looper", Phase::CrashLoopBackOff, LONG).await;
    assert!(s.restarts >= 2, "{s:?}");
    assert!(s.last_error.contains("tick failed: trap"), "{s:?}");
    // The next retry is announced, no later than the backoff cap allows.
    let since = s.phase_since.map(|t| time(t.seconds, t.nanos)).unwrap();
    let retry = s
        .next_retry
        .map(|t| time(t.seconds, t.nanos))
        .expect("a next retry while in CrashLoopBackOff");
    let wait = retry.duration_since(since).unwrap_or_default();
    assert!(wait <= Duration::from_secs(1), "{wait:?} past the cap");

    // The CLI shows the phase, when it retries and why. (Each new
    // instance runs for a tick before it faults again: look until a
    // listing falls between two instances.)
    let row = tokio::task::block_in_place(|| {
        wait_for(
            LONG,
            "conductor list to show the crash loop",
            || d.log_text(),
            || {
                let out = d.cli(&["list"]);
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .find(|l| l.starts_with("looper ") && l.contains("CrashLoopBackOff"))
                    .map(str::to_owned)
            },
        )
    });
    assert!(row.contains("retry in"), "{row}");
    assert!(row.contains("tick failed: trap"), "{row}");
    let looper = tokio::task::block_in_place(|| {
        wait_for(
            LONG,
            "conductor list -o json to show the crash loop",
            || d.log_text(),
            || {
                let out = d.cli(&["list", "-o", "json"]);
                let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                json.as_array()?
                    .iter()
                    .find(|p| p["name"] == "looper" && p["phase"] == "CrashLoopBackOff")
                    .cloned()
            },
        )
    });
    assert!(looper["nextRetry"].is_string(), "{looper}");

    // Not ready while a plugin crash-loops.
    let ready = d.metrics_url.replace("/metrics", "/readyz");
    let body = tokio::task::block_in_place(|| {
        wait_for(
            LONG,
            "readiness to name the crash-looping plugin",
            || d.log_text(),
            || match http_get(&ready) {
                Ok((503, body)) if body.contains("plugin looper is CrashLoopBackOff") => Some(body),
                _ => None,
            },
        )
    });
    assert!(body.contains("tick failed: trap"), "{body}");

    // An update to a working version ends the loop.
    c.update(v1::UpdateRequest {
        spec: Some(wire_spec(&steady_spec("looper", "fixed"))),
        annotations: Default::default(),
    })
    .await
    .unwrap();
    let s = wait_for_phase(&mut c, "looper", Phase::Running, LONG).await;
    assert_eq!(s.next_retry, None, "{s:?}");
    assert_eq!(http_get(&ready).unwrap(), (200, "ready\n".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn give_up_after_stops_restarting_and_says_why() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    let mut c = d.client().await;
    c.load(load_request(&trap_spec(
        "quitter",
        "{maxBackoffSeconds: 1, giveUpAfter: 2}",
    )))
    .await
    .unwrap();
    let s = wait_for_phase(&mut c, "quitter", Phase::Failed, LONG).await;
    assert!(
        s.last_error
            .contains("gave up after 2 faults in a row (restart.giveUpAfter: 2)"),
        "{s:?}"
    );
    assert!(
        s.last_error.contains("last fault: tick failed: trap"),
        "{s:?}"
    );
    assert_eq!(s.next_retry, None, "{s:?}");
    // One restart between the two faults, and none after giving up: the
    // restart counter stays put while the host keeps serving.
    assert_eq!(s.restarts, 1, "{s:?}");
    d.wait_for_metric(
        r#"conductor_plugin_restarts_total{plugin="quitter"}"#,
        LONG,
        |v| v == 1.0,
    );
    let again = c
        .get(v1::GetRequest {
            name: "quitter".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(phase(&again), Phase::Failed);
    assert_eq!(again.restarts, 1);
}

#[test]
fn restart_policy_out_of_range_is_refused_with_the_field() {
    let bad = conductor_api::PluginSpec::from_yaml(&trap_spec(
        "bad",
        "{maxBackoffSeconds: 0, giveUpAfter: 0}",
    ))
    .unwrap_err()
    .to_string();
    assert!(bad.contains("restart.maxBackoffSeconds"), "{bad}");
    assert!(bad.contains("restart.giveUpAfter"), "{bad}");
}
