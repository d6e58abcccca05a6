//! What this kernel can attach to, probed once per process, so that a spec
//! needing a missing feature is refused with the feature named instead of
//! a bare errno from deep inside a syscall.
//!
//! Each probe looks for the kernel interface the attach kind uses (a PMU
//! under `/sys/bus/event_source/devices`, the active LSM list, BTF) or,
//! where only trying tells (BPF trampolines), loads and attaches a minimal
//! program to the kernel's own test function `bpf_fentry_test1`.

use std::sync::OnceLock;

use conductor_api::AttachPoint;

/// A kernel feature an attach kind needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    /// Kernel BTF at `/sys/kernel/btf/vmlinux` (tpBtf, fentry/fexit, lsm).
    Btf,
    /// The kprobe PMU (CONFIG_KPROBES) for kprobe/kretprobe.
    Kprobes,
    /// The uprobe PMU (CONFIG_UPROBES) for uprobe/uretprobe.
    Uprobes,
    /// BPF trampolines for fentry/fexit.
    Trampolines,
    /// `bpf` in the active LSM list (CONFIG_BPF_LSM and `lsm=...,bpf`).
    BpfLsm,
    /// TCX links (Linux 6.6).
    Tcx,
    /// A cgroup v2 hierarchy to attach cgroup programs to.
    Cgroup2,
}

impl Feature {
    pub const ALL: [Feature; 7] = [
        Feature::Btf,
        Feature::Kprobes,
        Feature::Uprobes,
        Feature::Trampolines,
        Feature::BpfLsm,
        Feature::Tcx,
        Feature::Cgroup2,
    ];

    /// A short name for reports, e.g. `kprobes`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Btf => "btf",
            Self::Kprobes => "kprobes",
            Self::Uprobes => "uprobes",
            Self::Trampolines => "bpf-trampolines",
            Self::BpfLsm => "bpf-lsm",
            Self::Tcx => "tcx",
            Self::Cgroup2 => "cgroup2",
        }
    }

    /// Whether this kernel has the feature: `Err` says what is missing and why.
    pub fn probe(self) -> Result<(), String> {
        static CACHE: OnceLock<Vec<(Feature, Result<(), String>)>> = OnceLock::new();
        let all = CACHE.get_or_init(|| Self::ALL.iter().map(|f| (*f, f.probe_now())).collect());
        all.iter()
            .find(|(f, _)| *f == self)
            .map(|(_, r)| r.clone())
            .unwrap_or(Ok(()))
    }

    fn probe_now(self) -> Result<(), String> {
        match self {
            Self::Btf => exists(
                "/sys/kernel/btf/vmlinux",
                "kernel BTF (CONFIG_DEBUG_INFO_BTF) is not available: /sys/kernel/btf/vmlinux is missing",
            ),
            Self::Kprobes => exists(
                "/sys/bus/event_source/devices/kprobe",
                "kprobes are not available in this kernel (CONFIG_KPROBES is off: /sys/bus/event_source/devices/kprobe is missing)",
            ),
            Self::Uprobes => exists(
                "/sys/bus/event_source/devices/uprobe",
                "uprobes are not available in this kernel (CONFIG_UPROBES is off: /sys/bus/event_source/devices/uprobe is missing)",
            ),
            Self::Trampolines => probe_trampolines(),
            Self::BpfLsm => probe_bpf_lsm(),
            Self::Tcx => match aya::util::KernelVersion::current() {
                Ok(v) if v >= aya::util::KernelVersion::new(6, 6, 0) => Ok(()),
                Ok(v) => Err(format!(
                    "TCX links need Linux 6.6 or later; this kernel is {v:?} (use tc instead)"
                )),
                Err(e) => Err(format!("cannot tell the kernel version for TCX: {e}")),
            },
            Self::Cgroup2 => cgroup2_root().map(|_| ()),
        }
    }
}

