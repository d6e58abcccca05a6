//! pod-pressure: how long each pod's and container's tasks stalled for CPU,
//! memory and I/O (PSI, the cgroup's `cpu.pressure`, `memory.pressure`,
//! `io.pressure`) and how often the CPU quota throttled them (`cpu.stat`),
//! read from the cgroup filesystem on each tick. No BPF program: the spec
//! grants the cgroup directories read-only (`readOnlyPaths`) and the plugin
//! sees nothing else of the node.
//!
//! Series are labelled `namespace`, `pod`, `container`; `container=""` is
//! the pod's own cgroup (all its containers), as cAdvisor labels it.
//! Counters start at the cgroup's total when it is first seen, so each
//! equals the kernel's own total for as long as the cgroup lives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use conductor_sdk::k8s::{self, Identity};
use conductor_sdk::prelude::*;

/// Pod directories lie at most this deep under a `kubepods*` directory
/// (`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`).
const MAX_POD_DEPTH: usize = 3;

struct PodPressure {
    /// The cgroup v2 hierarchy, as the plugin sees it.
    root: PathBuf,
    /// The cgroup v1 `cpu` hierarchy, read for throttling when cgroup v2
    /// has no cpu controller (hybrid systems).
    cpu_v1: Option<PathBuf>,
    stalled: Counter,
    periods: Counter,
    throttled_periods: Counter,
    throttled: Counter,
    /// Last total read, by cgroup (relative path) and quantity.
    last: HashMap<(PathBuf, &'static str), u64>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Config {
    /// Where the cgroup v2 hierarchy is granted. Default: `/sys/fs/cgroup`,
    /// or `/sys/fs/cgroup/unified` on a hybrid system.
    cgroup_root: Option<String>,
    /// Where the cgroup v1 cpu hierarchy is granted. Default:
    /// `/sys/fs/cgroup/cpu,cpuacct` or `/sys/fs/cgroup/cpu` if present.
    cpu_v1_root: Option<String>,
}

/// A pod's or container's cgroup and its label values.
struct Target {
    rel: PathBuf,
    labels: [String; 3],
}

impl Plugin for PodPressure {
    fn init() -> Result<Self> {
        let cfg: Config = conductor_sdk::config::load()?;
        let root = match cfg.cgroup_root {
            Some(r) => PathBuf::from(r),
            None if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").is_file() => {
                PathBuf::from("/sys/fs/cgroup/unified")
            }
            None => PathBuf::from("/sys/fs/cgroup"),
        };
        if !root.join("cgroup.controllers").is_file() && !root.is_dir() {
            return Err(Error::msg(format!(
                "cannot read the cgroup v2 hierarchy at {}: grant it in readOnlyPaths (e.g. path: /sys/fs/cgroup) or set config cgroupRoot",
                root.display()
            )));
        }
        let cpu_v1 = match cfg.cpu_v1_root {
            Some(r) => Some(PathBuf::from(r)),
            None => ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.join("cpu.cfs_quota_us").is_file()),
        };
        let labels = ["namespace", "pod", "container"];
        Ok(PodPressure {
            root,
            cpu_v1,
            stalled: Counter::declare(
                "stalled_microseconds_total",
                "Time some (or all, kind=\"full\") of the cgroup's tasks stalled waiting for the resource (PSI total).",
                &["namespace", "pod", "container", "resource", "kind"],
            )?,
            periods: Counter::declare(
                "cpu_periods_total",
                "CPU quota enforcement periods that elapsed while the cgroup had runnable tasks.",
                &labels,
            )?,
            throttled_periods: Counter::declare(
                "cpu_throttled_periods_total",
                "Periods in which the cgroup used up its CPU quota and was throttled.",
                &labels,
            )?,
            throttled: Counter::declare(
                "cpu_throttled_microseconds_total",
                "Time the cgroup's tasks were throttled by its CPU quota.",
                &labels,
            )?,
            last: HashMap::new(),
        })
    }

    fn tick(&mut self) -> Result<()> {
        let targets = self.targets();
        let mut seen = HashMap::with_capacity(self.last.len());
        for t in &targets {
            let dir = self.root.join(&t.rel);
            for resource in ["cpu", "memory", "io"] {
                let Ok(text) = std::fs::read_to_string(dir.join(format!("{resource}.pressure")))
                else {
                    continue;
                };
                for (kind, total) in psi_totals(&text) {
                    let key = psi_key(resource, kind);
                    let delta = self.delta(&mut seen, &t.rel, key, total);
                    let [ns, pod, container] = &t.labels;
                    self.stalled
                        .add(&[ns, pod, container, resource, kind], delta)?;
                }
            }
            if let Some(stat) = self.cpu_stat(&t.rel) {
                let labels = t.labels.each_ref().map(String::as_str);
                let d = self.delta(&mut seen, &t.rel, "nr_periods", stat.periods);
                self.periods.add(&labels, d)?;
                let d = self.delta(&mut seen, &t.rel, "nr_throttled", stat.throttled_periods);
                self.throttled_periods.add(&labels, d)?;
                let d = self.delta(&mut seen, &t.rel, "throttled", stat.throttled_us);
                self.throttled.add(&labels, d)?;
            }
        }
        // Cgroups that went are forgotten; a new one starts from its total.
        self.last = seen;
        Ok(())
    }
}

