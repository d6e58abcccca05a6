//! Where a plugin's BPF programs attach: one optional field per attach kind
//! on [`ProgramAttach`], exactly one of which is set, and the checks a type
//! cannot express ([`ProgramAttach::validate`]).
//!
//! Kept apart from the rest of the spec because the kinds grow with the
//! kernel, while the spec around them changes for other reasons.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The CEL rule the CRD carries for "exactly one attach point", in the
/// order of [`ProgramAttach::set_kinds`].
#[cfg(feature = "schema")]
const EXACTLY_ONE_RULE: &str = "[has(self.tracepoint), has(self.rawTracepoint), has(self.tpBtf), \
     has(self.uprobe), has(self.uretprobe), has(self.kprobe), has(self.kretprobe), \
     has(self.fentry), has(self.fexit), has(self.lsm), has(self.xdp), has(self.tc), \
     has(self.tcx), has(self.cgroupSkb), has(self.cgroupSock), has(self.cgroupSockAddr), \
     has(self.cgroupSockopt), has(self.perfEvent)].filter(x, x).size() == 1";

/// The CRD's pattern for an interface: a Linux interface name (1 to 15
/// characters without `/`, `:` or whitespace), or a glob pattern holding
/// `*`, `?` or `[` (up to 64 characters), as [`ProgramAttach::validate`]
/// checks.
#[cfg(feature = "schema")]
const INTERFACE_RE: &str = r"^([^/\s:*?\[]{1,15}|[^/\s:]*[*?\[][^/\s:]*)$";

/// True when an interface name or cgroup path is a glob pattern: it holds
/// `*`, `?` or `[`. The host then attaches to every match, rescans for
/// new and vanished ones, and keeps each match's link apart (see
/// `conductor_kernel::patterns`). Linux allows those characters in
/// interface names; such an interface cannot be named literally.
pub fn is_pattern(name: &str) -> bool {
    name.contains(['*', '?', '['])
}

/// One program of the object and where to attach it: exactly one attach
/// point must be set. The program's kind in the object (its `SEC()` name,
/// e.g. `SEC("xdp")` or `SEC("uprobe")`) must match the attach point.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(
    feature = "schema",
    schemars(extend("x-kubernetes-validations" = [{
        "rule": EXACTLY_ONE_RULE,
        "message": "set exactly one attach point (tracepoint, rawTracepoint, tpBtf, uprobe, uretprobe, kprobe, kretprobe, fentry, fexit, lsm, xdp, tc, tcx, cgroupSkb, cgroupSock, cgroupSockAddr, cgroupSockopt or perfEvent)"
    }]))
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProgramAttach {
    /// The program's function name in the object.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub name: String,
    /// A tracepoint as `category/name`, e.g. `sched/sched_process_exec`
    /// (`SEC("tracepoint/...")`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"))
    )]
    pub tracepoint: Option<String>,
    /// A raw tracepoint by name, e.g. `sched_switch` (`SEC("raw_tp/...")`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[A-Za-z0-9_.-]+$")))]
    pub raw_tracepoint: Option<String>,
    /// A BTF-enabled tracepoint by name, e.g. `sched_switch`
    /// (`SEC("tp_btf/...")`); arguments are typed from the kernel's BTF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[A-Za-z0-9_]+$")))]
    pub tp_btf: Option<String>,
    /// A user-space function entry (`SEC("uprobe")`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uprobe: Option<UprobeAttach>,
    /// A user-space function return (`SEC("uretprobe")`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uretprobe: Option<UprobeAttach>,
    /// A kernel function entry (`SEC("kprobe")`); needs CONFIG_KPROBES.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kprobe: Option<KprobeAttach>,
    /// A kernel function return (`SEC("kretprobe")`); needs CONFIG_KPROBES.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kretprobe: Option<KprobeAttach>,
    /// A kernel function by name, entered through a BPF trampoline
    /// (`SEC("fentry")`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[A-Za-z0-9_.]+$")))]
    pub fentry: Option<String>,
    /// A kernel function by name, on return through a BPF trampoline
    /// (`SEC("fexit")`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[A-Za-z0-9_.]+$")))]
    pub fexit: Option<String>,
    /// An LSM hook by name without the `bpf_lsm_` prefix, e.g. `file_open`
    /// (`SEC("lsm/...")`); needs `bpf` in the kernel's active LSM list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[A-Za-z0-9_]+$")))]
    pub lsm: Option<String>,
    /// A network interface's receive path (`SEC("xdp")`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp: Option<XdpAttach>,
    /// A traffic-control classifier through the clsact qdisc (netlink
    /// `cls_bpf`; `SEC("classifier")`). The host adds the clsact qdisc if
    /// the interface has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tc: Option<TcAttach>,
    /// A traffic-control classifier through a TCX link (Linux 6.6+;
    /// `SEC("classifier")`), appended after the interface's other TCX programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcx: Option<TcxAttach>,
    /// Packets entering or leaving a cgroup's sockets (`SEC("cgroup_skb/ingress")`,
    /// `SEC("cgroup_skb/egress")` or `SEC("cgroup/skb")`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_skb: Option<CgroupSkbAttach>,
    /// Socket creation, release or post-bind in a cgroup; the hook is the
    /// program's section (`SEC("cgroup/sock_create")`, `cgroup/post_bind4`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_sock: Option<CgroupAttach>,
    /// Socket address operations in a cgroup; the hook is the program's
    /// section (`SEC("cgroup/connect4")`, `cgroup/bind6`, `cgroup/sendmsg4`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_sock_addr: Option<CgroupAttach>,
    /// `getsockopt`/`setsockopt` in a cgroup (`SEC("cgroup/getsockopt")`,
    /// `SEC("cgroup/setsockopt")`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_sockopt: Option<CgroupAttach>,
    /// A software or hardware perf event, sampled on every CPU
    /// (`SEC("perf_event")`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perf_event: Option<PerfEventAttach>,
}

