//! The decoders' [`Host`] on a real node: kernel symbols from a
//! `/proc/kallsyms` snapshot, interface names from `/sys/class/net`, cgroup
//! paths by walking the cgroup v2 tree, block devices from
//! `/proc/partitions`, and pods from the node's workload cache (given as a
//! [`PodLookup`], since that cache lives in `conductor-node`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::decoder::{Host, Workload};
use crate::pci::{PCI_IDS_PATHS, PciIds};

/// Kernel symbols sorted by address.
#[derive(Debug, Default, Clone)]
pub struct Kallsyms {
    syms: Vec<(u64, String)>,
}

impl Kallsyms {
    /// Read `/proc/kallsyms`. Without `CAP_SYSLOG` the kernel shows every
    /// address as 0; read it before the host drops its capabilities.
    pub fn read() -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string("/proc/kallsyms")?))
    }

    /// Read `/proc/kallsyms` through `file`, opened earlier: the kernel
    /// decides whether to show addresses from the credentials of the
    /// opener, so a file opened before the host dropped `CAP_SYSLOG`
    /// still shows them.
    pub fn read_from(file: &std::fs::File) -> std::io::Result<Self> {
        use std::io::{Read, Seek};
        let mut file = file;
        file.rewind()?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
                let _kind = parts.next()?;
                Some((addr, parts.next()?.to_owned()))
            })
            .filter(|(a, _)| *a != 0)
            .collect();
        syms.sort_by_key(|(a, _)| *a);
        Self { syms }
    }

    /// True when the addresses were readable (not all zero).
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// The address of symbol `name` (the first, if several).
    pub fn address(&self, name: &str) -> Option<u64> {
        self.syms.iter().find(|(_, n)| n == name).map(|(a, _)| *a)
    }

    fn containing(&self, addr: u64) -> Option<&(u64, String)> {
        let i = self.syms.partition_point(|(a, _)| *a <= addr);
        i.checked_sub(1).map(|i| &self.syms[i])
    }
}

/// The node's workload cache, as the `k8s_*` decoders ask it.
pub trait PodLookup: Send + Sync {
    /// The pod (and container) of cgroup `id`.
    fn by_cgroup_id(&self, id: u64) -> Option<Workload>;
    /// The pod with `ip` among its `status.podIPs`.
    fn by_ip(&self, ip: IpAddr) -> Option<Workload>;
}

/// A shared [`PodLookup`].
pub type WorkloadLookup = Arc<dyn PodLookup>;

/// The [`Host`] of a real node.
pub struct SystemHost {
    kallsyms: Arc<Kallsyms>,
    cgroup_root: PathBuf,
    cgroups: Mutex<CgroupPaths>,
    workloads: Option<WorkloadLookup>,
    /// Where to look for `pci.ids`, and the database once read (a failed
    /// read is not kept: the next config that needs it tries again).
    pci_paths: Vec<PathBuf>,
    pci: Mutex<Option<Arc<PciIds>>>,
}

#[derive(Default)]
struct CgroupPaths {
    by_id: HashMap<u64, String>,
    scanned: Option<Instant>,
}

/// A miss rescans the cgroup tree at most this often.
const RESCAN: Duration = Duration::from_secs(1);

impl std::fmt::Debug for SystemHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemHost")
            .field("kallsyms", &self.kallsyms.syms.len())
            .field("cgroup_root", &self.cgroup_root)
            .finish_non_exhaustive()
    }
}

impl SystemHost {
    /// `kallsyms`: a snapshot, or one shared by several hosts.
    pub fn new(kallsyms: impl Into<Arc<Kallsyms>>, workloads: Option<WorkloadLookup>) -> Self {
        Self {
            kallsyms: kallsyms.into(),
            cgroup_root: cgroup2_mount().unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup")),
            cgroups: Mutex::new(CgroupPaths::default()),
            workloads,
            pci_paths: PCI_IDS_PATHS.iter().map(PathBuf::from).collect(),
            pci: Mutex::new(None),
        }
    }