/// The features attach point `point` needs beyond loading BPF programs,
/// in the order they are checked.
pub fn required(point: &AttachPoint<'_>) -> Vec<Feature> {
    match point {
        AttachPoint::TpBtf { .. } => vec![Feature::Btf],
        AttachPoint::Kprobe { .. } => vec![Feature::Kprobes],
        AttachPoint::Uprobe { .. } => vec![Feature::Uprobes],
        AttachPoint::Fentry { .. } | AttachPoint::Fexit { .. } => {
            vec![Feature::Btf, Feature::Trampolines]
        }
        // LSM programs run through the same BPF trampolines as fentry.
        AttachPoint::Lsm { .. } => vec![Feature::Btf, Feature::BpfLsm, Feature::Trampolines],
        AttachPoint::Tcx(_) => vec![Feature::Tcx],
        AttachPoint::CgroupSkb(c) if c.cgroup_path.is_none() => vec![Feature::Cgroup2],
        AttachPoint::CgroupSock(c)
        | AttachPoint::CgroupSockAddr(c)
        | AttachPoint::CgroupSockopt(c)
            if c.cgroup_path.is_none() =>
        {
            vec![Feature::Cgroup2]
        }
        _ => Vec::new(),
    }
}

/// Every feature with its probe result, for status reports.
pub fn report() -> Vec<(Feature, Result<(), String>)> {
    Feature::ALL.iter().map(|f| (*f, f.probe())).collect()
}

/// The root of the cgroup v2 hierarchy: `/sys/fs/cgroup` on unified
/// systems, `/sys/fs/cgroup/unified` on hybrid ones; read from the mount table.
pub fn cgroup2_root() -> Result<String, String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .map_err(|e| format!("cannot read /proc/self/mounts to find the cgroup v2 root: {e}"))?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| dir.to_owned())
        })
        // The shortest mount point is the host's root, not a container's.
        .min_by_key(String::len)
        .ok_or_else(|| {
            "no cgroup v2 hierarchy is mounted (cgroup programs need one): mount cgroup2 or set cgroupPath"
                .to_owned()
        })
}

fn exists(path: &str, missing: &str) -> Result<(), String> {
    if std::path::Path::new(path).exists() {
        Ok(())
    } else {
        Err(missing.to_owned())
    }
}

const LSM_LIST: &str = "/sys/kernel/security/lsm";

fn probe_bpf_lsm() -> Result<(), String> {
    let list = std::fs::read_to_string(LSM_LIST).map_err(|e| {
        format!(
            "cannot read the active LSM list {LSM_LIST} ({e}); securityfs must be mounted at /sys/kernel/security (the host mounts it when run as root)"
        )
    })?;
    let list = list.trim();
    if list.split(',').any(|l| l == "bpf") {
        Ok(())
    } else {
        Err(format!(
            "the BPF LSM is not active: the kernel's LSM list is {list:?} (needs CONFIG_BPF_LSM and `bpf` in the lsm= boot parameter)"
        ))
    }
}

