//! The eBPFConductor node host.
//!
//! Data flow: [`bpf`] loads and attaches a plugin's kernel object; [`events`]
//! drains its ring buffers (through [`ringbuf`]) and perf event arrays into
//! batches; [`plugin`]
//! runs each plugin on its own thread, feeding batches to its sandboxed
//! wasm instance ([`runtime`]) and restarting it after faults; plugins reach
//! kernel maps through [`maps`] and record metrics in [`metrics`], served over
//! HTTP by [`server`] and pushed by [`otlp`]; [`manager`] owns the set of running plugins.
//! [`daemon`] serves the `conductor.v1` node API over a Unix socket, keeping
//! its desired state in [`state`] and plugins' recent log lines in [`logs`];
//! [`client`] is the CLI's side of that API.

pub mod bpf;
pub mod client;
pub mod daemon;
pub mod events;
pub mod logs;
pub mod manager;
pub mod maps;
pub mod metrics;
pub mod oci;
pub mod otlp;
pub mod plugin;
pub mod ringbuf;
pub mod runtime;
pub mod server;
pub mod state;