impl PodPressure {
    /// How much `total` grew since the last tick; the whole total for a
    /// cgroup seen for the first time (or one recreated under the same
    /// path, whose total started again).
    fn delta(
        &self,
        seen: &mut HashMap<(PathBuf, &'static str), u64>,
        rel: &Path,
        key: &'static str,
        total: u64,
    ) -> u64 {
        let k = (rel.to_owned(), key);
        let delta = match self.last.get(&k) {
            Some(&prev) if total >= prev => total - prev,
            _ => total,
        };
        seen.insert(k, total);
        delta
    }

    /// Throttling of the cgroup at `rel`: from cgroup v2's `cpu.stat` when
    /// the cpu controller is enabled there, else from the v1 cpu hierarchy.
    fn cpu_stat(&self, rel: &Path) -> Option<CpuStat> {
        if let Ok(text) = std::fs::read_to_string(self.root.join(rel).join("cpu.stat"))
            && let Some(stat) = CpuStat::parse(&text)
        {
            return Some(stat);
        }
        let v1 = self.cpu_v1.as_ref()?;
        let text = std::fs::read_to_string(v1.join(rel).join("cpu.stat")).ok()?;
        CpuStat::parse(&text)
    }

    /// Every pod cgroup under a `kubepods*` directory of the root, and the
    /// container cgroups in each, with their label values.
    fn targets(&self) -> Vec<Target> {
        let mut pods = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with("kubepods") && is_dir(&e) {
                find_pods(&self.root, PathBuf::from(&name), 0, &mut pods);
            }
        }
        let mut out = Vec::new();
        for pod_rel in pods {
            let mut pod_labels = None;
            let mut containers = Vec::new();
            let Ok(entries) = std::fs::read_dir(self.root.join(&pod_rel)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(id) = container_id(&name) else {
                    continue;
                };
                if !is_dir(&e) {
                    continue;
                }
                let labels = match k8s::by_container_id(id) {
                    Identity::Workload(w) => {
                        pod_labels.get_or_insert([w.pod.namespace.clone(), w.pod.name.clone()]);
                        [
                            w.pod.namespace,
                            w.pod.name,
                            w.container.map(|c| c.name).unwrap_or_default(),
                        ]
                    }
                    // Not (yet) in the cache: the container by its id, as
                    // the SDK's Workload labels it.
                    _ => [String::new(), String::new(), id.chars().take(12).collect()],
                };
                containers.push(Target {
                    rel: pod_rel.join(&name),
                    labels,
                });
            }
            // The pod's own cgroup once one of its containers is known.
            if let Some([ns, pod]) = pod_labels {
                out.push(Target {
                    rel: pod_rel,
                    labels: [ns, pod, String::new()],
                });
            }
            out.extend(containers);
        }
        out
    }
}

fn is_dir(e: &std::fs::DirEntry) -> bool {
    e.file_type().is_ok_and(|t| t.is_dir())
}

/// Pod directories under `rel`: `kubepods-…-pod<uid>.slice` (systemd
/// driver) or `pod<uid>` (cgroupfs driver).
fn find_pods(root: &Path, rel: PathBuf, depth: usize, out: &mut Vec<PathBuf>) {
    if depth >= MAX_POD_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root.join(&rel)) else {
        return;
    };
    for e in entries.flatten() {
        if !is_dir(&e) {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let child = rel.join(&name);
        if is_pod_dir(&name) {
            out.push(child);
        } else if name.starts_with("kubepods") {
            find_pods(root, child, depth + 1, out);
        }
    }
}

fn is_pod_dir(name: &str) -> bool {
    (name.starts_with("kubepods") && name.ends_with(".slice") && name.contains("-pod"))
        || (name.starts_with("pod") && name.len() > 3)
}

/// The container id in a container cgroup's name: `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `docker-<id>.scope` (systemd driver) or the bare id
/// (cgroupfs driver). CRI-O's `crio-conmon-…` monitors are not containers.
fn container_id(name: &str) -> Option<&str> {
    let id = match name.strip_suffix(".scope") {
        Some(scope) => {
            if scope.starts_with("crio-conmon-") {
                return None;
            }
            scope.rsplit_once('-')?.1
        }
        None => name,
    };
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

fn psi_key(resource: &str, kind: &str) -> &'static str {
    match (resource, kind) {
        ("cpu", "some") => "cpu_some",
        ("cpu", _) => "cpu_full",
        ("memory", "some") => "memory_some",
        ("memory", _) => "memory_full",
        ("io", "some") => "io_some",
        _ => "io_full",
    }
}

/// `(kind, total)` of each line of a PSI file:
/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=12345`.
fn psi_totals(text: &str) -> impl Iterator<Item = (&'static str, u64)> + '_ {
    text.lines().filter_map(|line| {
        let mut words = line.split_whitespace();
        let kind = match words.next()? {
            "some" => "some",
            "full" => "full",
            _ => return None,
        };
        let total = words.find_map(|w| w.strip_prefix("total="))?.parse().ok()?;
        Some((kind, total))
    })
}

struct CpuStat {
    periods: u64,
    throttled_periods: u64,
    throttled_us: u64,
}

impl CpuStat {
    /// cgroup v2 (`throttled_usec`) or v1 (`throttled_time`, nanoseconds);
    /// `None` if the file has no throttling figures (v2 without the cpu
    /// controller).
    fn parse(text: &str) -> Option<CpuStat> {
        let field = |name: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == name).then(|| v.trim().parse::<u64>().ok()).flatten()
            })
        };
        Some(CpuStat {
            periods: field("nr_periods")?,
            throttled_periods: field("nr_throttled")?,
            throttled_us: field("throttled_usec")
                .or_else(|| field("throttled_time").map(|ns| ns / 1000))?,
        })
    }
}

conductor_sdk::export_plugin!(PodPressure);