/// Load a two-instruction fentry program on `bpf_fentry_test1` and attach
/// it. aya has no public call for a program without an object, hence the
/// raw `bpf(2)`; both descriptors are closed on return, which detaches it.
fn probe_trampolines() -> Result<(), String> {
    use std::os::fd::{FromRawFd, OwnedFd};

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    const BPF_TRACE_FENTRY: u32 = 24;
    const TARGET: &str = "bpf_fentry_test1";

    let btf = aya::Btf::from_sys_fs()
        .map_err(|e| format!("BPF trampolines (fentry/fexit) need kernel BTF: {e}"))?;
    let btf_id = btf
        .id_by_type_name_kind(TARGET, aya_obj::btf::BtfKind::Func)
        .map_err(|e| {
            format!("cannot probe BPF trampolines: {TARGET} is not in the kernel's BTF ({e})")
        })?;
    // r0 = 0; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    // union bpf_attr for BPF_PROG_LOAD, by offset (include/uapi/linux/bpf.h).
    let mut attr = [0u8; 144];
    let put32 =
        |a: &mut [u8; 144], off: usize, v: u32| a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    let put64 =
        |a: &mut [u8; 144], off: usize, v: u64| a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    put32(&mut attr, 0, BPF_PROG_TYPE_TRACING);
    put32(&mut attr, 4, insns.len() as u32);
    put64(&mut attr, 8, insns.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    put32(&mut attr, 24, 1); // log_level
    put32(&mut attr, 28, log.len() as u32);
    put64(&mut attr, 32, log.as_mut_ptr() as u64);
    attr[48..48 + 14].copy_from_slice(b"conductor_prob");
    put32(&mut attr, 68, BPF_TRACE_FENTRY);
    put32(&mut attr, 108, btf_id);
    // SAFETY: attr is a valid bpf_attr for BPF_PROG_LOAD whose pointers
    // (insns, license, log) outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_ptr(),
            attr.len() as u32,
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let log = String::from_utf8_lossy(&log);
        let log = log.trim_end_matches('\0').trim();
        return Err(trampoline_error("loading", &err, log));
    }
    // SAFETY: the kernel returned a new descriptor we own.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut attr = [0u8; 144];
    put64(&mut attr, 0, 0); // name: NULL, the program's BTF target
    put32(&mut attr, 8, std::os::fd::AsRawFd::as_raw_fd(&prog) as u32);
    // SAFETY: a valid bpf_attr for BPF_RAW_TRACEPOINT_OPEN.
    let link = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_RAW_TRACEPOINT_OPEN,
            attr.as_ptr(),
            attr.len() as u32,
        )
    };
    if link < 0 {
        let err = std::io::Error::last_os_error();
        return Err(trampoline_error("attaching", &err, ""));
    }
    // SAFETY: as above; dropping it detaches the probe.
    drop(unsafe { OwnedFd::from_raw_fd(link as i32) });
    Ok(())
}

fn trampoline_error(step: &str, err: &std::io::Error, log: &str) -> String {
    // The errno by name, not as a bare "os error N".
    let errno = match err.raw_os_error() {
        Some(libc::EPERM) => "EPERM".to_owned(),
        Some(libc::EINVAL) => "EINVAL".to_owned(),
        Some(libc::ENOENT) => "ENOENT".to_owned(),
        Some(524) => "ENOTSUPP".to_owned(),
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP".to_owned(),
        Some(n) => format!("errno {n}"),
        None => err.to_string(),
    };
    let why = match err.raw_os_error() {
        Some(libc::EPERM) => {
            "the kernel does not permit BPF trampolines here (EPERM even as root: typically a kernel without ftrace direct-call trampolines for BPF, a locked-down kernel, or a hypervisor that forbids text patching)"
        }
        // ENOTSUPP (524) is kernel-internal but reaches user space from BPF.
        Some(524 | libc::EOPNOTSUPP) => "this kernel was built without BPF trampoline support",
        _ => "the kernel refused it",
    };
    let log = if log.is_empty() {
        String::new()
    } else {
        format!("; verifier: {log}")
    };
    format!(
        "BPF trampolines (used by fentry, fexit and lsm programs) are not available on this kernel: {step} a minimal fentry program on bpf_fentry_test1 failed with {errno}; {why}{log}"
    )
}

/// One probed kernel capability: a program type, a map type or a helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    /// What was probed, e.g. `tracepoint`, `ringbuf`, `get_current_cgroup_id (tracepoint)`.
    pub name: String,
    /// `Ok(true)`: supported; `Ok(false)`: the kernel refused it; `Err`: the
    /// probe itself failed (e.g. no CAP_BPF), so nothing is known.
    pub supported: Result<bool, String>,
}

/// What this kernel supports, for `conductor features` and the daemon's
/// node status.
#[derive(Debug, Clone)]
pub struct KernelReport {
    /// `uname -r`.
    pub release: String,
    /// The attach features the host checks before attaching.
    pub features: Vec<(Feature, Result<(), String>)>,
    /// The program type behind each attach kind of the spec.
    pub program_types: Vec<Capability>,
    /// The map types the maps and events interfaces read.
    pub map_types: Vec<Capability>,
    /// Helpers the catalog's programs call, per program type.
    pub helpers: Vec<Capability>,
}

