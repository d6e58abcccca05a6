//! Types shared by the eBPFConductor host, its CLI and the operator.
//!
//! This crate is deliberately light (no wasmtime, no aya) so that the
//! operator and other clients can depend on it.

pub mod attach;
pub mod exporter;
pub mod files;
pub mod package;
pub mod phase;
pub mod spec;
pub mod v1;
pub mod wit;

pub use attach::{
    ATTACH_KINDS, CgroupAttach, CgroupSkbAttach, Direction, HardwareEvent, KprobeAttach,
    PerfEventAttach, PodContainer, SoftwareEvent, TcAttach, TcxAttach, UprobeAttach, XdpAttach,
    XdpMode, is_pattern,
};
pub use phase::Phase;
pub use spec::{
    Access, AttachPoint, BPFMAN_ATTACH_KINDS, BpfmanProgram, Bytecode, ClusterBpfApplicationRef,
    EventSource, ExporterSpec, FieldError, GlobalValue, Limits, Loader, MapGrant, MapRef,
    PluginSpec, ProgramAttach, PullPolicy, Restart, SpecError, load_file, oci_reference,
};
