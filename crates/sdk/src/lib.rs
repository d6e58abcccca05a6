//! Write eBPFConductor plugins in ordinary Rust.
//!
//! A plugin is a WebAssembly component (`wasm32-wasip2`, `crate-type =
//! ["cdylib"]`) implementing the `conductor:plugin` world. The node host
//! loads the plugin's BPF object, attaches its programs and then drives the
//! component: [`Plugin::init`] once, [`Plugin::on_events`] for each batch of
//! ring buffer or perf events, [`Plugin::tick`] periodically and
//! [`Plugin::collect`] when metrics are scraped. The plugin sees only the
//! maps and capabilities its spec grants.
//!
//! This crate wraps the generated bindings:
//!
//! - [`record!`](macro@record) declares an event record once, as a plain-old-data
//!   `#[repr(C)]` struct whose layout the host checks against the C
//!   struct's BTF when it loads the plugin ([`record`](mod@record)).
//! - [`EventBatch`] iterates and decodes event records without copying the
//!   batch ([`EventBatch::records`], [`EventBatch::decode`]).
//! - [`Counter`], [`Gauge`] and [`Histogram`] record metrics the host
//!   exports; [`CounterFamily`] keeps a counter's series by a typed key
//!   that is its label set (checked against the declared label names at
//!   compile time) and handles the cardinality limit.
//! - [`Map`] and [`TypedMap`] read and write BPF maps, including per-CPU ones.
//! - [`config::load`] fills a `serde::Deserialize` struct from the spec's
//!   `config` section; [`log`] and the [`info!`]-style macros write to the
//!   host's log; [`k8s`] resolves cgroups, PIDs and IPs to Kubernetes
//!   workloads, and [`k8s::Workload`] is a cgroup's namespace, pod and
//!   container as label values, cached.
//!
//! # Example
//!
//! A plugin counting `exec` calls by command name and workload (the whole
//! of `plugins/exec-counter`). The kernel side submits a `struct
//! exec_event` per exec into the ring buffer `events` and names it with
//! `CONDUCTOR_RECORD(exec_event)`.
//!
//! ```rust,ignore
//! use std::collections::HashSet;
//!
//! use conductor_sdk::prelude::*;
//!
//! record! {
//!     struct ExecEvent { cgroup_id: u64, pid: u32, ppid: u32, uid: u32, _pad: u32, comm: [u8; 16] }
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct Config {
//!     #[serde(default)]
//!     ignore: HashSet<String>,
//! }
//!
//! struct ExecCounter {
//!     ignore: HashSet<String>,
//!     execs: CounterFamily<([u8; 16], Workload), 4>,
//!     distinct: Gauge,
//!     seen: HashSet<[u8; 16]>,
//! }
//!
//! impl Plugin for ExecCounter {
//!     fn init() -> Result<Self> {
//!         let Config { ignore } = config::load()?;
//!         let labels = ["comm", "namespace", "pod", "container"];
//!         Ok(ExecCounter {
//!             ignore,
//!             execs: CounterFamily::declare("execs", "Processes executed.", labels)?,
//!             distinct: Gauge::declare("distinct_commands", "Distinct commands.", &[])?,
//!             seen: HashSet::new(),
//!         })
//!     }
//!
//!     fn on_events(&mut self, batch: &EventBatch) -> Result<()> {
//!         for e in batch.records::<ExecEvent>()? {
//!             if !self.ignore.contains(c_str(&e.comm).as_ref()) {
//!                 self.execs.inc((e.comm, Workload::of_cgroup(e.cgroup_id)))?;
//!                 self.seen.insert(e.comm);
//!             }
//!         }
//!         self.distinct.set(&[], self.seen.len() as f64)
//!     }
//! }
//!
//! conductor_sdk::export_plugin!(ExecCounter);
//! ```
//!
//! # Event and map types
//!
//! Event records and map keys/values are read as [`Pod`] types: `#[repr(C)]`
//! structs without padding (add explicit `_pad` fields where the C compiler
//! would pad), integers and arrays of them. Declare structs with
//! [`record!`], which also lets the host check them against the BPF
//! object. Hand-written structs work too, with the `Pod` and `Zeroable`
//! derives from the prelude; since those refer to the `bytemuck` crate by
//! name, add `#[bytemuck(crate = "conductor_sdk::bytemuck")]` to each
//! struct or depend on `bytemuck` directly.
//!
//! # Typed config
//!
//! [`config::load`] needs `serde` with its `derive` feature in the
//! plugin's `Cargo.toml`:
//!
//! ```toml
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! # Errors
//!
//! SDK calls return [`Result`], whose [`Error`] says what failed and where
//! (`map "flows": update: the plugin has read-only access`). Errors returned
//! from the plugin's methods reach the host's log; an error from `init`
//! stops the plugin and makes the host restart it with backoff. Panics trap
//! the instance, which the host also restarts.
//!
//! # Building
//!
//! ```sh
//! cargo build --release --target wasm32-wasip2
//! ```
//!
//! The crate also compiles natively, so a plugin's pure logic can be unit
//! tested with `cargo test` (build batches with [`EventBatch::from_records`]);
//! calls into the host panic outside WebAssembly.

pub mod config;
mod error;
pub mod events;
pub mod log;
pub mod maps;
pub mod metrics;
mod plugin;
pub mod record;
mod workload;

/// The generated bindings of the newest WIT package, `wit/v0.2.1/` (older
/// versions' folders are kept for hosts, not built here); the rest of the
/// crate wraps them.
#[doc(hidden)]
// The `on-events` export's flattened parameters (the batch's lists as
// pointer/length pairs) exceed clippy's default argument count.
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit/v0.2.1",
        world: "plugin",
        // Hidden behind `export_plugin!`, which reaches it as `$crate::...`.
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "conductor_sdk::bindings",
        // Import arguments borrow (`&[&str]` label values), so recording a
        // metric sample does not allocate.
        ownership: Borrowing {
            duplicate_if_necessary: true
        },
    });
}