/// Probe everything [`KernelReport`] lists. Program and map probes load
/// tiny programs and create tiny maps, so they need CAP_BPF (root); without
/// it each says why in its `Err`.
pub fn kernel_report() -> KernelReport {
    use aya::maps::MapType as M;
    use aya::programs::{LsmAttachType, ProgramType as P};
    use aya::sys::{BpfHelper as H, is_helper_supported, is_map_supported, is_program_supported};

    let program_types = [
        ("tracepoint", P::TracePoint),
        ("raw_tracepoint", P::RawTracePoint),
        ("tracing (tpBtf, fentry, fexit)", P::Tracing),
        ("kprobe (kprobe, uprobe, usdt)", P::KProbe),
        ("lsm", P::Lsm(LsmAttachType::Mac)),
        ("xdp", P::Xdp),
        ("sched_cls (tc, tcx)", P::SchedClassifier),
        ("cgroup_skb", P::CgroupSkb),
        ("cgroup_sock", P::CgroupSock),
        ("cgroup_sock_addr", P::CgroupSockAddr),
        ("cgroup_sockopt", P::CgroupSockopt),
        ("perf_event", P::PerfEvent),
    ]
    .into_iter()
    .map(|(name, t)| Capability {
        name: name.to_owned(),
        supported: is_program_supported(t).map_err(|e| chain(&e)),
    })
    .collect();
    let map_types = [
        ("hash", M::Hash),
        ("array", M::Array),
        ("percpu_hash", M::PerCpuHash),
        ("percpu_array", M::PerCpuArray),
        ("lru_hash", M::LruHash),
        ("lpm_trie", M::LpmTrie),
        ("stack_trace", M::StackTrace),
        ("perf_event_array", M::PerfEventArray),
        ("ringbuf", M::RingBuf),
    ]
    .into_iter()
    .map(|(name, t)| Capability {
        name: name.to_owned(),
        supported: is_map_supported(t).map_err(|e| chain(&e)),
    })
    .collect();
    let helpers = [
        ("ringbuf_output", P::TracePoint, H::BPF_FUNC_ringbuf_output),
        (
            "ringbuf_reserve",
            P::TracePoint,
            H::BPF_FUNC_ringbuf_reserve,
        ),
        (
            "perf_event_output",
            P::TracePoint,
            H::BPF_FUNC_perf_event_output,
        ),
        (
            "get_current_cgroup_id",
            P::TracePoint,
            H::BPF_FUNC_get_current_cgroup_id,
        ),
        (
            "probe_read_kernel",
            P::TracePoint,
            H::BPF_FUNC_probe_read_kernel,
        ),
        (
            "get_current_task_btf",
            P::TracePoint,
            H::BPF_FUNC_get_current_task_btf,
        ),
        ("skb_load_bytes", P::CgroupSkb, H::BPF_FUNC_skb_load_bytes),
        (
            "skb_cgroup_id",
            P::SchedClassifier,
            H::BPF_FUNC_skb_cgroup_id,
        ),
        ("sk_cgroup_id", P::CgroupSkb, H::BPF_FUNC_sk_cgroup_id),
    ]
    .into_iter()
    .map(|(name, t, h)| Capability {
        name: format!("{name} ({})", program_type_name(t)),
        supported: is_helper_supported(t, h).map_err(|e| chain(&e)),
    })
    .collect();
    KernelReport {
        release: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_else(|e| format!("unknown ({e})")),
        features: report(),
        program_types,
        map_types,
        helpers,
    }
}

/// An error with its sources: aya's say `bpf_prog_load failed` and keep
/// the errno in the source.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

fn program_type_name(t: aya::programs::ProgramType) -> &'static str {
    use aya::programs::ProgramType as P;
    match t {
        P::TracePoint => "tracepoint",
        P::CgroupSkb => "cgroup_skb",
        P::SchedClassifier => "sched_cls",
        _ => "other",
    }
}
