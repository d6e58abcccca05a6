//! The manager's state machine with a fake launcher: no kernel, no wasm,
//! no root. What the fake plugins did is recorded and checked.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use conductor_api::PluginSpec;
use crossbeam_channel::Receiver;

use super::*;
use crate::launch::{Launcher, RunningPlugin};
use crate::plugin::{LoadError, Notify, StartOptions, Status};

/// Components whose name contains one of these fail at that step.
const BAD_COMPILE: &str = "bad-compile";
const BAD_START: &str = "bad-start";
const BAD_SWAP: &str = "bad-swap";

#[derive(Default)]
struct Journal(Mutex<Vec<String>>);

impl Journal {
    fn push(&self, what: String) {
        self.0.lock().unwrap().push(what);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

#[derive(Default)]
struct FakeLauncher {
    journal: Arc<Journal>,
    next: AtomicU64,
}

struct FakePlugin {
    name: String,
    /// Which start this is (1, 2, ...), to tell instances apart.
    serial: u64,
    component: Mutex<String>,
    status: Mutex<Status>,
    notify: Option<Notify>,
    stopped: AtomicBool,
    journal: Arc<Journal>,
}

impl FakePlugin {
    /// What the plugin's thread does after a fault.
    fn fault(&self, message: &str) {
        {
            let mut s = self.status.lock().unwrap();
            s.phase = Phase::Restarting;
            s.restarts += 1;
            s.last_error = Some(message.to_owned());
        }
        if let Some(n) = &self.notify {
            n();
        }
    }
}

impl Launcher for FakeLauncher {
    type Plugin = FakePlugin;
    type Prepared = String;
    type PrepareError = String;

    fn prepare(&self, spec: &PluginSpec) -> Result<String, String> {
        if spec.component.contains(BAD_COMPILE) {
            return Err(format!("{} does not compile", spec.component));
        }
        Ok(spec.component.clone())
    }

    fn start(
        &self,
        spec: &PluginSpec,
        _base_dir: &Path,
        options: StartOptions,
    ) -> Result<FakePlugin, LoadError> {
        if spec.component.contains(BAD_START) {
            self.journal
                .push(format!("refused {} {}", spec.name, spec.component));
            return Err(LoadError::Start {
                plugin: spec.name.clone(),
                cause: "init failed".into(),
            });
        }
        let serial = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.journal
            .push(format!("start {} {} #{serial}", spec.name, spec.component));
        Ok(FakePlugin {
            name: spec.name.clone(),
            serial,
            component: Mutex::new(spec.component.clone()),
            status: Mutex::new(Status {
                phase: Phase::Running,
                since: SystemTime::now(),
                restarts: 0,
                last_error: None,
                digest: format!("sha256:{}", spec.component),
                next_retry: None,
            }),
            notify: options.notify,
            stopped: AtomicBool::new(false),
            journal: self.journal.clone(),
        })
    }
}

impl RunningPlugin for FakePlugin {
    type Prepared = String;

    fn name(&self) -> &str {
        &self.name
    }
    fn status(&self) -> Status {
        self.status.lock().unwrap().clone()
    }
    fn swap(&self, _spec: &PluginSpec, prepared: String) -> Result<(), String> {
        if prepared.contains(BAD_SWAP) {
            return Err("the new version's init failed".into());
        }
        self.journal.push(format!(
            "swap {} #{} {} -> {prepared}",
            self.name,
            self.serial,
            self.component.lock().unwrap()
        ));
        self.status.lock().unwrap().digest = format!("sha256:{prepared}");
        *self.component.lock().unwrap() = prepared;
        Ok(())
    }
    fn repoint(&self, spec: &PluginSpec) -> Result<(), String> {
        let pins: Vec<&str> = spec.maps.iter().filter_map(|m| m.pin.as_deref()).collect();
        self.journal.push(format!(
            "repoint {} #{} {}",
            self.name,
            self.serial,
            pins.join(",")
        ));
        Ok(())
    }
    fn request_collect(&self) -> Receiver<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let _ = tx.send(());
        rx
    }
    fn stop(&self) {
        if !self.stopped.swap(true, Ordering::Relaxed) {
            self.journal
                .push(format!("stop {} #{}", self.name, self.serial));
        }
    }
}

fn manager() -> (Manager<FakeLauncher>, Arc<Journal>) {
    let launcher = FakeLauncher::default();
    let journal = launcher.journal.clone();
    (
        Manager::with_launcher(launcher, Arc::new(Metrics::new())),
        journal,
    )
}

fn spec(name: &str, component: &str) -> PluginSpec {
    PluginSpec::from_yaml(&format!(
        "name: {name}\ncomponent: /plugins/{component}.wasm\n"
    ))
    .unwrap()
}

/// A spec whose kernel side differs from [`spec`]'s (a map pinned elsewhere).
fn spec_with_map(name: &str, component: &str) -> PluginSpec {
    PluginSpec::from_yaml(&format!(
        "name: {name}\ncomponent: /plugins/{component}.wasm\nmaps:\n  - name: m\n    pin: /sys/fs/bpf/m\n"
    ))
    .unwrap()
}

fn phase(m: &Manager<FakeLauncher>, name: &str) -> Phase {
    m.get(name).expect("listed").phase
}

#[test]
fn load_runs_and_lists_a_plugin_and_refuses_a_second_of_that_name() {
    let (m, journal) = manager();
    m.load(&spec("a", "one"), Path::new("/")).unwrap();
    assert_eq!(phase(&m, "a"), Phase::Running);
    assert_eq!(m.get("a").unwrap().digest, "sha256:/plugins/one.wasm");
    assert!(matches!(
        m.load(&spec("a", "two"), Path::new("/")),
        Err(ManagerError::Duplicate(n)) if n == "a"
    ));
    assert_eq!(journal.take(), ["start a /plugins/one.wasm #1"]);
    assert_eq!(m.desired().len(), 1);
}

#[test]
fn a_failed_load_leaves_nothing_behind() {
    let (m, journal) = manager();
    let (_, mut changes) = m.subscribe();
    let err = m.load(&spec("a", BAD_START), Path::new("/")).unwrap_err();
    assert!(err.to_string().contains("init failed"), "{err}");
    assert!(m.get("a").is_none());
    assert!(m.desired().is_empty());
    assert_eq!(journal.take(), ["refused a /plugins/bad-start.wasm"]);
    // Watchers saw it come (Pending, Loading, Failed) and go.
    let mut seen = Vec::new();
    while let Ok(c) = changes.try_recv() {
        seen.push(match c {
            Change::Changed(i) => format!("{:?}", i.phase),
            Change::Removed(_) => "Removed".into(),
        });
    }
    assert_eq!(seen, ["Pending", "Loading", "Failed", "Removed"]);
}

#[test]
fn unload_stops_the_plugin_and_forgets_it() {
    let (m, journal) = manager();
    m.load(&spec("a", "one"), Path::new("/")).unwrap();
    let info = m.unload("a").unwrap();
    assert_eq!(info.phase, Phase::Stopped);
    assert!(m.get("a").is_none());
    assert!(matches!(m.unload("a"), Err(ManagerError::NotFound(_))));
    assert_eq!(
        journal.take(),
        ["start a /plugins/one.wasm #1", "stop a #1"]
    );
}

#[test]
fn unloading_a_pending_load_cancels_its_ticket() {
    let (m, journal) = manager();
    let ticket = m
        .reserve(&spec("a", "one"), BTreeMap::new(), 1, false)
        .unwrap();
    assert_eq!(phase(&m, "a"), Phase::Pending);
    assert!(m.set_phase(&ticket, Phase::Pulling, None));
    assert!(!ticket.is_cancelled());
    m.unload("a").unwrap();
    assert!(ticket.is_cancelled());
    // The load finds out and starts nothing.
    assert!(!m.set_phase(&ticket, Phase::Loading, None));
    assert!(matches!(
        m.activate(&ticket, &spec("a", "one"), Path::new("/"), true),
        Err(ManagerError::Cancelled(_))
    ));
    assert!(m.get("a").is_none());
    assert!(journal.take().is_empty());
    // The name is free again, and a new claim is not the old one.
    let again = m
        .reserve(&spec("a", "two"), BTreeMap::new(), 1, false)
        .unwrap();
    assert!(!again.is_cancelled());
    assert!(!m.set_phase(&ticket, Phase::Loading, None));
}

#[test]
fn a_load_under_way_makes_unload_and_update_wait() {
    let (m, _) = manager();
    let ticket = m
        .reserve(&spec("a", "one"), BTreeMap::new(), 1, false)
        .unwrap();
    assert!(m.set_phase(&ticket, Phase::Loading, None));
    assert!(matches!(m.unload("a"), Err(ManagerError::Busy(_))));
    assert!(matches!(
        m.update(&spec("a", "two"), &spec("a", "two"), BTreeMap::new()),
        Err(ManagerError::Busy(_))
    ));
}

#[test]
fn an_update_of_the_user_side_swaps_in_place() {
    let (m, journal) = manager();
    m.load(&spec("a", "one"), Path::new("/")).unwrap();
    journal.take();
    let annotations = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
    let (info, kind) = m
        .update(&spec("a", "two"), &spec("a", "two"), annotations.clone())
        .unwrap();
    assert_eq!(kind, UpdateKind::Swapped);
    assert_eq!(info.generation, 2);
    assert_eq!(info.annotations, annotations);
    assert_eq!(info.digest, "sha256:/plugins/two.wasm");
    // Same instance of the kernel side: swapped, never stopped.
    assert_eq!(
        journal.take(),
        ["swap a #1 /plugins/one.wasm -> /plugins/two.wasm"]
    );
}

#[test]
fn an_update_of_the_kernel_side_replaces_the_plugin() {
    let (m, journal) = manager();
    m.load(&spec("a", "one"), Path::new("/")).unwrap();
    journal.take();
    let new = spec_with_map("a", "two");
    let (info, kind) = m.update(&new, &new, BTreeMap::new()).unwrap();
    assert_eq!(kind, UpdateKind::Replaced);
    assert_eq!(info.phase, Phase::Running);
    assert_eq!(
        journal.take(),
        ["stop a #1", "start a /plugins/two.wasm #2"]
    );
}

#[test]
fn naming_another_bpfman_program_replaces_the_plugin() {
    let (m, journal) = manager();
    let mut old = spec("a", "one");
    old.bpfman_program = Some(conductor_api::BpfmanProgram {
        application: "app-1".into(),
        program: None,
    });
    m.load(&old, Path::new("/")).unwrap();
    journal.take();
    let mut new = old.clone();
    new.bpfman_program = Some(conductor_api::BpfmanProgram {
        application: "app-2".into(),
        program: None,
    });
    let (_, kind) = m.update(&new, &new, BTreeMap::new()).unwrap();
    assert_eq!(kind, UpdateKind::Replaced);
    assert_eq!(
        journal.take(),
        ["stop a #1", "start a /plugins/one.wasm #2"]
    );
}

#[test]
fn new_pins_of_a_cluster_bpf_application_re_point_the_running_plugin() {
    let (m, journal) = manager();
    let mut old = spec_with_map("a", "one");
    old.cluster_bpf_application = Some(conductor_api::ClusterBpfApplicationRef {
        name: "app".into(),
        program: None,
    });
    m.load(&old, Path::new("/")).unwrap();
    journal.take();
    let mut new = old.clone();
    new.maps[0].pin = Some("/run/bpfman/fs/maps/9/m".into());
    let (info, kind) = m.update(&new, &new, BTreeMap::new()).unwrap();
    assert_eq!(kind, UpdateKind::Repointed);
    assert_eq!(info.phase, Phase::Running);
    assert_eq!(journal.take(), ["repoint a #1 /run/bpfman/fs/maps/9/m"]);

    // Anything else changed too: not a re-point.
    let mut other = new.clone();
    other.maps[0].pin = Some("/run/bpfman/fs/maps/10/m".into());
    other.component = "/plugins/two.wasm".into();
    let (_, kind) = m.update(&other, &other, BTreeMap::new()).unwrap();
    assert_ne!(kind, UpdateKind::Repointed);
    // Without clusterBpfApplication new pins are a new kernel side.
    let (m, journal) = manager();
    let plain = spec_with_map("b", "one");
    m.load(&plain, Path::new("/")).unwrap();
    journal.take();
    let mut moved = plain.clone();
    moved.maps[0].pin = Some("/sys/fs/bpf/elsewhere".into());
    let (_, kind) = m.update(&moved, &moved, BTreeMap::new()).unwrap();
    assert_eq!(kind, UpdateKind::Replaced);
}

#[test]
fn a_component_that_does_not_compile_is_refused_before_anything_stops() {
    let (m, journal) = manager();
    m.load(&spec("a", "one"), Path::new("/")).unwrap();
    journal.take();
    for new in [spec("a", BAD_COMPILE), spec_with_map("a", BAD_COMPILE)] {
        let err = m.update(&new, &new, BTreeMap::new()).unwrap_err();
        assert!(matches!(err, ManagerError::UpdateRefused { .. }), "{err}");
    }
    let err = m
        .update(&spec("a", BAD_SWAP), &spec("a", BAD_SWAP), BTreeMap::new())
        .unwrap_err();
    assert!(matches!(err, ManagerError::UpdateRefused { .. }), "{err}");
    assert!(journal.take().is_empty());
    let info = m.get("a").unwrap();
    assert_eq!((info.phase, info.generation), (Phase::Running, 1));
    assert_eq!(info.spec, spec("a", "one"));
}

#[test]
fn a_replacement_that_fails_rolls_back_to_the_old_version() {
    let (m, journal) = manager();
    m.load(&spec("a", "one"), Path::new("/")).unwrap();
    journal.take();
    let new = spec_with_map("a", BAD_START);
    let err = m.update(&new, &new, BTreeMap::new()).unwrap_err();
    assert!(
        matches!(err, ManagerError::UpdateRolledBack { .. }),
        "{err}"
    );
    assert_eq!(
        journal.take(),
        [
            "stop a #1",
            "refused a /plugins/bad-start.wasm",
            "start a /plugins/one.wasm #2"
        ]
    );
    let info = m.get("a").unwrap();
    assert_eq!((info.phase, info.generation), (Phase::Running, 1));
    assert_eq!(info.digest, "sha256:/plugins/one.wasm");
}

#[test]
fn a_plugin_that_was_not_running_cannot_be_restored_after_a_failed_update() {
    let (m, journal) = manager();
    // Restored from the persisted state, but its load failed.
    let ticket = m
        .reserve(&spec("a", "one"), BTreeMap::new(), 3, true)
        .unwrap();
    m.fail(&ticket, "registry unreachable".into());
    assert_eq!(phase(&m, "a"), Phase::Failed);
    let new = spec_with_map("a", BAD_START);
    let err = m.update(&new, &new, BTreeMap::new()).unwrap_err();
    assert!(matches!(err, ManagerError::UpdateLost { .. }), "{err}");
    let info = m.get("a").unwrap();
    assert_eq!(info.phase, Phase::Failed);
    assert!(info.last_error.unwrap().contains("init failed"));
    assert_eq!(journal.take(), ["refused a /plugins/bad-start.wasm"]);
    // Still desired: a later update or a retry may bring it back.
    assert_eq!(m.desired()[0].generation, 3);
}

#[test]
fn a_failed_restore_is_retried_from_pending() {
    let (m, _) = manager();
    let ticket = m
        .reserve(&spec("a", "one"), BTreeMap::new(), 1, true)
        .unwrap();
    m.fail(&ticket, "no such file".into());
    assert_eq!(
        m.get("a").unwrap().last_error.as_deref(),
        Some("no such file")
    );
    assert!(m.retry(&ticket));
    assert_eq!(phase(&m, "a"), Phase::Pending);
    // Busy again: a second retry of the same attempt is refused.
    assert!(!m.retry(&ticket));
    m.activate(&ticket, &spec("a", "one"), Path::new("/"), true)
        .unwrap();
    assert_eq!(phase(&m, "a"), Phase::Running);
    assert_eq!(m.get("a").unwrap().last_error, None);
}

#[test]
fn faults_show_as_restarting_with_the_count_and_the_last_error() {
    let (m, _) = manager();
    m.load(&spec("a", "one"), Path::new("/")).unwrap();
    let (_, mut changes) = m.subscribe();
    let plugin = m.shared.lock().get("a").unwrap().plugin.clone().unwrap();
    plugin.fault("on-events failed: trap");
    plugin.fault("on-events failed: timeout");
    let info = m.get("a").unwrap();
    assert_eq!(info.phase, Phase::Restarting);
    assert_eq!(info.restarts, 2);
    assert_eq!(
        info.last_error.as_deref(),
        Some("on-events failed: timeout")
    );
    // Each status change of the plugin's thread reached the watchers.
    let mut restarts = Vec::new();
    while let Ok(Change::Changed(i)) = changes.try_recv() {
        restarts.push((i.phase, i.restarts));
    }
    assert_eq!(restarts, [(Phase::Restarting, 1), (Phase::Restarting, 2)]);
}

#[test]
fn shutdown_stops_every_plugin() {
    let (m, journal) = manager();
    m.load(&spec("a", "one"), Path::new("/")).unwrap();
    m.load(&spec("b", "two"), Path::new("/")).unwrap();
    journal.take();
    m.collect(std::time::Duration::from_millis(100));
    m.shutdown();
    let mut stopped = journal.take();
    stopped.sort();
    assert_eq!(stopped, ["stop a #1", "stop b #2"]);
}
