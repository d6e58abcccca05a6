//! ebpf_exporter's `cgroup_id_map`: the host keeps one of the object's
//! maps filled with `cgroup id → 1` for every cgroup whose full path one of
//! the config's regexps matches, so programs can filter by cgroup with a
//! map lookup.
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

use conductor_kernel::maps::KernelMap;
use regex::Regex;

use crate::config::CgroupIdMap;
use crate::decoder::Host;

/// How often the cgroup tree is read again.
pub const RESYNC: Duration = Duration::from_secs(1);

/// The map's expected layout for type `hash`: `u64` id → `u64` (1).
const KEY_SIZE: u32 = 8;
const VALUE_SIZE: u32 = 8;

/// Checks `map` against the config and fills it; [`CgroupIdMapSync::start`]
/// keeps it current from a thread of its own.
pub struct Filler {
    config: String,
    map: KernelMap,
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
        if meta.key_size != KEY_SIZE || meta.value_size != VALUE_SIZE {
            return Err(format!(
                "a hash cgroup_id_map has u64 keys (cgroup ids) and u64 values, but this map has {}-byte keys and {}-byte values",
                meta.key_size, meta.value_size
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
            regexps,
            host,
            written: HashSet::new(),
        })
    }

    /// Bring the map in line with the cgroup tree: add the matching
    /// cgroups it lacks, delete the ones that are gone. Returns the number
    /// of ids in the map.
    pub fn sync(&mut self) -> usize {
        let matching: HashSet<u64> = self
            .host
            .cgroup_tree()
            .into_iter()
            .filter(|(_, path)| self.regexps.iter().any(|r| r.is_match(path)))
            .map(|(id, _)| id)
            .collect();
        let new: Vec<u64> = matching.difference(&self.written).copied().collect();
        for id in new {
            match self.map.update(&id.to_ne_bytes(), &1u64.to_ne_bytes(), 0) {
                Ok(()) => {
                    self.written.insert(id);
                }
                Err(e) => {
                    tracing::warn!(config = %self.config, map = %self.map.name(), id, "cannot add a cgroup to the cgroup_id_map: {e}");
                }
            }
        }
        let gone: Vec<u64> = self.written.difference(&matching).copied().collect();
        for id in gone {
            if let Err(e) = self.map.delete(&id.to_ne_bytes()) {
                tracing::warn!(config = %self.config, map = %self.map.name(), id, "cannot remove a cgroup from the cgroup_id_map: {e}");
            }
            self.written.remove(&id);
        }
        self.written.len()
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
