//! One node's plugins: everything between a spec and a metric.
//!
//! [`plugin`] runs each plugin on its own thread (its kernel side from
//! `conductor-kernel`, its wasm instance from `conductor-runtime`) and
//! restarts it after faults, holding it to its CPU budget ([`cpu`]); [`manager`] owns the set of plugins, their
//! phases and updates; [`metrics`] is the one registry, served over HTTP by
//! [`server`] and pushed by [`otlp`]; [`k8s`] is the workload cache behind
//! the plugins' `k8s` lookups; [`logs`] keeps each plugin's recent log
//! lines. [`node`] assembles all of it: the one start-up path behind both
//! `conductor run` and `conductor serve`. [`reference`] renders the host's
//! metrics for the manual.

pub mod bpfman;
mod container_paths;
pub mod cpu;
pub mod exporter;
pub mod features;
mod follow;
pub mod idle;
pub mod k8s;
pub mod launch;
pub mod logs;
pub mod manager;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod otlp;
pub mod plugin;
pub mod privileges;
pub mod reference;
pub mod server;
mod wiring;

pub use node::{Node, NodeConfig};
