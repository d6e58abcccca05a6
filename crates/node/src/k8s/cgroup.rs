//! Kernel identities → containers: the cgroup v2 hierarchy, indexed by inode.
//!
//! `bpf_get_current_cgroup_id()` returns the kernfs id of the task's cgroup
//! v2 directory, which is that directory's inode number. The kubelet puts
//! every container in a directory named after the runtime's container id,
//! under a directory per pod under `kubepods`:
//!
//! | layout | pod directory | container directory |
//! |---|---|---|
//! | systemd, containerd | `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice` | `cri-containerd-<64 hex>.scope` |
//! | systemd, CRI-O | same | `crio-<64 hex>.scope` (`crio-conmon-…` is the monitor, not the container) |
//! | cgroupfs, containerd | `kubepods/burstable/pod<uid>` | `<64 hex>` |
//! | cgroupfs, CRI-O | same | `crio-<64 hex>` |
//!
//! Guaranteed pods sit directly under `kubepods[.slice]`; kind-style nested
//! kubelets (`kubelet.slice/kubelet-kubepods.slice/…`) parse the same way,
//! because any component containing `kubepods` marks the subtree.
//!
//! The [`CgroupIndex`] is filled by a scan of the hierarchy at start and
//! kept current by inotify (one watch per directory outside containers). A
//! lookup that misses asks for a rescan, which a background thread runs at
//! most once per `min_rescan` interval however many misses arrive, and each
//! unknown id asks at most once per [`NEGATIVE_TTL`], so a storm of misses
//! never becomes a storm of scans.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::metrics::K8sMetrics;

/// An id that missed asks for another rescan only after this long.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// At most this many distinct missing ids are remembered.
const MAX_MISSES: usize = 4096;

/// Where a cgroup directory sits in the kubelet's layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupClass {
    /// Outside any `kubepods` subtree: a process of the node itself.
    Host,
    /// Inside `kubepods` but above any pod (a QoS slice).
    Kubepods,
    /// A pod's own directory (no container below it in the path).
    Pod { uid: Arc<str> },
    /// A container's directory, or any directory nested inside one.
    Container {
        id: Arc<str>,
        pod_uid: Option<Arc<str>>,
    },
}

/// The container id in a container's cgroup directory name, for every
/// layout in the module docs (and docker's `docker-<id>.scope`), or `None`.
pub fn container_id_of_dir(name: &str) -> Option<&str> {
    if name.starts_with("crio-conmon-") {
        return None;
    }
    let base = name.strip_suffix(".scope").unwrap_or(name);
    // `cri-containerd-<id>`, `crio-<id>`, `docker-<id>`, or `<…>:cri-containerd:<id>`.
    let id = base.rsplit([':', '-']).next().unwrap_or(base);
    is_container_id(id).then_some(id)
}

/// A container runtime's id: 64 lowercase hex digits.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The pod uid in a pod's cgroup directory name: systemd's
/// `kubepods[-qos]-pod<uid with _ for ->.slice` or cgroupfs' `pod<uid>`.
pub fn pod_uid_of_dir(name: &str) -> Option<String> {
    let raw = if let Some(slice) = name.strip_suffix(".slice") {
        let (_, after) = slice.rsplit_once("-pod")?;
        after.replace('_', "-")
    } else {
        name.strip_prefix("pod")?.to_owned()
    };
    is_uid(&raw).then_some(raw)
}

fn is_uid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Classify a cgroup path (relative or absolute, `/`-separated) by its components.
pub fn classify<'a>(components: impl IntoIterator<Item = &'a str>) -> CgroupClass {
    let mut in_kube = false;
    let mut pod: Option<Arc<str>> = None;
    for c in components {
        if c.is_empty() {
            continue;
        }
        if !in_kube {
            in_kube = c.contains("kubepods");
            if !in_kube {
                continue;
            }
        }
        if let Some(id) = container_id_of_dir(c) {
            return CgroupClass::Container {
                id: id.into(),
                pod_uid: pod,
            };
        }
        if let Some(uid) = pod_uid_of_dir(c) {
            pod = Some(uid.into());
        }
    }
    match (in_kube, pod) {
        (false, _) => CgroupClass::Host,
        (true, None) => CgroupClass::Kubepods,
        (true, Some(uid)) => CgroupClass::Pod { uid },
    }
}

