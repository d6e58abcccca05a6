//! ebpf_exporter's configuration format (v2): the reader and checks live in
//! [`conductor_api::exporter`], so specs carrying a config are checked the
//! same way by every entry point.

pub use conductor_api::exporter::*;
