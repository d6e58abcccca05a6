//! Stock gRPC clients from the registries (Python's grpcio, Node's
//! grpc-js, installed by `cargo xtask deps`) driving a real daemon over its
//! Unix socket with their default options, and with each `:authority` a
//! client is known to send there: `localhost` (grpc-go, tonic, grpc-js), the
//! socket path (grpc-java, grpc-swift) and its percent-encoding (gRPC
//! C-core: Python, Ruby, PHP, C#). Without the patched h2 (vendor/h2) every
//! call but `localhost`'s is reset with PROTOCOL_ERROR.

use conductor_test_support::daemon::Daemon;
use conductor_test_support::*;
use serde_json::Value;

/// h2's debug line when it serves a request whose authority is a path.
const PATH_AUTHORITY_LOG: &str = "ignoring a socket path as authority";

fn daemon() -> Daemon {
    Daemon::start_with_env(
        &[],
        &[(
            "CONDUCTOR_LOG",
            "info,conductor_daemon=debug,h2::server=debug",
        )],
    )
}

/// The socket path percent-encoded as gRPC C-core sends it.
fn percent_encoded(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Run one client against the daemon with `authority`, check every call's
/// result, and return how many times h2 served a path as authority.
fn drive(
    daemon: &Daemon,
    client: std::process::Command,
    authority: &str,
    name: &str,
    phase: &str,
) -> usize {
    let before = daemon.log_text().matches(PATH_AUTHORITY_LOG).count();
    let component = path_str(&artifact("testing_steady.wasm"));
    let out = clients::run(
        client,
        &[
            &path_str(&clients::proto_dir()),
            &path_str(&daemon.socket),
            authority,
            name,
            &component,
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client with authority {authority:?} failed ({}):\n{stderr}\ndaemon log:\n{}",
        out.status,
        daemon.log_text()
    );
    let result: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("client printed no JSON ({e}):\n{stdout}\n{stderr}"));
    eprintln!("authority {authority:?}: {result}");
    assert_eq!(result["list_before"], serde_json::json!([]), "{result}");
    assert_eq!(result["load"]["name"], name, "{result}");
    assert_eq!(result["load"]["generation"], 1, "{result}");
    assert_eq!(result["get"]["name"], name, "{result}");
    assert!(
        result["get"]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{result}"
    );
    // Load returns once the plugin is instantiated; it is Running or about
    // to be.
    let got_phase = result["get"]["phase"].as_str().unwrap_or_default();
    assert!(
        got_phase == phase || got_phase == "PHASE_LOADING",
        "{result}"
    );
    assert_eq!(result["list_after"], serde_json::json!([name]), "{result}");
    assert_eq!(result["get_missing"], "NOT_FOUND", "{result}");
    assert!(daemon.list().is_empty(), "the client's Unload left plugins");
    daemon.log_text().matches(PATH_AUTHORITY_LOG).count() - before
}

#[test]
fn python_grpcio_works_over_the_socket_with_every_authority() {
    if !require_root() {
        return;
    }
    let Some(_) = clients::python() else { return };
    let daemon = daemon();
    let socket = path_str(&daemon.socket);
    let python = || clients::python().expect("checked above");

    // Default options: grpcio chooses the authority itself (the
    // percent-encoded path), and h2 must serve it as a path.
    let served_as_path = drive(&daemon, python(), "default", "py-default", "PHASE_RUNNING");
    assert!(
        served_as_path > 0,
        "grpcio's default authority was not a socket path; daemon log:\n{}",
        daemon.log_text()
    );
    // What grpc-go and tonic send.
    assert_eq!(
        drive(
            &daemon,
            python(),
            "localhost",
            "py-localhost",
            "PHASE_RUNNING"
        ),
        0
    );
    // What grpc-java and grpc-swift send.
    assert!(drive(&daemon, python(), &socket, "py-path", "PHASE_RUNNING") > 0);
    assert!(
        drive(
            &daemon,
            python(),
            &percent_encoded(&socket),
            "py-percent",
            "PHASE_RUNNING"
        ) > 0
    );
}

#[test]
fn node_grpc_js_works_over_the_socket_with_every_authority() {
    if !require_root() {
        return;
    }
    let Some(_) = clients::node() else { return };
    let daemon = daemon();
    let socket = path_str(&daemon.socket);
    let node = || clients::node().expect("checked above");

    // grpc-js sends `localhost` for a unix: target by default.
    drive(&daemon, node(), "default", "js-default", "PHASE_RUNNING");
    assert!(drive(&daemon, node(), &socket, "js-path", "PHASE_RUNNING") > 0);
    assert!(
        drive(
            &daemon,
            node(),
            &percent_encoded(&socket),
            "js-percent",
            "PHASE_RUNNING"
        ) > 0
    );
}

/// The patch is narrow: an authority that is malformed and no socket path
/// is still refused as h2 always did.
#[test]
fn a_malformed_authority_that_is_no_path_is_still_refused() {
    if !require_root() {
        return;
    }
    let Some(node) = clients::node() else { return };
    let daemon = daemon();
    let out = clients::run(
        node,
        &[
            &path_str(&clients::proto_dir()),
            &path_str(&daemon.socket),
            "bad^host",
            "js-bad",
            &path_str(&artifact("testing_steady.wasm")),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a malformed authority was served");
    assert!(
        stderr.contains("13 ")
            || stderr.contains("PROTOCOL_ERROR")
            || stderr.contains("RST_STREAM"),
        "not refused as a protocol error: {stderr}"
    );
    assert!(
        daemon
            .log_text()
            .contains("malformed headers: malformed authority"),
        "h2 did not report the malformed authority; log:\n{}",
        daemon.log_text()
    );
}