pub mod k8s {
    //! Kubernetes identity of the workloads on this node.
    //!
    //! Lookups answer from the host's in-memory cache and never block. A process
    //! outside any pod is [`Identity::Host`]; without cluster metadata (or for a
    //! container not cached yet) the answer is [`Identity::Unknown`], and
    //! [`cgroup_container_id`] still names the container from its cgroup.
    //! Records carry no label sets: [`pod_label`] reads one label,
    //! [`pod_labels`] and [`pod_annotations`] copy the whole set. Calls cost
    //! a host call each: resolve each distinct cgroup once per batch.
    //!
    //! ```rust,ignore
    //! if let k8s::Identity::Workload(w) = k8s::by_cgroup_id(event.cgroup_id) {
    //!     info!("exec in {}/{}", w.pod.namespace, w.pod.name);
    //! }
    //! ```

    pub use crate::bindings::conductor::plugin::k8s::*;
    pub use crate::workload::{Workload, WorkloadLabels};
}

pub use bytemuck;
pub use bytemuck::{Pod, Zeroable};
pub use error::{Error, ErrorKind, Result, ResultExt};
pub use events::{DecodeError, EventBatch};
pub use maps::{Map, TypedMap, UpdateMode};
pub use metrics::{
    Counter, CounterFamily, CounterSeries, Gauge, Histogram, Label, LabelSet, SeriesCache,
};
#[doc(hidden)]
pub use plugin::__private;
pub use plugin::Plugin;
pub use serde;

/// Everything a typical plugin uses: `use conductor_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::events::c_str;
    pub use crate::k8s::Workload;
    pub use crate::maps::{Map, TypedMap, UpdateMode};
    pub use crate::metrics::{
        Counter, CounterFamily, CounterSeries, Gauge, Histogram, SeriesCache,
    };
    pub use crate::{
        Error, EventBatch, Plugin, Pod, Result, ResultExt, Zeroable, config, debug, error, info,
        record, trace, warn,
    };
}
