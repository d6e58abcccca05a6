//! ebpf_exporter's `cgroup_id_map`: the host keeps one of the object's
//! maps holding 1 for every cgroup whose full path one of the config's
//! regexps matches, so programs can filter by cgroup with a map lookup:
//! `cgroup id → 1` in a hash map, or 1 in the cgroup's own storage of a
//! `BPF_MAP_TYPE_CGRP_STORAGE` map (written through its directory's
//! descriptor; the kernel drops it with the cgroup).
//!
//! ebpf_exporter learns of new and removed cgroups from fanotify (which
//! needs `CAP_SYS_ADMIN`, dropped by this host after start-up); here the
//! tree is read when the config loads (the map is filled before the load
//! returns; as in ebpf_exporter, its programs are already attached then)
//! and again every [`RESYNC`]: a cgroup created later joins the map within
//! that time, and a removed one leaves it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use std::collections::HashMap;

use conductor_kernel::maps::{KernelMap, MapKind};
use regex::Regex;

use crate::config::{CgroupIdMap, CgroupIdMapType};
use crate::decoder::Host;

/// How often the cgroup tree is read again.
pub const RESYNC: Duration = Duration::from_secs(1);

/// `BPF_MAP_TYPE_CGRP_STORAGE` in the kernel's `enum bpf_map_type`.
const CGRP_STORAGE: u32 = 32;

/// Checks `map` against the config and fills it; [`CgroupIdMapSync::start`]
/// keeps it current from a thread of its own.
pub struct Filler {
    config: String,
    map: KernelMap,
    kind: CgroupIdMapType,
    regexps: Vec<Regex>,
    host: Arc<dyn Host>,
    /// Ids this filler wrote (and so may delete).
    written: HashSet<u64>,
}

impl Filler {
    /// `Err` says what is wrong with the map (the field is `cgroup_id_map.name`).
    pub fn new(
        config: &str,
        conf: &CgroupIdMap,
        map: KernelMap,
        host: Arc<dyn Host>,
    ) -> Result<Self, String> {
        let meta = map.meta();
        let kind = conf.kind().ok_or("unknown cgroup_id_map type")?;
        // Hash: `u64` id → `u64` 1. Cgroup storage: keyed by a cgroup's
        // descriptor (`u32`) when written from user space, `u64` values.
        let (layout_ok, wanted) = match kind {
            CgroupIdMapType::Hash => (
                meta.key_size == 8 && meta.value_size == 8,
                "a hash cgroup_id_map has u64 keys (cgroup ids) and u64 values",
            ),
            CgroupIdMapType::CgrpStorage => (
                meta.kind == MapKind::Other(CGRP_STORAGE)
                    && meta.key_size == 4
                    && meta.value_size == 8,
                "a cgrp_storage cgroup_id_map is a BPF_MAP_TYPE_CGRP_STORAGE map with u32 keys and u64 values",
            ),
        };
        if !layout_ok {
            return Err(format!(
                "{wanted}, but this map ({:?}) has {}-byte keys and {}-byte values",
                meta.kind, meta.key_size, meta.value_size
            ));
        }
        let regexps = conf
            .regexps
            .iter()
            .map(|r| Regex::new(r).map_err(|e| format!("regexp {r:?}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            config: config.to_owned(),
            map,
            kind,
            regexps,
            host,
            written: HashSet::new(),
        })
    }

    /// Bring the map in line with the cgroup tree: add the matching
    /// cgroups it lacks, delete the ones that are gone. Returns the number
    /// of ids in the map.
    pub fn sync(&mut self) -> usize {
        let matching: HashMap<u64, String> = self
            .host
            .cgroup_tree()
            .into_iter()
            .filter(|(_, path)| self.regexps.iter().any(|r| r.is_match(path)))
            .collect();
        let new: Vec<u64> = matching
            .keys()
            .filter(|id| !self.written.contains(id))
            .copied()
            .collect();
        for id in new {
            match self.add(id, &matching[&id]) {
                Ok(()) => {
                    self.written.insert(id);
                }
                Err(e) => {
                    tracing::warn!(config = %self.config, map = %self.map.name(), id, "cannot add a cgroup to the cgroup_id_map: {e}");
                }
            }
        }
        let gone: Vec<u64> = self
            .written
            .iter()
            .filter(|id| !matching.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            // Cgroup storage goes with its cgroup; hash entries are deleted.
            if self.kind == CgroupIdMapType::Hash
                && let Err(e) = self.map.delete(&id.to_ne_bytes())
            {
                tracing::warn!(config = %self.config, map = %self.map.name(), id, "cannot remove a cgroup from the cgroup_id_map: {e}");
            }
            self.written.remove(&id);
        }
        self.written.len()
    }

    fn add(&self, id: u64, path: &str) -> Result<(), String> {
        let one = 1u64.to_ne_bytes();
        match self.kind {
            CgroupIdMapType::Hash => self
                .map
                .update(&id.to_ne_bytes(), &one, 0)
                .map_err(|e| e.to_string()),
            CgroupIdMapType::CgrpStorage => {
                use std::os::fd::AsRawFd;
                // The kernel finds the cgroup from an open descriptor of its
                // directory (closed again once written).
                let dir = std::fs::File::open(path).map_err(|e| format!("open {path}: {e}"))?;
                let fd = u32::try_from(dir.as_raw_fd()).map_err(|e| e.to_string())?;
                self.map
                    .update(&fd.to_ne_bytes(), &one, 0)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// The thread that keeps a [`Filler`]'s map current; dropping this stops
/// (and joins) it.
pub struct CgroupIdMapSync {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl CgroupIdMapSync {
    /// Fill the map now, then every [`RESYNC`].
    pub fn start(mut filler: Filler) -> std::io::Result<Self> {
        let ids = filler.sync();
        tracing::info!(config = %filler.config, map = %filler.map.name(), ids, "cgroup_id_map filled");
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("cgroup-id-map-{}", filler.config))
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(RESYNC) {
                    filler.sync();
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for CgroupIdMapSync {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread at once.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