/// A uprobe or uretprobe: a function of a binary or shared library.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(
    feature = "schema",
    schemars(extend("x-kubernetes-validations" = [{
        "rule": "has(self.symbol) || has(self.offset)",
        "message": "set symbol, offset, or both (offset is then relative to the symbol)"
    }]))
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UprobeAttach {
    /// The binary or shared library: an absolute path, or a library name
    /// such as `libc.so.6`: looked up in the `pid`'s mappings when one is
    /// given, else in the standard library directories (`/lib/<multiarch>`,
    /// `/usr/lib/<multiarch>`, `/lib64`, ...), else in `/etc/ld.so.cache`.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub target: String,
    /// The function's symbol in the target's symbol tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub symbol: Option<String>,
    /// Bytes past the symbol, or, without a symbol, the file offset of
    /// the instruction to probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Fire only in this process. Omitted: every process that runs the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub pid: Option<u32>,
    /// `target` is a path inside this pod's container (its root
    /// filesystem), not the node's: the host finds a process of the
    /// container on this node through its workload cache and opens the
    /// binary through that process's root (`/proc/<pid>/root/<target>`).
    /// The probe then fires wherever that file runs. Needs an absolute
    /// `target` and no `pid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodContainer>,
}

/// A container of a pod on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodContainer {
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub namespace: String,
    /// The pod's name.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub name: String,
    /// The container's name; omitted: the pod's only container (a pod with
    /// several must name one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub container: Option<String>,
}

/// A kprobe or kretprobe: a kernel function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KprobeAttach {
    /// The kernel function's name, e.g. `do_unlinkat`.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[A-Za-z0-9_.]+$")))]
    pub function: String,
    /// Bytes past the function's start (kprobe only). Omitted: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// An XDP attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct XdpAttach {
    /// The network interface's name, e.g. `eth0`, or a glob pattern
    /// (`*`, `?`, `[...]`), e.g. `veth*`: the program attaches to every
    /// matching interface, including ones that appear later, and leaves
    /// the ones that go (see [`is_pattern`]).
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 64), regex(pattern = INTERFACE_RE))
    )]
    pub interface: String,
    #[serde(default)]
    pub mode: XdpMode,
}

/// Where an XDP program runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum XdpMode {
    /// The driver's native mode if it has one, else generic.
    #[default]
    Default,
    /// Generic XDP in the kernel's network stack (any interface).
    Skb,
    /// Native XDP in the driver.
    Driver,
    /// Offloaded to the network card.
    Hardware,
}

/// Which way packets go through a TC program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    #[default]
    Ingress,
    Egress,
}

/// A netlink (cls_bpf) TC attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcAttach {
    /// The network interface's name, or a glob pattern (as in
    /// [`XdpAttach::interface`]).
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 64), regex(pattern = INTERFACE_RE))
    )]
    pub interface: String,
    pub direction: Direction,
    /// The filter's priority, 1 (runs first) to 65535. Omitted: the
    /// kernel picks the next free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65535)))]
    pub priority: Option<u32>,
}

