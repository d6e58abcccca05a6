//! The wasm side of a plugin: one wasmtime [`Engine`](wasmtime::Engine), a
//! compile cache, sandboxed instances, and the host side of every WIT
//! interface.
//!
//! Every plugin gets its own store (own memory, own resource table) with a
//! memory cap, a wall-clock bound per call (epoch interruption driven by a
//! ticker thread) and a WASI context that grants no files, sockets,
//! environment or arguments; stdout and stderr go to the host's log.
//!
//! - [`engine`]: the engine, the linker, compiling (through [`cache`]) and
//!   instantiating components;
//! - [`instance`]: a running instance, its limits, calls and faults;
//! - [`host`]: what a plugin may reach, one module per WIT interface
//!   (`log`, `config`, `maps`, `events`, `metrics`, `k8s`), each over a
//!   small backend trait so that it can be tested without a kernel;
//! - [`compat`]: the older WIT versions still linked, forwarding to [`host`].

pub mod cache;
pub mod compat;
pub mod engine;
pub mod host;
pub mod instance;
mod stdio;

pub use engine::{Prepared, Runtime, RuntimeError, RuntimeOptions, Tier};
pub use host::events::EventBatch;
pub use host::{GrantedMap, PluginHost, ReadOnlyDir};
pub use instance::{Call, Fault, FaultKind, Instance, StoreData};

/// Generated bindings of the WIT world `plugin` of the current version,
/// [`conductor_api::wit::CURRENT`] (a test checks the path against it).
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../sdk/wit/v0.2.1",
        with: {
            "conductor:plugin/maps.bpf-map": crate::host::maps::MapResource,
            "conductor:plugin/metrics.counter": crate::host::metrics::CounterResource,
            "conductor:plugin/metrics.counter-series": crate::host::metrics::SeriesResource,
            "conductor:plugin/metrics.gauge": crate::host::metrics::GaugeResource,
            "conductor:plugin/metrics.histogram": crate::host::metrics::HistogramResource,
        },
        imports: { default: trappable },
    });
}
