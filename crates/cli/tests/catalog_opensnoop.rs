//! The opensnoop catalog plugin on the real kernel, with its default spec
//! and a prefix of the test's own: a process of a pod's container opens
//! known files, missing files and a directory for writing, and each open
//! is counted once with its result.

mod catalog;

use std::time::Duration;

use catalog::*;
use conductor_test_support::*;

const OK: u64 = 7;
const MISSING: u64 = 4;
const DIRECTORY: u64 = 2;

#[test]
fn opensnoop_counts_opens_and_failures_by_pod_and_prefix() {
    if !require_root() {
        return;
    }
    let files = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    for i in 0..OK {
        std::fs::write(files.path().join(format!("f{i}")), b"x").unwrap();
    }
    std::fs::create_dir(files.path().join("dir")).unwrap();
    std::fs::write(outside.path().join("other"), b"x").unwrap();
    let prefix = format!("{}/", files.path().display());

    let spec = default_spec("opensnoop");
    let line = spec
        .lines()
        .find(|l| l.trim_start().starts_with("prefixes:"))
        .expect("the default spec configures prefixes")
        .to_owned();
    let spec = spec.replace(&line, &format!("  prefixes: \"{prefix}\""));

    let cgroups = TestCgroups::new("opensnoop");
    let pod = TestPod::new(&cgroups, 21, "web", "reader", &[]);
    let cluster = Cluster::start(&spec, &cgroups, &[&pod]);
    let host = &cluster.host;

    let script = format!(
        r#"
import os
d = "{dir}"
for i in range({OK}):
    open(os.path.join(d, "f%d" % i)).close()
for i in range({MISSING}):
    try:
        open(os.path.join(d, "missing%d" % i))
        raise SystemExit("a missing file opened")
    except FileNotFoundError:
        pass
for i in range({DIRECTORY}):
    try:
        open(os.path.join(d, "dir"), "w")
        raise SystemExit("a directory opened for writing")
    except IsADirectoryError:
        pass
for i in range(3):
    open("{other}").close()
"#,
        dir = files.path().display(),
        other = outside.path().join("other").display(),
    );
    let status = pod
        .command(None, &python(), &["-c", &script])
        .status()
        .unwrap();
    assert!(status.success());

    let series = |result: &str| {
        format!(
            r#"opensnoop__opens_total{{plugin="opensnoop",{},prefix="{prefix}",result="{result}"}}"#,
            pod.labels()
        )
    };
    host.wait_for_metric(&series("EISDIR"), Duration::from_secs(15), |v| {
        v >= DIRECTORY as f64
    });
    let text = host.scrape();
    for (result, want) in [("ok", OK), ("ENOENT", MISSING), ("EISDIR", DIRECTORY)] {
        assert_eq!(
            value(&text, &series(result)),
            Some(want as f64),
            "{}\n{text}",
            series(result)
        );
    }
    // Nothing else under the prefix, and nothing outside it.
    let pod_series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("opensnoop__opens_total{") && l.contains(r#"pod="reader""#))
        .collect();
    assert_eq!(pod_series.len(), 3, "{pod_series:#?}");
    assert_eq!(
        value(&text, r#"opensnoop__events_lost_total{plugin="opensnoop"}"#),
        Some(0.0)
    );
    drop(cluster);
}