/// A TCX attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcxAttach {
    /// The network interface's name, or a glob pattern (as in
    /// [`XdpAttach::interface`]).
    #[cfg_attr(
        feature = "schema",
        schemars(length(max = 64), regex(pattern = INTERFACE_RE))
    )]
    pub interface: String,
    pub direction: Direction,
}

/// A cgroup for `cgroupSock`, `cgroupSockAddr` and `cgroupSockopt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CgroupAttach {
    /// The cgroup v2 directory, e.g. `/sys/fs/cgroup/kubepods.slice`, or
    /// a glob pattern of directories (`*`, `?`, `[...]`; `*` stays within
    /// one path component), e.g. `/sys/fs/cgroup/kubepods.slice/*/*`: the
    /// program attaches to every matching cgroup, including ones created
    /// later, and leaves the ones removed (see [`is_pattern`]).
    /// Omitted: the root of the cgroup v2 hierarchy (every process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^/")))]
    pub cgroup_path: Option<String>,
}

/// A `cgroupSkb` attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CgroupSkbAttach {
    /// As in [`CgroupAttach::cgroup_path`] (a directory or a glob pattern).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^/")))]
    pub cgroup_path: Option<String>,
    /// Packets received (`ingress`) or sent (`egress`) by the cgroup's sockets.
    pub direction: Direction,
}

/// A perf event to sample on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(
    feature = "schema",
    schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "has(self.software) != has(self.hardware)",
            "message": "set exactly one of software and hardware"
        },
        {
            "rule": "has(self.frequency) != has(self.period)",
            "message": "set exactly one of frequency (samples per second) and period (events per sample)"
        }
    ]))
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PerfEventAttach {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<SoftwareEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<HardwareEvent>,
    /// Samples per second (per CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub frequency: Option<u64>,
    /// One sample every this many events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub period: Option<u64>,
    /// Count only this process's events. Omitted: every process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub pid: Option<u32>,
    /// Only this CPU. Omitted: every online CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
}

/// Kernel software events (`PERF_TYPE_SOFTWARE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum SoftwareEvent {
    CpuClock,
    TaskClock,
    PageFaults,
    ContextSwitches,
    CpuMigrations,
    PageFaultsMin,
    PageFaultsMaj,
    AlignmentFaults,
    EmulationFaults,
    CgroupSwitches,
}

/// Generalised hardware events (`PERF_TYPE_HARDWARE`); need a PMU, which
/// virtual machines often lack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum HardwareEvent {
    CpuCycles,
    Instructions,
    CacheReferences,
    CacheMisses,
    BranchInstructions,
    BranchMisses,
    BusCycles,
    StalledCyclesFrontend,
    StalledCyclesBackend,
    RefCpuCycles,
}