/// The cgroup v2 path of a process, from `/proc/<pid>/cgroup` (`0::/path`),
/// relative to the cgroup namespace of the reader.
pub fn cgroup_path_of_pid(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// Where cgroup2 is mounted, from `/proc/self/mountinfo` (`/sys/fs/cgroup`
/// on unified systems, `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        // "<id> <parent> <maj:min> <root> <mount point> <opts> [optional...] - <fstype> <source> <super opts>"
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// Cgroup inode → class, shared by the plugins' lookups and the watcher thread.
pub struct CgroupIndex {
    root: PathBuf,
    by_inode: RwLock<HashMap<u64, CgroupClass>>,
    min_rescan: Duration,
    rescan_wanted: AtomicBool,
    misses: Mutex<HashMap<u64, Instant>>,
    waker: Mutex<Option<Arc<Waker>>>,
    stop: AtomicBool,
    metrics: K8sMetrics,
}

impl CgroupIndex {
    /// Scan `root` and watch it from a background thread. Errors (no such
    /// directory, no inotify) are logged; the index then serves what it has.
    pub fn start(root: PathBuf, min_rescan: Duration, metrics: K8sMetrics) -> Arc<Self> {
        let index = Arc::new(Self {
            root,
            by_inode: RwLock::default(),
            min_rescan,
            rescan_wanted: AtomicBool::new(false),
            misses: Mutex::default(),
            waker: Mutex::new(None),
            stop: AtomicBool::new(false),
            metrics,
        });
        if !index.root.is_dir() {
            tracing::warn!(
                root = %index.root.display(),
                "the cgroup root is not a directory: cgroup and pid lookups will answer `unknown`; set --cgroup-root to the cgroup2 mount"
            );
            return index;
        }
        let mut watcher = match Watcher::new(index.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "cannot watch the cgroup hierarchy ({e}); new containers are found by rescans after lookup misses"
                );
                None
            }
        };
        index.rescan(watcher.as_mut());
        if let Some(w) = watcher {
            *index.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(w.waker.clone());
            let spawned = std::thread::Builder::new()
                .name("cgroup-watch".into())
                .spawn(move || w.run());
            if let Err(e) = spawned {
                tracing::warn!("cannot start the cgroup watcher thread: {e}");
            }
        }
        index
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The class of the cgroup with this id; a miss asks for a (rate-limited) rescan.
    pub fn get(&self, id: u64) -> Option<CgroupClass> {
        if let Some(c) = self.read().get(&id) {
            return Some(c.clone());
        }
        self.missed(id);
        None
    }

    /// Like [`get`](Self::get) for the class alone, without a rescan on miss.
    pub fn peek(&self, id: u64) -> Option<CgroupClass> {
        self.read().get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn missed(&self, id: u64) {
        let now = Instant::now();
        {
            let mut misses = self.misses.lock().unwrap_or_else(|e| e.into_inner());
            match misses.get(&id) {
                Some(at) if now.duration_since(*at) < NEGATIVE_TTL => return,
                _ => {}
            }
            if misses.len() >= MAX_MISSES {
                // Full of recent misses: a rescan is already asked for, and
                // the next one prunes the list. O(1) either way.
                return;
            }
            misses.insert(id, now);
        }
        if !self.rescan_wanted.swap(true, Ordering::AcqRel)
            && let Some(w) = self
                .waker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
        {
            let _ = w.wake();
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, CgroupClass>> {
        self.by_inode.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, CgroupClass>> {
        self.by_inode.write().unwrap_or_else(|e| e.into_inner())
    }

    fn relative<'p>(&self, path: &'p Path) -> impl Iterator<Item = &'p str> {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .iter()
            .filter_map(OsStr::to_str)
    }

    /// Rebuild the whole index from the filesystem (directories that are
    /// gone disappear), adding inotify watches for directories not yet watched.
    fn rescan(&self, mut watcher: Option<&mut Watcher>) {
        let started = Instant::now();
        let mut found = HashMap::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                continue; // removed meanwhile
            };
            let class = classify(self.relative(&dir));
            let inside_container = matches!(class, CgroupClass::Container { .. });
            found.insert(meta.ino(), class);
            if let Some(w) = watcher.as_deref_mut() {
                w.watch(&dir, inside_container);
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        let n = found.len();
        *self.write() = found;
        let now = Instant::now();
        self.misses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, at| now.duration_since(*at) < NEGATIVE_TTL);
        self.rescan_wanted.store(false, Ordering::Release);
        self.metrics.cgroup_scans.inc();
        self.metrics.cgroups.set(n as i64);
        tracing::debug!(
            root = %self.root.display(),
            cgroups = n,
            elapsed_us = started.elapsed().as_micros() as u64,
            "scanned the cgroup hierarchy"
        );
    }

    /// A directory appeared: index it and everything already below it.
    fn added(&self, dir: &Path, watcher: &mut Watcher) {
        let mut stack = vec![dir.to_owned()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                continue;
            };
            let class = classify(self.relative(&dir));
            let inside_container = matches!(class, CgroupClass::Container { .. });
            watcher.watch(&dir, inside_container);
            tracing::trace!(dir = %dir.display(), ?class, "cgroup added");
            self.write().insert(meta.ino(), class);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
        }
        self.metrics.cgroups.set(self.len() as i64);
    }

    /// A directory went away; a container's takes the (unwatched)
    /// directories nested inside it along.
    fn removed(&self, ino: u64) {
        let mut map = self.write();
        if let Some(CgroupClass::Container { id, .. }) = map.remove(&ino) {
            map.retain(
                |_, c| !matches!(c, CgroupClass::Container { id: other, .. } if *other == id),
            );
        }
        let n = map.len();
        drop(map);
        self.metrics.cgroups.set(n as i64);
    }

    /// Stop the watcher thread (it exits at its next wakeup).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(w) = self
            .waker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = w.wake();
        }
    }
}