    /// Read the PCI ID database from `path` instead of the distributions'
    /// usual places.
    pub fn with_pci_ids_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.pci_paths = vec![path.into()];
        self
    }

    pub fn kallsyms(&self) -> &Kallsyms {
        &self.kallsyms
    }
}

/// Where cgroup2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// on hybrid systems), from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

fn walk(dir: &Path, out: &mut HashMap<u64, String>) {
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    out.insert(meta.ino(), dir.to_string_lossy().into_owned());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&e.path(), out);
        }
    }
}

impl Host for SystemHost {
    fn pid_cgroup_id(&self, pid: u32) -> Option<u64> {
        // cgroup v2's line is `0::<path below the cgroup2 mount>`.
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let dir = self.cgroup_root.join(path.trim_start_matches('/'));
        std::fs::metadata(dir).ok().map(|m| m.ino())
    }

    fn ksym(&self, addr: u64) -> Option<String> {
        self.kallsyms
            .containing(addr)
            .filter(|(a, _)| *a == addr)
            .map(|(_, n)| n.clone())
    }

    fn ksym_containing(&self, addr: u64) -> Option<String> {
        self.kallsyms.containing(addr).map(|(_, n)| n.clone())
    }

    fn ifname(&self, index: u32) -> Option<String> {
        std::fs::read_dir("/sys/class/net")
            .ok()?
            .flatten()
            .find_map(|e| {
                let idx = std::fs::read_to_string(e.path().join("ifindex")).ok()?;
                (idx.trim().parse::<u32>().ok()? == index)
                    .then(|| e.file_name().to_string_lossy().into_owned())
            })
    }

    fn cgroup_path(&self, id: u64) -> Option<String> {
        let mut c = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = c.by_id.get(&id) {
            return Some(p.clone());
        }
        if c.scanned.is_some_and(|t| t.elapsed() < RESCAN) {
            return None;
        }
        let mut fresh = HashMap::new();
        walk(&self.cgroup_root, &mut fresh);
        c.by_id = fresh;
        c.scanned = Some(Instant::now());
        c.by_id.get(&id).cloned()
    }

