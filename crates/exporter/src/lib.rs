//! The built-in ebpf_exporter: cloudflare/ebpf_exporter configurations
//! (v2) run unchanged, their metrics in the node's registry.
//!
//! In the order a scrape meets them: [`config`] reads and validates the
//! YAML; [`exporter`] loads the object (programs attached from their
//! section names) and reads each metric's map at scrape time; [`collect`]
//! turns rows into series through each label's [`decoder`] chain, and
//! [`histogram`] lays buckets out as ebpf_exporter does; [`perf`] counts
//! the events of `perf_event_array` counters as they come. [`host`] is what
//! decoders ask about the node (kernel symbols, cgroups, pods).

pub mod cgroup_id_map;
pub mod collect;
pub mod config;
pub mod decoder;
pub mod exporter;
pub mod histogram;
pub mod host;
pub mod pci;
pub mod perf;
mod tables;

pub use config::{Config, ConfigError, object_path, read_configs};
pub use decoder::{Host, Workload};
pub use exporter::{Exporter, ExporterSet, LoadError};
pub use host::{Kallsyms, PodLookup, SystemHost, WorkloadLookup};
pub use pci::{PCI_IDS_PATHS, PciIds, PciIdsError};
