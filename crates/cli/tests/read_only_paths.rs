//! `readOnlyPaths`: a plugin reads the directories its spec grants, as
//! WASI preopens, and nothing else: not a file beside them, not through
//! `..` or a symlink that leads out, and it writes nothing, even inside.
//! A grant the host cannot honour is refused at load with the field named.

use std::time::Duration;

use conductor_test_support::*;

fn probe_spec(name: &str, grants: &str, config: &str) -> String {
    format!(
        "name: {name}\ncomponent: {}\nreadOnlyPaths:\n{grants}\nconfig:\n{config}\n",
        path_str(&artifact("testing_fs_probe.wasm"))
    )
}

#[test]
fn a_plugin_reads_what_is_granted_and_nothing_else() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let granted = dir.path().join("granted");
    std::fs::create_dir_all(granted.join("sub")).unwrap();
    std::fs::write(granted.join("hello.txt"), "hello").unwrap();
    std::fs::write(granted.join("sub/inner.txt"), "inner!").unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "a secret beside the grant").unwrap();
    // Links that lead out of the granted directory, by absolute and by
    // relative path.
    std::os::unix::fs::symlink(&secret, granted.join("absolute-link")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", granted.join("relative-link")).unwrap();
    // A link that stays inside is followed.
    std::os::unix::fs::symlink("sub/inner.txt", granted.join("inside-link")).unwrap();

    let reads = [
        "/data/hello.txt",
        "/data/sub/inner.txt",
        "/data/inside-link",
        "/data/absolute-link",
        "/data/relative-link",
        "/data/../secret.txt",
        "/data/sub/../../secret.txt",
        &path_str(&secret),
        &path_str(&granted.join("hello.txt")),
        "/etc/hostname",
        "/proc/self/status",
    ];
    let spec = probe_spec(
        "probe",
        &format!("  - path: {}\n    guestPath: /data", path_str(&granted)),
        &format!(
            "  read: \"{}\"\n  list: \"/data,/data/sub,/,/etc\"\n  write: \"/data/hello.txt,/data/new.txt\"",
            reads.join(",")
        ),
    );
    let host = Host::start(&spec);
    host.wait_for_metric(
        r#"probe__write_ok{plugin="probe",path="/data/new.txt"}"#,
        Duration::from_secs(30),
        |_| true,
    );
    let text = host.scrape();
    let read = |p: &str| {
        value(
            &text,
            &format!(r#"probe__read_bytes{{plugin="probe",path="{p}"}}"#),
        )
        .unwrap_or_else(|| panic!("no read_bytes for {p} in\n{text}"))
    };
    assert_eq!(read("/data/hello.txt"), 5.0);
    assert_eq!(read("/data/sub/inner.txt"), 6.0);
    assert_eq!(read("/data/inside-link"), 6.0);
    for p in &reads[3..] {
        assert_eq!(read(p), -1.0, "{p} was readable:\n{text}");
    }
    let list = |p: &str| {
        value(
            &text,
            &format!(r#"probe__list_entries{{plugin="probe",path="{p}"}}"#),
        )
        .unwrap()
    };
    // hello.txt, sub, and the three links.
    assert_eq!(list("/data"), 5.0);
    assert_eq!(list("/data/sub"), 1.0);
    assert_eq!(list("/"), -1.0);
    assert_eq!(list("/etc"), -1.0);
    let write = |p: &str| {
        value(
            &text,
            &format!(r#"probe__write_ok{{plugin="probe",path="{p}"}}"#),
        )
        .unwrap()
    };
    assert_eq!(write("/data/hello.txt"), 0.0);
    assert_eq!(write("/data/new.txt"), 0.0);
    assert_eq!(
        std::fs::read_to_string(granted.join("hello.txt")).unwrap(),
        "hello"
    );
    assert!(!granted.join("new.txt").exists());
}

#[test]
fn a_plugin_without_grants_reads_nothing() {
    if !require_root() {
        return;
    }
    let spec = format!(
        "name: bare\ncomponent: {}\nconfig:\n  read: \"/etc/hostname,/proc/self/status\"\n  list: \"/,.\"\n",
        path_str(&artifact("testing_fs_probe.wasm"))
    );
    let host = Host::start(&spec);
    host.wait_for_metric(
        r#"bare__list_entries{plugin="bare",path="."}"#,
        Duration::from_secs(30),
        |_| true,
    );
    let text = host.scrape();
    for (metric, path) in [
        ("read_bytes", "/etc/hostname"),
        ("read_bytes", "/proc/self/status"),
        ("list_entries", "/"),
        ("list_entries", "."),
    ] {
        assert_eq!(
            value(
                &text,
                &format!(r#"bare__{metric}{{plugin="bare",path="{path}"}}"#)
            ),
            Some(-1.0),
            "{metric} {path}:\n{text}"
        );
    }
}

#[test]
fn grants_the_host_cannot_honour_are_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file.txt");
    std::fs::write(&file, "x").unwrap();
    let missing = path_str(&dir.path().join("missing"));
    let file = path_str(&file);
    let cases = [
        (
            format!("  - path: {missing}"),
            "readOnlyPaths[0]: cannot open".to_owned(),
        ),
        (
            format!("  - path: {file}"),
            format!("readOnlyPaths[0]: {file} is not a directory"),
        ),
        (
            "  - path: /tmp/../etc".to_owned(),
            "readOnlyPaths[0].path".to_owned(),
        ),
        (
            "  - path: relative/dir".to_owned(),
            "readOnlyPaths[0].path".to_owned(),
        ),
        (
            "  - path: /tmp\n  - path: /var/tmp\n    guestPath: /tmp".to_owned(),
            "readOnlyPaths[1]".to_owned(),
        ),
    ];
    for (grants, expected) in cases {
        let spec_file = dir.path().join("spec.yaml");
        std::fs::write(&spec_file, probe_spec("refused", &grants, "  read: /x")).unwrap();
        let out = std::process::Command::new(conductor_bin())
            .args(["run", "--metrics-addr", "127.0.0.1:0", "--cache-dir"])
            .arg(dir.path().join("cache"))
            .arg(&spec_file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{grants} was accepted:\n{stderr}");
        assert!(
            stderr.contains(&expected),
            "{grants}: expected {expected:?} in\n{stderr}"
        );
    }
}