    fn block_device(&self, major: u32, minor: u32) -> Option<String> {
        let text = std::fs::read_to_string("/proc/partitions").ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[0] == major.to_string() && f[1] == minor.to_string())
                .then(|| f[3].to_owned())
        })
    }

    fn workload(&self, id: u64) -> Option<Workload> {
        self.workloads.as_ref().and_then(|w| w.by_cgroup_id(id))
    }

    fn workload_by_ip(&self, ip: IpAddr) -> Option<Workload> {
        self.workloads.as_ref().and_then(|w| w.by_ip(ip))
    }

    fn cgroup_tree(&self) -> Vec<(u64, String)> {
        let mut fresh = HashMap::new();
        walk(&self.cgroup_root, &mut fresh);
        let tree = fresh.iter().map(|(id, p)| (*id, p.clone())).collect();
        // A fresh walk serves the cgroup decoder too.
        let mut c = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        c.by_id = fresh;
        c.scanned = Some(Instant::now());
        tree
    }

    fn pci_ids(&self) -> Result<Arc<PciIds>, String> {
        let mut pci = self.pci.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ids) = &*pci {
            return Ok(ids.clone());
        }
        let ids = Arc::new(PciIds::read_first(&self.pci_paths).map_err(|e| e.to_string())?);
        *pci = Some(ids.clone());
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real node's answer for this test's own process: the inode of the
    /// cgroup directory `/proc/self/cgroup` names, and that path back.
    #[test]
    fn a_pid_decodes_to_its_cgroup_and_back() {
        let host = SystemHost::new(Kallsyms::default(), None);
        let id = host
            .pid_cgroup_id(std::process::id())
            .expect("this process's cgroup v2 id");
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let dir = host.cgroup_root.join(path.trim_start_matches('/'));
        assert_eq!(id, std::fs::metadata(&dir).unwrap().ino());
        // As paths: the root cgroup's directory is the mount itself.
        assert_eq!(host.cgroup_path(id).map(PathBuf::from), Some(dir));
        assert_eq!(host.pid_cgroup_id(u32::MAX), None);
    }

    #[test]
    fn kallsyms_exact_and_containing() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T startup_64\nffffffff81000100 t secondary\n0000000000000000 T hidden\n",
        );
        let host = SystemHost::new(k, None);
        assert_eq!(host.ksym(0xffffffff81000100).as_deref(), Some("secondary"));
        assert_eq!(host.ksym(0xffffffff81000104), None);
        assert_eq!(
            host.ksym_containing(0xffffffff81000104).as_deref(),
            Some("secondary")
        );
        assert_eq!(host.ksym_containing(0x10), None);
        assert_eq!(
            host.kallsyms().address("startup_64"),
            Some(0xffffffff81000000)
        );
    }

    #[test]
    fn loopback_is_found_by_index() {
        // Every network namespace has `lo`, and it is index 1.
        let host = SystemHost::new(Kallsyms::default(), None);
        assert_eq!(host.ifname(1).as_deref(), Some("lo"));
    }

    #[test]
    fn the_cgroup_root_resolves_by_inode() {
        let host = SystemHost::new(Kallsyms::default(), None);
        let root = cgroup2_mount().expect("cgroup2 is mounted");
        let meta = std::fs::metadata(&root).unwrap();
        assert_eq!(
            host.cgroup_path(meta.ino()).as_deref(),
            Some(root.to_str().unwrap())
        );
    }

    /// ebpf_exporter's own cases for its `pci_*` decoders, against the
    /// database `cargo xtask deps` installs (Debian's `pci.ids`).
    #[test]
    fn pci_decoders_name_well_known_ids_from_the_real_database() {
        use crate::config::DecoderConfig;
        use crate::decoder::Chain;
        let host = SystemHost::new(Kallsyms::default(), None);
        if let Err(e) = host.pci_ids() {
            panic!("{e} (cargo xtask deps installs it)");
        }
        let run = |decoder: &str, n: u32| {
            let chain = Chain::new(&[
                DecoderConfig {
                    name: "uint".into(),
                    ..Default::default()
                },
                DecoderConfig {
                    name: decoder.into(),
                    ..Default::default()
                },
            ])
            .unwrap();
            let d = chain.decode(&n.to_ne_bytes(), &host).unwrap();
            assert!(d.cacheable, "the database does not change");
            String::from_utf8(d.value).unwrap()
        };
        assert_eq!(run("pci_vendor", 0x8086), "Intel Corporation");
        assert_eq!(run("pci_vendor", 0x10de), "NVIDIA Corporation");
        assert_eq!(run("pci_vendor", 0x15b3), "Mellanox Technologies");
        assert_eq!(run("pci_vendor", 0xbeef), "unknown pci vendor: 0xbeef");
        assert_eq!(
            run("pci_device", 0x8086_1000),
            "82542 Gigabit Ethernet Controller (Fiber)"
        );
        assert_eq!(
            run("pci_device", 0xdead_beef),
            "unknown pci device: 0xdeadbeef"
        );
        assert_eq!(run("pci_class", 0x01), "Mass storage controller");
        assert_eq!(run("pci_class", 0x02), "Network controller");
        assert_eq!(run("pci_class", 0x0c), "Serial bus controller");
        assert_eq!(run("pci_class", 0xfd), "unknown pci class: 0xfd");
        assert_eq!(run("pci_subclass", 0x0200), "Ethernet controller");
        assert_eq!(
            run("pci_subclass", 0x0108),
            "Non-Volatile memory controller"
        );
        assert_eq!(run("pci_subclass", 0x0604), "PCI bridge");
        assert_eq!(run("pci_subclass", 0xfd00), "unknown pci class: 0xfd");
        assert_eq!(
            run("pci_subclass", 0x010b),
            "unknown pci subclass: 0x0b (class 0x01)"
        );
    }

    #[test]
    fn a_missing_pci_database_is_reported_not_cached() {
        let host =
            SystemHost::new(Kallsyms::default(), None).with_pci_ids_path("/nonexistent/pci.ids");
        let err = host.pci_ids().unwrap_err();
        assert!(err.contains("/nonexistent/pci.ids"), "{err}");
        assert!(host.pci.lock().unwrap().is_none());
    }
}
