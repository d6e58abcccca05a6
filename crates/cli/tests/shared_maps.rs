//! Maps one plugin exposes to another (`expose` / `from`), on the real
//! kernel through the daemon: a consumer before its owner is refused with
//! the owner named, the consumer reads what the owner wrote, `access` is
//! the consumer's own, and unloading in either order leaves no pin.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use conductor_kernel::shared::pin_path;
use conductor_test_support::daemon::Daemon;
use conductor_test_support::*;

const OWNER: &str = "shmowner";
const READER: &str = "shmreader";

/// maps-probe fills `rw_hash` with keys 11..=100, each holding key * 10.
const KEYS: f64 = 90.0;
const SUM: f64 = 10.0 * 4995.0;

fn owner_spec() -> String {
    format!(
        r#"
name: {OWNER}
component: {}
bytecode:
  path: {}
maps:
  - name: rw_hash
    access: readWrite
    expose: true
  - name: pcpu
    access: readWrite
"#,
        path_str(&artifact("testing_maps_probe.wasm")),
        path_str(&artifact("test_maps.bpf.o")),
    )
}

fn reader_spec(access: &str) -> String {
    format!(
        r#"
name: {READER}
component: {}
maps:
  - name: shared
    access: {access}
    from: {{plugin: {OWNER}, map: rw_hash}}
"#,
        path_str(&artifact("testing_shared_reader.wasm")),
    )
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn load(daemon: &Daemon, dir: &Path, file: &str, yaml: &str) -> Output {
    let path = dir.join(file);
    std::fs::write(&path, yaml).unwrap();
    daemon.cli(&["load", path.to_str().unwrap()])
}

fn load_ok(daemon: &Daemon, dir: &Path, file: &str, yaml: &str) {
    let out = load(daemon, dir, file, yaml);
    assert!(
        out.status.success(),
        "load {file}: {}\nlog:\n{}",
        text(&out),
        daemon.log_text()
    );
}

fn unload(daemon: &Daemon, name: &str) {
    let out = daemon.cli(&["unload", name]);
    assert!(out.status.success(), "unload {name}: {}", text(&out));
}

fn gauge(plugin: &str, name: &str) -> String {
    format!(r#"{plugin}__{name}{{plugin="{plugin}"}}"#)
}

#[test]
fn a_shared_map_is_read_by_another_plugin_and_unload_in_either_order_leaves_no_pin() {
    if !require_root() {
        return;
    }
    let pin = pin_path(OWNER, "rw_hash");
    let owner_dir = pin.parent().unwrap().to_owned();
    let specs = tempfile::tempdir().unwrap();
    let daemon = Daemon::start();
    let wait = Duration::from_secs(30);

    // A consumer before its owner: refused, naming the owner and the map.
    let out = load(&daemon, specs.path(), "reader.yaml", &reader_spec("read"));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "plugin \"{OWNER}\" does not expose map \"rw_hash\""
        )),
        "{}",
        text(&out)
    );
    assert!(
        daemon.get(READER).is_none(),
        "a refused load leaves nothing"
    );

    // Owner first, then a read-only consumer.
    load_ok(&daemon, specs.path(), "owner.yaml", &owner_spec());
    daemon.wait_for_metric(&gauge(OWNER, "lookup_42"), wait, |v| v == 420.0);
    assert!(pin.exists(), "{} is not pinned", pin.display());
    load_ok(&daemon, specs.path(), "reader.yaml", &reader_spec("read"));
    daemon.wait_for_metric(&gauge(READER, "keys"), wait, |v| v == KEYS);
    let text_now = daemon.scrape();
    assert_eq!(
        value(&text_now, &gauge(READER, "sum")),
        Some(SUM),
        "{text_now}"
    );
    assert_eq!(
        value(&text_now, &gauge(READER, "write_refused")),
        Some(1.0),
        "a read-only grant must refuse writes\n{text_now}"
    );

    // The owner goes first: its pin goes with it, the consumer keeps its
    // descriptor and still reads the map's last contents.
    unload(&daemon, OWNER);
    assert!(!pin.exists(), "{} outlived its owner", pin.display());
    assert!(
        !owner_dir.exists(),
        "{} outlived its owner",
        owner_dir.display()
    );
    let after = daemon.scrape();
    assert_eq!(value(&after, &gauge(READER, "keys")), Some(KEYS), "{after}");
    assert_eq!(value(&after, &gauge(READER, "sum")), Some(SUM), "{after}");
    unload(&daemon, READER);

    // The other order, with a read-write consumer.
    load_ok(&daemon, specs.path(), "owner.yaml", &owner_spec());
    daemon.wait_for_metric(&gauge(OWNER, "lookup_42"), wait, |v| v == 420.0);
    load_ok(
        &daemon,
        specs.path(),
        "reader.yaml",
        &reader_spec("readWrite"),
    );
    daemon.wait_for_metric(&gauge(READER, "keys"), wait, |v| v == KEYS);
    let text_now = daemon.scrape();
    assert_eq!(
        value(&text_now, &gauge(READER, "write_refused")),
        Some(0.0),
        "a read-write grant may write\n{text_now}"
    );
    unload(&daemon, READER);
    assert!(pin.exists(), "the consumer must not remove its owner's pin");
    unload(&daemon, OWNER);
    assert!(!pin.exists(), "{} outlived its owner", pin.display());
    assert!(!owner_dir.exists());
}