/// Where a program attaches, once the spec is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachPoint<'a> {
    Tracepoint { category: &'a str, name: &'a str },
    RawTracepoint { name: &'a str },
    TpBtf { name: &'a str },
    Uprobe { probe: &'a UprobeAttach, ret: bool },
    Kprobe { probe: &'a KprobeAttach, ret: bool },
    Fentry { function: &'a str },
    Fexit { function: &'a str },
    Lsm { hook: &'a str },
    Xdp(&'a XdpAttach),
    Tc(&'a TcAttach),
    Tcx(&'a TcxAttach),
    CgroupSkb(&'a CgroupSkbAttach),
    CgroupSock(&'a CgroupAttach),
    CgroupSockAddr(&'a CgroupAttach),
    CgroupSockopt(&'a CgroupAttach),
    PerfEvent(&'a PerfEventAttach),
}

impl AttachPoint<'_> {
    /// The spec field of this kind, e.g. `tpBtf`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tracepoint { .. } => "tracepoint",
            Self::RawTracepoint { .. } => "rawTracepoint",
            Self::TpBtf { .. } => "tpBtf",
            Self::Uprobe { ret: false, .. } => "uprobe",
            Self::Uprobe { ret: true, .. } => "uretprobe",
            Self::Kprobe { ret: false, .. } => "kprobe",
            Self::Kprobe { ret: true, .. } => "kretprobe",
            Self::Fentry { .. } => "fentry",
            Self::Fexit { .. } => "fexit",
            Self::Lsm { .. } => "lsm",
            Self::Xdp(_) => "xdp",
            Self::Tc(_) => "tc",
            Self::Tcx(_) => "tcx",
            Self::CgroupSkb(_) => "cgroupSkb",
            Self::CgroupSock(_) => "cgroupSock",
            Self::CgroupSockAddr(_) => "cgroupSockAddr",
            Self::CgroupSockopt(_) => "cgroupSockopt",
            Self::PerfEvent(_) => "perfEvent",
        }
    }
}

impl AttachPoint<'_> {
    /// The interface or cgroup pattern this point names, if it names one
    /// (see [`is_pattern`]).
    pub fn pattern(&self) -> Option<&str> {
        let target = match self {
            Self::Xdp(x) => Some(x.interface.as_str()),
            Self::Tc(t) => Some(t.interface.as_str()),
            Self::Tcx(t) => Some(t.interface.as_str()),
            Self::CgroupSkb(c) => c.cgroup_path.as_deref(),
            Self::CgroupSock(c) | Self::CgroupSockAddr(c) | Self::CgroupSockopt(c) => {
                c.cgroup_path.as_deref()
            }
            _ => None,
        };
        target.filter(|t| is_pattern(t))
    }
}

impl ProgramAttach {
    /// This program attached to one `target` (an interface name or a
    /// cgroup directory) in place of its interface or cgroup pattern;
    /// unchanged for other kinds.
    pub fn with_target(&self, target: &str) -> Self {
        let mut p = self.clone();
        if let Some(x) = &mut p.xdp {
            x.interface = target.to_owned();
        }
        if let Some(t) = &mut p.tc {
            t.interface = target.to_owned();
        }
        if let Some(t) = &mut p.tcx {
            t.interface = target.to_owned();
        }
        if let Some(c) = &mut p.cgroup_skb {
            c.cgroup_path = Some(target.to_owned());
        }
        for c in [
            &mut p.cgroup_sock,
            &mut p.cgroup_sock_addr,
            &mut p.cgroup_sockopt,
        ]
        .into_iter()
        .flatten()
        {
            c.cgroup_path = Some(target.to_owned());
        }
        p
    }
}

/// Every attach kind's spec field, in the order the docs list them.
pub const ATTACH_KINDS: [&str; 18] = [
    "tracepoint",
    "rawTracepoint",
    "tpBtf",
    "uprobe",
    "uretprobe",
    "kprobe",
    "kretprobe",
    "fentry",
    "fexit",
    "lsm",
    "xdp",
    "tc",
    "tcx",
    "cgroupSkb",
    "cgroupSock",
    "cgroupSockAddr",
    "cgroupSockopt",
    "perfEvent",
];

impl ProgramAttach {
    /// The attach points set, as [`AttachPoint`]s (one when the spec is valid).
    pub fn set_points(&self) -> Vec<AttachPoint<'_>> {
        let mut v = Vec::new();
        if let Some(tp) = &self.tracepoint {
            let (category, name) = tp.split_once('/').unwrap_or((tp.as_str(), ""));
            v.push(AttachPoint::Tracepoint { category, name });
        }
        if let Some(name) = &self.raw_tracepoint {
            v.push(AttachPoint::RawTracepoint { name });
        }
        if let Some(name) = &self.tp_btf {
            v.push(AttachPoint::TpBtf { name });
        }
        if let Some(probe) = &self.uprobe {
            v.push(AttachPoint::Uprobe { probe, ret: false });
        }
        if let Some(probe) = &self.uretprobe {
            v.push(AttachPoint::Uprobe { probe, ret: true });
        }
        if let Some(probe) = &self.kprobe {
            v.push(AttachPoint::Kprobe { probe, ret: false });
        }
        if let Some(probe) = &self.kretprobe {
            v.push(AttachPoint::Kprobe { probe, ret: true });
        }
        if let Some(function) = &self.fentry {
            v.push(AttachPoint::Fentry { function });
        }
        if let Some(function) = &self.fexit {
            v.push(AttachPoint::Fexit { function });
        }
        if let Some(hook) = &self.lsm {
            v.push(AttachPoint::Lsm { hook });
        }
        if let Some(x) = &self.xdp {
            v.push(AttachPoint::Xdp(x));
        }
        if let Some(t) = &self.tc {
            v.push(AttachPoint::Tc(t));
        }
        if let Some(t) = &self.tcx {
            v.push(AttachPoint::Tcx(t));
        }
        if let Some(c) = &self.cgroup_skb {
            v.push(AttachPoint::CgroupSkb(c));
        }
        if let Some(c) = &self.cgroup_sock {
            v.push(AttachPoint::CgroupSock(c));
        }
        if let Some(c) = &self.cgroup_sock_addr {
            v.push(AttachPoint::CgroupSockAddr(c));
        }
        if let Some(c) = &self.cgroup_sockopt {
            v.push(AttachPoint::CgroupSockopt(c));
        }
        if let Some(p) = &self.perf_event {
            v.push(AttachPoint::PerfEvent(p));
        }
        v
    }

    /// The attach point, or `None` if the spec is invalid (see [`ProgramAttach::validate`]).
    pub fn attach_point(&self) -> Option<AttachPoint<'_>> {
        match self.set_points().as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// Check the attach point of the program at field path `at` (e.g.
    /// `bytecode.programs[0]`); each problem goes to `err(field, message)`.
    pub fn validate(&self, at: &str, err: &mut dyn FnMut(String, String)) {
        let points = self.set_points();
        let one_of = ATTACH_KINDS.join(", ");
        let point = match points.as_slice() {
            [] => {
                return err(at.to_owned(), format!("set one attach point: {one_of}"));
            }
            [one] => *one,
            many => {
                let set: Vec<_> = many.iter().map(AttachPoint::kind).collect();
                return err(
                    at.to_owned(),
                    format!(
                        "set only one attach point; {} are set (list the program twice under different names to attach it twice)",
                        set.join(" and ")
                    ),
                );
            }
        };
        let field = format!("{at}.{}", point.kind());
        match point {
            AttachPoint::Tracepoint { category, name } => {
                if !(is_trace_name(category) && is_trace_name(name)) {
                    err(
                        field,
                        format!(
                            "{:?} is not of the form category/name (e.g. sched/sched_process_exec)",
                            self.tracepoint.as_deref().unwrap_or_default()
                        ),
                    );
                }
            }
            AttachPoint::RawTracepoint { name } => {
                if !is_trace_name(name) {
                    err(
                        field,
                        format!("{name:?} is not a tracepoint name (e.g. sched_switch)"),
                    );
                }
            }
            AttachPoint::TpBtf { name } => {
                if !is_symbol(name) {
                    err(
                        field,
                        format!(
                            "{name:?} is not a BTF tracepoint name (e.g. sched_switch; no category)"
                        ),
                    );
                }
            }
            AttachPoint::Uprobe { probe, .. } => validate_uprobe(probe, &field, err),
            AttachPoint::Kprobe { probe, ret } => {
                if !is_symbol(&probe.function) {
                    err(
                        format!("{field}.function"),
                        format!(
                            "{:?} is not a kernel function name (e.g. do_unlinkat)",
                            probe.function
                        ),
                    );
                }
                if ret && probe.offset.is_some_and(|o| o != 0) {
                    err(
                        format!("{field}.offset"),
                        "a kretprobe fires on return: it takes no offset".into(),
                    );
                }
            }
            AttachPoint::Fentry { function } | AttachPoint::Fexit { function } => {
                if !is_symbol(function) {
                    err(
                        field,
                        format!("{function:?} is not a kernel function name (e.g. do_unlinkat)"),
                    );
                }
            }
            AttachPoint::Lsm { hook } => {
                if !is_symbol(hook) || hook.starts_with("bpf_lsm_") {
                    err(
                        field,
                        format!(
                            "{hook:?} is not an LSM hook name: give it without the bpf_lsm_ prefix (e.g. file_open)"
                        ),
                    );
                }
            }
            AttachPoint::Xdp(x) => check_interface(&x.interface, &field, err),
            AttachPoint::Tc(t) => {
                check_interface(&t.interface, &field, err);
                if let Some(p) = t.priority
                    && !(1..=65535).contains(&p)
                {
                    err(
                        format!("{field}.priority"),
                        format!("{p} is out of range 1..=65535 (omit it to let the kernel pick)"),
                    );
                }
            }
            AttachPoint::Tcx(t) => check_interface(&t.interface, &field, err),
            AttachPoint::CgroupSkb(c) => check_cgroup(c.cgroup_path.as_deref(), &field, err),
            AttachPoint::CgroupSock(c)
            | AttachPoint::CgroupSockAddr(c)
            | AttachPoint::CgroupSockopt(c) => check_cgroup(c.cgroup_path.as_deref(), &field, err),
            AttachPoint::PerfEvent(p) => {
                match (p.software, p.hardware) {
                    (None, None) => err(
                        field.clone(),
                        "set the event: software (e.g. cpuClock) or hardware (e.g. cpuCycles)"
                            .into(),
                    ),
                    (Some(_), Some(_)) => err(
                        field.clone(),
                        "set only one of software and hardware".into(),
                    ),
                    _ => {}
                }
                match (p.frequency, p.period) {
                    (None, None) => err(
                        field.clone(),
                        "set frequency (samples per second) or period (events per sample)".into(),
                    ),
                    (Some(_), Some(_)) => {
                        err(field.clone(), "set only one of frequency and period".into())
                    }
                    (Some(0), None) => {
                        err(format!("{field}.frequency"), "must be at least 1".into())
                    }
                    (None, Some(0)) => err(format!("{field}.period"), "must be at least 1".into()),
                    _ => {}
                }
                if p.pid == Some(0) {
                    err(
                        format!("{field}.pid"),
                        "must be a process id (omit it for every process)".into(),
                    );
                }
            }
        }
    }
}

fn validate_uprobe(p: &UprobeAttach, field: &str, err: &mut dyn FnMut(String, String)) {
    let target = p.target.as_str();
    if target.trim().is_empty() {
        err(
            format!("{field}.target"),
            "must name a binary or library: an absolute path or a library name such as libc.so.6"
                .into(),
        );
    } else if target.contains('/') && !Path::new(target).is_absolute() {
        err(
            format!("{field}.target"),
            format!(
                "{target:?} must be an absolute path, or a bare library name such as libc.so.6"
            ),
        );
    }
    match (&p.symbol, p.offset) {
        (None, None) => err(
            field.to_owned(),
            "set symbol (a function name), offset (a file offset), or both".into(),
        ),
        (Some(s), _) if s.is_empty() || s.chars().any(char::is_whitespace) => err(
            format!("{field}.symbol"),
            format!("{s:?} is not a symbol name"),
        ),
        _ => {}
    }
    if let Some(pod) = &p.pod {
        if !Path::new(target).is_absolute() {
            err(
                format!("{field}.target"),
                format!("{target:?} must be an absolute path inside the container when pod is set"),
            );
        }
        if p.pid.is_some() {
            err(
                format!("{field}.pid"),
                "a node pid and pod exclude each other: the host finds the container's process itself".into(),
            );
        }
        for (name, value) in [
            ("namespace", Some(&pod.namespace)),
            ("name", Some(&pod.name)),
            ("container", pod.container.as_ref()),
        ] {
            if value.is_some_and(|v| {
                v.is_empty() || v.contains('/') || v.chars().any(char::is_whitespace)
            }) {
                err(
                    format!("{field}.pod.{name}"),
                    format!(
                        "{:?} is not a Kubernetes name",
                        value.map(String::as_str).unwrap_or_default()
                    ),
                );
            }
        }
    }
    if p.pid == Some(0) {
        err(
            format!("{field}.pid"),
            "must be a process id (omit it for every process)".into(),
        );
    }
}

/// Linux interface names: 1 to 15 bytes, no `/`, `:` or whitespace; or a
/// glob pattern of them (up to 64 bytes).
fn check_interface(name: &str, field: &str, err: &mut dyn FnMut(String, String)) {
    if is_pattern(name) {
        let bad_char = name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
        if name.len() > 64 || bad_char {
            err(
                format!("{field}.interface"),
                format!(
                    "{name:?} is not an interface pattern (up to 64 characters without '/', ':' or spaces, e.g. veth*)"
                ),
            );
        } else if let Err(e) = glob::Pattern::new(name) {
            err(
                format!("{field}.interface"),
                format!("{name:?} is not a valid glob pattern: {e} (e.g. veth*, eth[01], lxc?)"),
            );
        }
        return;
    }
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if !ok {
        err(
            format!("{field}.interface"),
            format!(
                "{name:?} is not a network interface name (1 to 15 characters without '/', ':' or spaces, e.g. eth0)"
            ),
        );
    }
}

fn check_cgroup(path: Option<&str>, field: &str, err: &mut dyn FnMut(String, String)) {
    let Some(p) = path else { return };
    if !Path::new(p).is_absolute() {
        err(
            format!("{field}.cgroupPath"),
            format!(
                "{p:?} must be an absolute path of a cgroup v2 directory (omit it for the root)"
            ),
        );
    } else if is_pattern(p)
        && let Err(e) = glob::Pattern::new(p)
    {
        err(
            format!("{field}.cgroupPath"),
            format!(
                "{p:?} is not a valid glob pattern: {e} (e.g. /sys/fs/cgroup/kubepods.slice/*/*)"
            ),
        );
    }
}

pub(crate) fn is_trace_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// A C identifier, allowing the `.` of compiler-made names (`foo.isra.0`).
fn is_symbol(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use crate::{PluginSpec, SpecError};

    #[test]
    fn a_uprobe_in_a_pod_needs_an_absolute_target_and_no_pid() {
        let ok = "    - {name: a, uprobe: {target: /app/server, symbol: f, pod: {namespace: shop, name: api-1}}}\n";
        assert_eq!(errors(ok), Vec::<(String, String)>::new());
        let bad = errors(
            "    - {name: a, uprobe: {target: libc.so.6, symbol: f, pid: 4, pod: {namespace: shop, name: 'a b', container: ''}}}\n",
        );
        let fields: Vec<&str> = bad.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "bytecode.programs[0].uprobe.target",
                "bytecode.programs[0].uprobe.pid",
                "bytecode.programs[0].uprobe.pod.name",
                "bytecode.programs[0].uprobe.pod.container",
            ],
            "{bad:?}"
        );
    }

    fn errors(programs: &str) -> Vec<(String, String)> {
        let text =
            format!("name: p\ncomponent: p.wasm\nbytecode:\n  path: p.o\n  programs:\n{programs}");
        match PluginSpec::from_yaml(&text) {
            Ok(_) => Vec::new(),
            Err(SpecError::Invalid { errors, .. }) => {
                errors.into_iter().map(|e| (e.field, e.message)).collect()
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn every_kind_parses_and_round_trips() {
        let text = r#"
name: p
component: p.wasm
bytecode:
  path: p.o
  programs:
    - {name: a, tracepoint: sched/sched_switch}
    - {name: b, rawTracepoint: sys_enter}
    - {name: c, tpBtf: sched_switch}
    - {name: d, uprobe: {target: libc.so.6, symbol: malloc}}
    - {name: e, uretprobe: {target: /usr/bin/bash, offset: 4096, pid: 1}}
    - {name: f, kprobe: {function: do_unlinkat, offset: 0}}
    - {name: g, kretprobe: {function: do_unlinkat}}
    - {name: h, fentry: do_unlinkat}
    - {name: i, fexit: do_unlinkat}
    - {name: j, lsm: file_open}
    - {name: k, xdp: {interface: eth0, mode: skb}}
    - {name: l, tc: {interface: eth0, direction: egress, priority: 10}}
    - {name: m, tcx: {interface: eth0, direction: ingress}}
    - {name: n, cgroupSkb: {direction: egress}}
    - {name: o, cgroupSock: {cgroupPath: /sys/fs/cgroup/x}}
    - {name: q, cgroupSockAddr: {}}
    - {name: r, cgroupSockopt: {}}
    - {name: s, perfEvent: {software: cpuClock, frequency: 99}}
"#;
        let spec = PluginSpec::from_yaml(text).unwrap();
        let kinds: Vec<_> = spec
            .bytecode
            .as_ref()
            .unwrap()
            .programs
            .iter()
            .map(|p| p.attach_point().unwrap().kind())
            .collect();
        assert_eq!(kinds, super::ATTACH_KINDS);
        let yaml = serde_yaml_ng::to_string(&spec).unwrap();
        assert_eq!(PluginSpec::from_yaml(&yaml).unwrap(), spec);
    }

    #[test]
    fn bad_attach_points_are_named_with_their_fields() {
        let got = errors(
            r#"
    - {name: a}
    - {name: b, tpBtf: sched_switch, xdp: {interface: eth0}}
    - {name: c, tpBtf: sched/sched_switch}
    - {name: d, uprobe: {target: lib/libc.so}}
    - {name: e, kretprobe: {function: "do unlink", offset: 4}}
    - {name: f, lsm: bpf_lsm_file_open}
    - {name: g, xdp: {interface: a-name-longer-than-15}}
    - {name: h, tc: {interface: eth0, direction: ingress, priority: 70000}}
    - {name: i, cgroupSkb: {cgroupPath: relative, direction: egress}}
    - {name: j, perfEvent: {software: cpuClock, hardware: cpuCycles, frequency: 1, period: 1}}
    - {name: k, perfEvent: {period: 0, software: taskClock}}
"#,
        );
        let fields: Vec<_> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "bytecode.programs[0]",
                "bytecode.programs[1]",
                "bytecode.programs[2].tpBtf",
                "bytecode.programs[3].uprobe.target",
                "bytecode.programs[3].uprobe",
                "bytecode.programs[4].kretprobe.function",
                "bytecode.programs[4].kretprobe.offset",
                "bytecode.programs[5].lsm",
                "bytecode.programs[6].xdp.interface",
                "bytecode.programs[7].tc.priority",
                "bytecode.programs[8].cgroupSkb.cgroupPath",
                "bytecode.programs[9].perfEvent",
                "bytecode.programs[9].perfEvent",
                "bytecode.programs[10].perfEvent.period",
            ],
            "{got:#?}"
        );
        assert!(got[1].1.contains("tpBtf and xdp"), "{}", got[1].1);
        assert!(got[0].1.contains("perfEvent"), "{}", got[0].1);
    }

    #[test]
    fn interfaces_and_cgroups_may_be_glob_patterns_checked_like_names() {
        assert!(
            errors(
                r#"
    - {name: a, xdp: {interface: "veth*"}}
    - {name: b, tc: {interface: "eth[01]", direction: egress}}
    - {name: c, tcx: {interface: "a-long-pattern-of-lxc-interfaces-*", direction: ingress}}
    - {name: d, cgroupSkb: {cgroupPath: "/sys/fs/cgroup/kubepods.slice/*/*", direction: egress}}
    - {name: e, cgroupSock: {cgroupPath: "/sys/fs/cgroup/k?"}}
"#
            )
            .is_empty()
        );
        let got = errors(
            r#"
    - {name: a, xdp: {interface: "veth[*"}}
    - {name: b, tcx: {interface: "ve/th*", direction: ingress}}
    - {name: c, cgroupSkb: {cgroupPath: "/sys/fs/cgroup/[", direction: egress}}
    - {name: d, cgroupSockAddr: {cgroupPath: "kubepods/*"}}
"#,
        );
        let fields: Vec<_> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "bytecode.programs[0].xdp.interface",
                "bytecode.programs[1].tcx.interface",
                "bytecode.programs[2].cgroupSkb.cgroupPath",
                "bytecode.programs[3].cgroupSockAddr.cgroupPath",
            ],
            "{got:#?}"
        );
        assert!(
            got[0].1.contains("not a valid glob pattern"),
            "{}",
            got[0].1
        );
        assert!(got[1].1.contains("interface pattern"), "{}", got[1].1);
        assert!(
            got[2].1.contains("not a valid glob pattern"),
            "{}",
            got[2].1
        );
    }

    #[test]
    fn a_pattern_names_its_target_and_is_replaced_by_each_match() {
        let text = "name: p\ncomponent: p.wasm\nbytecode:\n  path: p.o\n  programs:\n    - {name: a, tc: {interface: \"veth*\", direction: egress, priority: 3}}\n    - {name: b, cgroupSock: {cgroupPath: /sys/fs/cgroup/x}}\n";
        let spec = PluginSpec::from_yaml(text).unwrap();
        let [a, b] = &spec.bytecode.as_ref().unwrap().programs[..] else {
            panic!("two programs")
        };
        assert_eq!(a.attach_point().unwrap().pattern(), Some("veth*"));
        assert_eq!(b.attach_point().unwrap().pattern(), None);
        let one = a.with_target("veth1");
        let tc = one.tc.as_ref().unwrap();
        assert_eq!((tc.interface.as_str(), tc.priority), ("veth1", Some(3)));
        assert_eq!(one.attach_point().unwrap().pattern(), None);
        let c = b.with_target("/sys/fs/cgroup/y");
        assert_eq!(
            c.cgroup_sock.unwrap().cgroup_path.as_deref(),
            Some("/sys/fs/cgroup/y")
        );
        assert!(super::is_pattern("kubepods.slice/*") && !super::is_pattern("eth0"));
    }

    #[test]
    fn unknown_enum_values_are_refused_at_parse_time() {
        let text = "name: p\ncomponent: p.wasm\nbytecode:\n  path: p.o\n  programs:\n    - {name: a, xdp: {interface: eth0, mode: turbo}}\n";
        let err = PluginSpec::from_yaml(text).unwrap_err().to_string();
        assert!(err.contains("bytecode.programs[0].xdp.mode"), "{err}");
        assert!(err.contains("turbo"), "{err}");
    }
}
