//! Every catalog plugin is a package (`plugins/catalog/<name>/package.yaml`,
//! and exec-counter's `plugins/exec-counter/package.yaml`)
//! whose spec is the plugin's default spec, and one of them, packed with
//! `conductor push --package` into a real registry (Debian's
//! docker-registry on loopback), runs by reference with a config override
//! and counts what a pod's process does.

mod catalog;

use std::path::Path;
use std::time::Duration;

use catalog::*;
use conductor_api::PluginSpec;
use conductor_api::package::PackageManifest;
use conductor_test_support::registry::*;
use conductor_test_support::*;

fn catalog_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/catalog")
}

#[test]
fn every_catalog_plugin_is_a_package_of_its_default_spec() {
    let mut plugins = 0;
    for entry in std::fs::read_dir(catalog_dir()).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let manifest = PackageManifest::from_yaml(&read("package.yaml"), &name)
            .unwrap_or_else(|e| panic!("{name}/package.yaml: {e}"));
        let spec = PluginSpec::from_yaml(&read(&format!("{name}.yaml")))
            .unwrap_or_else(|e| panic!("{name}/{name}.yaml: {e}"));
        assert_eq!(
            manifest.spec, spec,
            "{name}: package.yaml's spec differs from {name}.yaml"
        );
        assert!(
            manifest.description.as_ref().is_some_and(|d| !d.is_empty()),
            "{name}: no description"
        );
        // Every config key the default spec sets is documented.
        for key in spec.config.keys() {
            assert!(
                manifest.config_keys.iter().any(|k| &k.name == key),
                "{name}: config key {key:?} is not among configKeys"
            );
        }
        assert_eq!(
            manifest.dashboards,
            [format!("../../../deploy/grafana/catalog-{name}.json")],
            "{name}: its dashboard"
        );
        assert!(dir.join(&manifest.dashboards[0]).is_file(), "{name}");
        plugins += 1;
    }
    assert!(plugins >= 6, "{plugins} catalog plugins");
}

#[test]
fn exec_counter_is_a_package_of_its_example_spec() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("plugins/exec-counter/package.yaml")).unwrap();
    let manifest = PackageManifest::from_yaml(&text, "exec-counter").unwrap();
    let example = std::fs::read_to_string(root.join("examples/exec-counter.yaml")).unwrap();
    let mut spec = PluginSpec::from_yaml(&example).unwrap();
    // The same files, named relative to each file's own directory.
    assert_eq!(spec.component, "../target/plugins/exec_counter.wasm");
    spec.component = format!("../{}", spec.component);
    let bytecode = spec.bytecode.as_mut().unwrap();
    bytecode.path = format!("../{}", bytecode.path);
    assert_eq!(manifest.spec, spec);
}

/// A copy of catalog plugin `name`'s package directory whose files point at
/// the built artifacts (`CONDUCTOR_ARTIFACTS`).
fn package_dir(name: &str) -> tempfile::TempDir {
    let text = std::fs::read_to_string(catalog_dir().join(name).join("package.yaml")).unwrap();
    let grafana = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/");
    let text = text
        .replace(
            "../../../target/plugins/",
            &format!("{}/", artifacts().display()),
        )
        .replace(
            "../../../deploy/grafana/",
            &format!("{}/", grafana.display()),
        );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("package.yaml"), text).unwrap();
    dir
}

#[test]
fn a_catalog_package_runs_by_reference_with_a_config_override() {
    if !require_root() {
        return;
    }
    let reg = Registry::start();
    let dir = package_dir("syscall-latency");
    let (reference, _) = push_package(&reg, dir.path(), "catalog/syscall-latency:0.1.0");

    let cgroups = TestCgroups::new("catalogpkg");
    let pod = TestPod::new(&cgroups, 51, "batch", "packaged", &[]);
    // The package's spec, under the user's name and allow-list.
    let spec = format!("name: syscalls\ncomponent: {reference}\nconfig: {{syscalls: getppid}}\n");
    let cluster = Cluster::start(&spec, &cgroups, &[&pod]);
    const CALLS: u64 = 17;
    let script = format!("import os\nfor _ in range({CALLS}):\n    os.getppid()\n");
    let status = pod
        .command(None, &python(), &["-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
    let series = format!(
        r#"syscalls__latency_seconds_count{{plugin="syscalls",{},syscall="getppid"}}"#,
        pod.labels()
    );
    let count = cluster
        .host
        .wait_for_metric(&series, Duration::from_secs(15), |v| v >= CALLS as f64);
    assert_eq!(count, CALLS as f64);
    // Only the overridden allow-list: the default one would time reads.
    let text = cluster.host.scrape();
    assert!(
        !text.contains(r#"syscall="read""#),
        "the config override was not applied:\n{text}"
    );
    drop(cluster);
}