const INOTIFY: Token = Token(0);
const WAKE: Token = Token(1);

/// The inotify side, owned by the watcher thread.
struct Watcher {
    index: Arc<CgroupIndex>,
    inotify: Inotify,
    poll: Poll,
    waker: Arc<Waker>,
    /// Watched directory → its path and inode.
    watched: HashMap<WatchDescriptor, (PathBuf, u64)>,
    by_path: HashMap<PathBuf, WatchDescriptor>,
    watch_limit_logged: bool,
    last_scan: Instant,
}

impl Watcher {
    fn new(index: Arc<CgroupIndex>) -> std::io::Result<Self> {
        let inotify = Inotify::init()?;
        let poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&inotify.as_raw_fd()),
            INOTIFY,
            Interest::READABLE,
        )?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        Ok(Self {
            index,
            inotify,
            poll,
            waker,
            watched: HashMap::new(),
            by_path: HashMap::new(),
            watch_limit_logged: false,
            last_scan: Instant::now(),
        })
    }

    /// Watch `dir` for subdirectories coming and going. Directories inside
    /// containers are not watched (a container may create many); rescans
    /// after misses find those.
    fn watch(&mut self, dir: &Path, inside_container: bool) {
        if inside_container
            && container_id_of_dir(&dir.file_name().unwrap_or_default().to_string_lossy()).is_none()
        {
            return;
        }
        if self.by_path.contains_key(dir) {
            return;
        }
        let mask = WatchMask::CREATE | WatchMask::DELETE | WatchMask::ONLYDIR;
        let mask = if inside_container {
            // The container's own directory: only its removal matters.
            WatchMask::DELETE_SELF | WatchMask::ONLYDIR
        } else {
            mask
        };
        match self.inotify.watches().add(dir, mask) {
            Ok(wd) => {
                let ino = std::fs::symlink_metadata(dir).map(|m| m.ino()).unwrap_or(0);
                self.by_path.insert(dir.to_owned(), wd.clone());
                self.watched.insert(wd, (dir.to_owned(), ino));
            }
            Err(e) if !self.watch_limit_logged => {
                self.watch_limit_logged = true;
                tracing::warn!(
                    dir = %dir.display(),
                    "cannot watch a cgroup directory ({e}); containers below it are found by rescans after lookup misses (raise fs.inotify.max_user_watches)"
                );
            }
            Err(_) => {}
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(16);
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            if self.index.stop.load(Ordering::Acquire) {
                return;
            }
            // A pending rescan request waits for the end of the interval.
            let timeout = self.index.rescan_wanted.load(Ordering::Acquire).then(|| {
                (self.last_scan + self.index.min_rescan).saturating_duration_since(Instant::now())
            });
            if timeout == Some(Duration::ZERO) {
                self.last_scan = Instant::now();
                let index = self.index.clone();
                index.rescan(Some(&mut self));
                continue;
            }
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                tracing::warn!("cgroup watcher stopped: {e}");
                return;
            }
            for ev in events.iter() {
                if ev.token() == INOTIFY {
                    self.drain(&mut buffer);
                }
            }
        }
    }

    fn drain(&mut self, buffer: &mut [u8]) {
        loop {
            let batch: Vec<_> = match self.inotify.read_events(buffer) {
                Ok(evs) => evs.map(|e| e.to_owned()).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("reading cgroup events: {e}");
                    return;
                }
            };
            if batch.is_empty() {
                return;
            }
            for ev in batch {
                if ev.mask.contains(EventMask::Q_OVERFLOW) {
                    tracing::debug!("inotify queue overflowed; rescanning the cgroup hierarchy");
                    self.last_scan = Instant::now();
                    let index = self.index.clone();
                    index.rescan(Some(self));
                    continue;
                }
                if ev.mask.contains(EventMask::IGNORED) {
                    if let Some((path, ino)) = self.watched.remove(&ev.wd) {
                        self.by_path.remove(&path);
                        self.index.removed(ino);
                    }
                    continue;
                }
                let Some((dir, _)) = self.watched.get(&ev.wd) else {
                    continue;
                };
                let Some(name) = ev.name.as_ref() else {
                    continue; // DELETE_SELF: IGNORED follows and cleans up
                };
                let path = dir.join(name);
                if ev.mask.contains(EventMask::CREATE) && ev.mask.contains(EventMask::ISDIR) {
                    let index = self.index.clone();
                    index.added(&path, self);
                } else if ev.mask.contains(EventMask::DELETE) && ev.mask.contains(EventMask::ISDIR)
                {
                    // kernfs reports IGNORED on the directory's own watch only
                    // when its inode is evicted, which may be much later: forget
                    // it now, by the inode recorded when it was watched.
                    if let Some(wd) = self.by_path.remove(&path)
                        && let Some((_, ino)) = self.watched.remove(&wd)
                    {
                        tracing::trace!(dir = %path.display(), "cgroup removed");
                        self.index.removed(ino);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "6f1d3c1e-2b7a-4c55-9f0e-1a2b3c4d5e6f";

    #[test]
    fn container_directory_names() {
        assert_eq!(
            container_id_of_dir(&format!("cri-containerd-{ID}.scope")),
            Some(ID)
        );
        assert_eq!(container_id_of_dir(&format!("crio-{ID}.scope")), Some(ID));
        assert_eq!(container_id_of_dir(&format!("docker-{ID}.scope")), Some(ID));
        assert_eq!(container_id_of_dir(ID), Some(ID));
        assert_eq!(container_id_of_dir(&format!("crio-{ID}")), Some(ID));
        assert_eq!(
            container_id_of_dir(&format!(
                "kubepods-pod{}.slice:cri-containerd:{ID}",
                UID.replace('-', "_")
            )),
            Some(ID)
        );
        assert_eq!(
            container_id_of_dir(&format!("crio-conmon-{ID}.scope")),
            None
        );
        assert_eq!(container_id_of_dir("cri-containerd-abc.scope"), None);
        assert_eq!(container_id_of_dir(&ID.to_uppercase()), None);
        assert_eq!(container_id_of_dir("system.slice"), None);
        assert_eq!(container_id_of_dir(""), None);
    }

    #[test]
    fn pod_directory_names() {
        let systemd = UID.replace('-', "_");
        for name in [
            format!("kubepods-burstable-pod{systemd}.slice"),
            format!("kubepods-besteffort-pod{systemd}.slice"),
            format!("kubepods-pod{systemd}.slice"),
            format!("pod{UID}"),
        ] {
            assert_eq!(pod_uid_of_dir(&name).as_deref(), Some(UID), "{name}");
        }
        assert_eq!(pod_uid_of_dir("kubepods-burstable.slice"), None);
        assert_eq!(pod_uid_of_dir("podman.slice"), None);
        assert_eq!(pod_uid_of_dir("pod1234"), None);
        assert_eq!(pod_uid_of_dir("burstable"), None);
    }

    fn class(path: &str) -> CgroupClass {
        classify(path.split('/'))
    }

    #[test]
    fn paths_in_every_layout() {
        let s = UID.replace('-', "_");
        let container = |pod: bool| CgroupClass::Container {
            id: ID.into(),
            pod_uid: pod.then(|| UID.into()),
        };
        for path in [
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{s}.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods.slice/kubepods-pod{s}.slice/crio-{ID}.scope"),
            format!("/kubepods/burstable/pod{UID}/{ID}"),
            format!("/kubepods/besteffort/pod{UID}/crio-{ID}"),
            format!("/kubepods/pod{UID}/{ID}"),
            format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{s}.slice/cri-containerd-{ID}.scope"
            ),
            // Nested inside the container (a container that manages its own cgroups).
            format!("/kubepods/burstable/pod{UID}/{ID}/init.scope"),
        ] {
            assert_eq!(class(&path), container(true), "{path}");
        }
        assert_eq!(class(&format!("/kubepods/{ID}")), container(false));
        assert_eq!(
            class(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{s}.slice"
            )),
            CgroupClass::Pod { uid: UID.into() }
        );
        assert_eq!(
            class(&format!(
                "/kubepods.slice/kubepods-pod{s}.slice/crio-conmon-{ID}.scope"
            )),
            CgroupClass::Pod { uid: UID.into() }
        );
        assert_eq!(
            class("/kubepods.slice/kubepods-burstable.slice"),
            CgroupClass::Kubepods
        );
        assert_eq!(class("/"), CgroupClass::Host);
        assert_eq!(class("/system.slice/containerd.service"), CgroupClass::Host);
        assert_eq!(
            class(&format!("/system.slice/docker-{ID}.scope")),
            CgroupClass::Host
        );
        assert_eq!(
            class("/user.slice/user-0.slice/session-1.scope"),
            CgroupClass::Host
        );
    }

    #[test]
    fn mountinfo_finds_cgroup2() {
        // Every supported kernel has cgroup2 mounted somewhere on this machine's kind.
        let m = cgroup2_mount().expect("cgroup2 is mounted");
        assert!(m.is_dir(), "{}", m.display());
    }

    #[test]
    fn own_process_cgroup_path() {
        let p = cgroup_path_of_pid(std::process::id()).expect("/proc/self/cgroup has a v2 line");
        assert!(p.starts_with('/'), "{p}");
    }
}
