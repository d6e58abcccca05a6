//! The kernel side of a plugin: load its BPF object with aya, verify and
//! attach the programs its spec lists, and hand out its maps.
//!
//! Loading is all-or-nothing: every program is loaded (verified) before any
//! is attached, and on any error the partly loaded [`aya::Ebpf`] is dropped,
//! which closes its descriptors and so detaches and unloads everything.
//! Nothing is pinned, so nothing outlives the host process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData};
use aya::programs::tc::{self, TcAttachOptions};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeScope};
use aya::programs::{
    BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
    CgroupSockopt, FEntry, FExit, KProbe, LinkOrder, Lsm, PerfEvent, ProbeKind, ProgramError,
    RawTracePoint, SchedClassifier, TcAttachType, TracePoint, UProbe, Xdp,
};
use aya::{Btf, Ebpf, EbpfLoader};

use crate::features::{self, Feature};
use crate::maps::KernelMap;
use crate::patterns::{Change, LinkId, Matcher, Patterns, Target};
use conductor_api::files;
use conductor_api::{
    AttachPoint, Direction, GlobalValue, HardwareEvent, ProgramAttach, SoftwareEvent, XdpMode,
};

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("cannot read BPF object {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load BPF object {path}: {cause}")]
    Object { path: PathBuf, cause: String },
    #[error("program {program:?} is not in BPF object {path}; it has: {available}")]
    NoSuchProgram {
        path: PathBuf,
        program: String,
        available: String,
    },
    #[error("program {program:?} in {path} cannot attach to a {wanted}: it is a {actual} program")]
    WrongProgramType {
        path: PathBuf,
        program: String,
        wanted: &'static str,
        actual: String,
    },
    #[error(
        "the kernel verifier rejected program {program:?} of {path}: {cause}\nverifier log (last lines):\n{log}"
    )]
    Verifier {
        path: PathBuf,
        program: String,
        cause: String,
        log: String,
    },
    #[error("cannot load program {program:?} of {path}: {cause}")]
    Load {
        path: PathBuf,
        program: String,
        cause: String,
    },
    #[error("cannot attach program {program:?} to {target}: {cause}{hint}")]
    Attach {
        program: String,
        target: String,
        cause: String,
        hint: &'static str,
    },
    #[error(
        "cannot attach program {program:?} as {kind}: {cause} [missing kernel feature: {feature}]"
    )]
    MissingFeature {
        program: String,
        kind: &'static str,
        feature: &'static str,
        cause: String,
    },
    #[error("map {map:?} is not in BPF object {path}; it has: {available}")]
    NoSuchMap {
        path: PathBuf,
        map: String,
        available: String,
    },
    #[error("cannot open map {map:?}: {cause}")]
    Map { map: String, cause: String },
    #[error("cannot open pinned map {map:?} at {pin}: {cause}")]
    Pin {
        map: String,
        pin: String,
        cause: String,
    },
}

/// A loaded object with its programs attached. Dropping it detaches them.
pub struct LoadedObject {
    path: PathBuf,
    ebpf: Ebpf,
    /// Pins of the maps the plugin exposes; removed with the object.
    exposed: Vec<crate::shared::Exposed>,
    /// Programs attached to interfaces or cgroups named by pattern.
    patterns: Patterns,
}

impl Drop for LoadedObject {
    fn drop(&mut self) {
        self.patterns.detach_all(&mut self.ebpf);
    }
}

impl std::fmt::Debug for LoadedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedObject")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Load `path`, verify every listed program, then attach them all. With no
/// programs listed, those whose section names say where to attach are
/// (see [`crate::sections`]).
pub fn load(path: &Path, programs: &[ProgramAttach]) -> Result<LoadedObject, BpfError> {
    load_with_globals(path, programs, &BTreeMap::new())
}

/// [`load`], with the object's global variables set from `globals` (the
/// spec's `bytecode.globalData`) before anything is verified.
pub fn load_with_globals(
    path: &Path,
    programs: &[ProgramAttach],
    globals: &BTreeMap<String, u64>,
) -> Result<LoadedObject, BpfError> {
    let typed = globals
        .iter()
        .map(|(k, v)| (k.clone(), GlobalValue::Unsigned(*v)))
        .collect();
    load_capped(path, programs, &typed, files::DEFAULT_MAX_BYTECODE_BYTES)
}

/// The BPF object file at `path` (at most `max_bytes`, an ELF header).
fn read_object(path: &Path, max_bytes: u64) -> Result<Vec<u8>, BpfError> {
    files::read_checked(path, max_bytes, "--max-bytecode-bytes", 4, |h| {
        h == b"\x7fELF"
    })
    .map_err(|e| match e {
        files::FileError::Io(source) => BpfError::Read {
            path: path.to_owned(),
            source,
        },
        files::FileError::BadHeader => BpfError::Object {
            path: path.to_owned(),
            cause: "it is not an ELF file (no ELF header)".to_owned(),
        },
        other => BpfError::Read {
            path: path.to_owned(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}

/// Checks the component's event-record layouts against the structs of the
/// same names in the BTF of the object at `path`, before anything is
/// loaded (see [`crate::layout`]). A mismatch is an error naming both
/// layouts; a record without a BTF struct is [`Checked::NoBtf`] for the
/// caller to warn about.
///
/// [`Checked::NoBtf`]: crate::layout::Checked::NoBtf
pub fn check_records(
    path: &Path,
    records: &[crate::layout::RecordLayout],
    max_bytes: u64,
) -> Result<Vec<crate::layout::Checked>, BpfError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = read_object(path, max_bytes)?;
    let cause = |e: crate::layout::LayoutError| BpfError::Object {
        path: path.to_owned(),
        cause: e.to_string(),
    };
    let btf = crate::layout::Btf::parse_object(&bytes).map_err(cause)?;
    crate::layout::check(records, btf.as_ref()).map_err(cause)
}

/// [`load_with_globals`] of an object file of at most `max_bytes` (a regular
/// file with an ELF header, checked before the rest is read).
pub fn load_capped(
    path: &Path,
    programs: &[ProgramAttach],
    globals: &BTreeMap<String, GlobalValue>,
    max_bytes: u64,
) -> Result<LoadedObject, BpfError> {
    let bytes = read_object(path, max_bytes)?;
    let values = global_values(path, &bytes, globals)?;
    let mut loader = EbpfLoader::new();
    for (name, value) in &values {
        loader.override_global(name, value.as_slice(), true);
    }
    // Maps the object declares but the spec does not use are still created:
    // programs may reference them. BTF from /sys/kernel/btf/vmlinux drives
    // CO-RE relocations (aya's default).
    let for_aya = crate::sections::for_aya(&bytes).map_err(|cause| BpfError::Object {
        path: path.to_owned(),
        cause,
    })?;
    let mut ebpf = loader.load(&for_aya).map_err(|e| BpfError::Object {
        path: path.to_owned(),
        cause: error_chain(&e),
    })?;

    // No programs listed: attach what the section names say, like libbpf.
    let auto;
    let programs = if programs.is_empty() {
        auto = auto_attach(path, &bytes)?;
        auto.as_slice()
    } else {
        programs
    };
    let mut btf = None;
    for p in programs {
        load_program(&mut ebpf, path, p, &mut btf)?;
    }
    let mut patterns = Patterns::default();
    for p in programs {
        // A pattern: attached below to what matches now, then followed.
        if let Some(matcher) = p.attach_point().as_ref().and_then(Matcher::of) {
            let matcher = matcher.map_err(|cause| BpfError::Object {
                path: path.to_owned(),
                cause: format!("program {:?}: {cause}", p.name),
            })?;
            if let Some(point) = p.attach_point() {
                for f in features::required(&point) {
                    missing(f, p, &point)?;
                }
            }
            patterns.add(p, matcher);
            continue;
        }
        attach_program(&mut ebpf, p)?;
    }
    let mut object = LoadedObject {
        path: path.to_owned(),
        ebpf,
        exposed: Vec::new(),
        patterns,
    };
    for change in object.rescan() {
        change.log(&path.display().to_string());
    }
    Ok(object)
}

impl LoadedObject {
    /// Take map `name` out of the object (each map can be taken once).
    pub fn take_map(&mut self, name: &str) -> Result<Map, BpfError> {
        let available = self.map_names();
        self.ebpf.take_map(name).ok_or_else(|| BpfError::NoSuchMap {
            path: self.path.clone(),
            map: name.to_owned(),
            available,
        })
    }

    /// Take map `name` if the object has it.
    pub fn take_map_if_present(&mut self, name: &str) -> Option<Map> {
        self.ebpf.take_map(name)
    }

    /// Take map `name` out of the object, opened for use.
    pub fn open_map(&mut self, name: &str) -> Result<KernelMap, BpfError> {
        let map = self.take_map(name)?;
        KernelMap::new(name, into_map_data(map)).map_err(|e| BpfError::Map {
            map: name.to_owned(),
            cause: e.to_string(),
        })
    }

    /// [`Self::open_map`] for a map the object may not have.
    pub fn open_map_if_present(&mut self, name: &str) -> Result<Option<KernelMap>, BpfError> {
        self.take_map_if_present(name)
            .map(|m| {
                KernelMap::new(name, into_map_data(m)).map_err(|e| BpfError::Map {
                    map: name.to_owned(),
                    cause: e.to_string(),
                })
            })
            .transpose()
    }

    /// Attach the programs whose interface or cgroup is a pattern to the
    /// matches that appeared since the last call, and detach them from the
    /// matches that went away (see [`crate::patterns`]). Cheap when the
    /// object has no pattern. Interfaces are those of the calling thread's
    /// network namespace.
    pub fn rescan(&mut self) -> Vec<Change> {
        if self.patterns.is_empty() {
            return Vec::new();
        }
        self.patterns.rescan(&mut self.ebpf, |ebpf, one| {
            attach_program(ebpf, one).map_err(|e| e.to_string())
        })
    }

    /// The kernel's id of loaded program `name`, if the object has it.
    pub fn program_id(&self, name: &str) -> Option<u32> {
        self.ebpf.program(name)?.info().ok().map(|i| i.id())
    }

    /// The interfaces or cgroups each pattern program is attached to now.
    pub fn pattern_targets(&self) -> BTreeMap<String, Vec<Target>> {
        self.patterns.attached()
    }

    /// Keep an exposed map's pin for as long as the object is loaded.
    pub fn keep_exposed(&mut self, pin: crate::shared::Exposed) {
        self.exposed.push(pin);
    }

    fn map_names(&self) -> String {
        let names: Vec<_> = self.ebpf.maps().map(|(n, _)| n.to_owned()).collect();
        if names.is_empty() {
            "no maps".into()
        } else {
            names.join(", ")
        }
    }
}

fn program_names(ebpf: &Ebpf) -> String {
    let names: Vec<_> = ebpf.programs().map(|(n, _)| n.to_owned()).collect();
    if names.is_empty() {
        "no programs".into()
    } else {
        names.join(", ")
    }
}

fn load_program(
    ebpf: &mut Ebpf,
    path: &Path,
    p: &ProgramAttach,
    btf: &mut Option<Btf>,
) -> Result<(), BpfError> {
    let available = program_names(ebpf);
    // `PluginSpec::validate` guarantees exactly one attach point.
    let Some(point) = p.attach_point() else {
        return Err(BpfError::WrongProgramType {
            path: path.to_owned(),
            program: p.name.clone(),
            wanted: "(no attach point)",
            actual: "-".into(),
        });
    };
    // Trampolines fail at load with a bare EPERM/ENOTSUPP: refuse first,
    // naming the feature. Other features are checked before attaching, so
    // the program is still verified.
    for f in features::required(&point) {
        if matches!(f, Feature::Trampolines | Feature::Btf) {
            missing(f, p, &point)?;
        }
    }
    let program = ebpf
        .program_mut(&p.name)
        .ok_or_else(|| BpfError::NoSuchProgram {
            path: path.to_owned(),
            program: p.name.clone(),
            available,
        })?;
    let actual = format!("{:?}", program.prog_type());
    let wrong = |wanted| BpfError::WrongProgramType {
        path: path.to_owned(),
        program: p.name.clone(),
        wanted,
        actual: actual.clone(),
    };
    let kernel_btf = |btf: &mut Option<Btf>| -> Result<Btf, BpfError> {
        if let Some(b) = btf {
            return Ok(b.clone());
        }
        let b = Btf::from_sys_fs().map_err(|e| BpfError::MissingFeature {
            program: p.name.clone(),
            kind: point.kind(),
            feature: Feature::Btf.name(),
            cause: format!("cannot read the kernel's BTF: {e}"),
        })?;
        *btf = Some(b.clone());
        Ok(b)
    };
    let result = match point {
        AttachPoint::Tracepoint { .. } => {
            let tp: &mut TracePoint = program.try_into().map_err(|_| wrong("tracepoint"))?;
            tp.load()
        }
        AttachPoint::RawTracepoint { .. } => {
            let tp: &mut RawTracePoint = program.try_into().map_err(|_| wrong("raw tracepoint"))?;
            tp.load()
        }
        AttachPoint::TpBtf { name } => {
            let tp: &mut BtfTracePoint = program
                .try_into()
                .map_err(|_| wrong("BTF tracepoint (tp_btf)"))?;
            tp.load(name, &kernel_btf(btf)?)
        }
        AttachPoint::Uprobe { ret, .. } => {
            let wanted = if ret { "uretprobe" } else { "uprobe" };
            let u: &mut UProbe = program.try_into().map_err(|_| wrong(wanted))?;
            if matches!(u.kind(), ProbeKind::Return) != ret {
                return Err(wrong(wanted));
            }
            u.load()
        }
        AttachPoint::Kprobe { ret, .. } => {
            let wanted = if ret { "kretprobe" } else { "kprobe" };
            let k: &mut KProbe = program.try_into().map_err(|_| wrong(wanted))?;
            if matches!(k.kind(), ProbeKind::Return) != ret {
                return Err(wrong(wanted));
            }
            k.load()
        }
        AttachPoint::Fentry { function } => {
            let f: &mut FEntry = program.try_into().map_err(|_| wrong("fentry"))?;
            f.load(function, &kernel_btf(btf)?)
        }
        AttachPoint::Fexit { function } => {
            let f: &mut FExit = program.try_into().map_err(|_| wrong("fexit"))?;
            f.load(function, &kernel_btf(btf)?)
        }
        AttachPoint::Lsm { hook } => {
            let l: &mut Lsm = program.try_into().map_err(|_| wrong("LSM hook"))?;
            l.load(hook, &kernel_btf(btf)?)
        }
        AttachPoint::Xdp(_) => {
            let x: &mut Xdp = program.try_into().map_err(|_| wrong("XDP"))?;
            x.load()
        }
        AttachPoint::Tc(_) | AttachPoint::Tcx(_) => {
            let c: &mut SchedClassifier = program
                .try_into()
                .map_err(|_| wrong("TC classifier (SEC(\"classifier\"))"))?;
            c.load()
        }
        AttachPoint::CgroupSkb(c) => {
            let g: &mut CgroupSkb = program.try_into().map_err(|_| wrong("cgroup skb"))?;
            let same = |a: &CgroupSkbAttachType| {
                matches!(
                    (a, c.direction),
                    (CgroupSkbAttachType::Ingress, Direction::Ingress)
                        | (CgroupSkbAttachType::Egress, Direction::Egress)
                )
            };
            if let Some(have) = g.expected_attach_type()
                && !same(have)
            {
                return Err(BpfError::WrongProgramType {
                    path: path.to_owned(),
                    program: p.name.clone(),
                    wanted: "cgroup skb in the spec's direction",
                    actual: format!("cgroup skb for {have:?} (from its section name)"),
                });
            }
            g.load()
        }
        AttachPoint::CgroupSock(_) => {
            let g: &mut CgroupSock = program.try_into().map_err(|_| wrong("cgroup sock"))?;
            g.load()
        }
        AttachPoint::CgroupSockAddr(_) => {
            let g: &mut CgroupSockAddr =
                program.try_into().map_err(|_| wrong("cgroup sock_addr"))?;
            g.load()
        }
        AttachPoint::CgroupSockopt(_) => {
            let g: &mut CgroupSockopt = program.try_into().map_err(|_| wrong("cgroup sockopt"))?;
            g.load()
        }
        AttachPoint::PerfEvent(_) => {
            let e: &mut PerfEvent = program.try_into().map_err(|_| wrong("perf event"))?;
            e.load()
        }
    };
    result.map_err(|e| match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => BpfError::Verifier {
            path: path.to_owned(),
            program: p.name.clone(),
            cause: io_error.to_string(),
            log: tail(&verifier_log.to_string(), 25),
        },
        ProgramError::Btf(e) => BpfError::Load {
            path: path.to_owned(),
            program: p.name.clone(),
            cause: format!(
                "{} {:?} is not in the kernel's BTF ({e}); check the name against /sys/kernel/btf/vmlinux",
                point.kind(),
                target_name(&point)
            ),
        },
        other => BpfError::Load {
            path: path.to_owned(),
            program: p.name.clone(),
            cause: error_chain(&other),
        },
    })
}

/// The name an attach point targets, for messages.
fn target_name(point: &AttachPoint<'_>) -> String {
    match point {
        AttachPoint::Tracepoint { category, name } => format!("{category}/{name}"),
        AttachPoint::RawTracepoint { name } | AttachPoint::TpBtf { name } => (*name).to_owned(),
        AttachPoint::Uprobe { probe, .. } => match (&probe.symbol, probe.offset) {
            (Some(s), Some(o)) => format!("{}:{s}+{o:#x}", probe.target),
            (Some(s), None) => format!("{}:{s}", probe.target),
            (None, o) => format!("{}@{:#x}", probe.target, o.unwrap_or(0)),
        },
        AttachPoint::Kprobe { probe, .. } => probe.function.clone(),
        AttachPoint::Fentry { function } | AttachPoint::Fexit { function } => {
            (*function).to_owned()
        }
        AttachPoint::Lsm { hook } => (*hook).to_owned(),
        AttachPoint::Xdp(x) => x.interface.clone(),
        AttachPoint::Tc(t) => format!("{} {:?}", t.interface, t.direction).to_lowercase(),
        AttachPoint::Tcx(t) => format!("{} {:?}", t.interface, t.direction).to_lowercase(),
        AttachPoint::CgroupSkb(c) => c
            .cgroup_path
            .clone()
            .unwrap_or_else(|| "(cgroup v2 root)".into()),
        AttachPoint::CgroupSock(c)
        | AttachPoint::CgroupSockAddr(c)
        | AttachPoint::CgroupSockopt(c) => c
            .cgroup_path
            .clone()
            .unwrap_or_else(|| "(cgroup v2 root)".into()),
        AttachPoint::PerfEvent(e) => match (e.software, e.hardware) {
            (Some(s), _) => format!("software {s:?}"),
            (_, Some(h)) => format!("hardware {h:?}"),
            _ => String::new(),
        },
    }
}

fn missing(f: Feature, p: &ProgramAttach, point: &AttachPoint<'_>) -> Result<(), BpfError> {
    f.probe().map_err(|cause| BpfError::MissingFeature {
        program: p.name.clone(),
        kind: point.kind(),
        feature: f.name(),
        cause,
    })
}

fn skb_attach_type(d: Direction) -> CgroupSkbAttachType {
    match d {
        Direction::Ingress => CgroupSkbAttachType::Ingress,
        Direction::Egress => CgroupSkbAttachType::Egress,
    }
}

fn tc_attach_type(d: Direction) -> TcAttachType {
    match d {
        Direction::Ingress => TcAttachType::Ingress,
        Direction::Egress => TcAttachType::Egress,
    }
}

fn open_cgroup(path: Option<&str>) -> Result<(String, std::fs::File), String> {
    let path = match path {
        Some(p) => p.to_owned(),
        None => features::cgroup2_root()?,
    };
    let file = std::fs::File::open(&path)
        .map_err(|e| format!("cannot open cgroup directory {path}: {e}"))?;
    Ok((path, file))
}

/// Attach one program; for the kinds an interface or cgroup pattern can
/// name, the link's id (to detach it alone when its target goes).
fn attach_program(ebpf: &mut Ebpf, p: &ProgramAttach) -> Result<Option<LinkId>, BpfError> {
    let Some(point) = p.attach_point() else {
        return Ok(None);
    };
    let target = format!("{} {}", point.kind(), target_name(&point));
    let attach_err = |e: ProgramError| {
        let cause = error_chain(&e);
        let hint = if cause.contains("tracefs") {
            " (tracefs must be mounted at /sys/kernel/tracing; the host mounts it when run as root)"
        } else if cause.contains("No such file")
            && matches!(
                point,
                AttachPoint::Tracepoint { .. } | AttachPoint::RawTracepoint { .. }
            )
        {
            " (check the name under /sys/kernel/tracing/events)"
        } else if cause.contains("No such device") {
            " (no network interface of that name in the host's network namespace)"
        } else {
            ""
        };
        BpfError::Attach {
            program: p.name.clone(),
            target: target.clone(),
            cause,
            hint,
        }
    };
    let plain_err = |cause: String| BpfError::Attach {
        program: p.name.clone(),
        target: target.clone(),
        cause,
        hint: "",
    };
    for f in features::required(&point) {
        missing(f, p, &point)?;
    }
    // Present and of the right type: `load_program` checked both.
    let Some(program) = ebpf.program_mut(&p.name) else {
        return Ok(None);
    };
    let mut link = None;
    match point {
        AttachPoint::Tracepoint { category, name } => {
            if let Ok(tp) = <&mut TracePoint>::try_from(program) {
                tp.attach(category, name).map_err(attach_err)?;
            }
        }
        AttachPoint::RawTracepoint { name } => {
            if let Ok(tp) = <&mut RawTracePoint>::try_from(program) {
                tp.attach(name).map_err(attach_err)?;
            }
        }
        AttachPoint::TpBtf { .. } => {
            if let Ok(tp) = <&mut BtfTracePoint>::try_from(program) {
                tp.attach().map_err(attach_err)?;
            }
        }
        AttachPoint::Uprobe { probe, .. } => {
            if let Ok(u) = <&mut UProbe>::try_from(program) {
                let location = match (&probe.symbol, probe.offset) {
                    (Some(s), Some(o)) => UProbeAttachLocation::SymbolOffset(s, o),
                    (Some(s), None) => UProbeAttachLocation::Symbol(s),
                    (None, o) => UProbeAttachLocation::AbsoluteOffset(o.unwrap_or(0)),
                };
                let scope = match probe.pid.and_then(std::num::NonZeroU32::new) {
                    Some(pid) => UProbeScope::OneProcess(pid),
                    None => UProbeScope::AllProcesses,
                };
                let target = match scope {
                    // aya finds a bare name in the process's mappings.
                    UProbeScope::OneProcess(_) => PathBuf::from(&probe.target),
                    _ => library_path(&probe.target),
                };
                u.attach(location, &target, scope).map_err(attach_err)?;
            }
        }
        AttachPoint::Kprobe { probe, .. } => {
            if let Ok(k) = <&mut KProbe>::try_from(program) {
                k.attach(&probe.function, probe.offset.unwrap_or(0))
                    .map_err(attach_err)?;
            }
        }
        AttachPoint::Fentry { .. } => {
            if let Ok(f) = <&mut FEntry>::try_from(program) {
                f.attach().map_err(attach_err)?;
            }
        }
        AttachPoint::Fexit { .. } => {
            if let Ok(f) = <&mut FExit>::try_from(program) {
                f.attach().map_err(attach_err)?;
            }
        }
        AttachPoint::Lsm { .. } => {
            if let Ok(l) = <&mut Lsm>::try_from(program) {
                l.attach().map_err(attach_err)?;
            }
        }
        AttachPoint::Xdp(x) => {
            if let Ok(prog) = <&mut Xdp>::try_from(program) {
                let mode = match x.mode {
                    XdpMode::Default => aya::programs::XdpMode::Default,
                    XdpMode::Skb => aya::programs::XdpMode::Skb,
                    XdpMode::Driver => aya::programs::XdpMode::Driver,
                    XdpMode::Hardware => aya::programs::XdpMode::Hardware,
                };
                link = Some(LinkId::Xdp(
                    prog.attach(&x.interface, mode).map_err(attach_err)?,
                ));
            }
        }
        AttachPoint::Tc(t) => {
            if let Ok(c) = <&mut SchedClassifier>::try_from(program) {
                // An interface that already has clsact keeps it; any other
                // problem with the interface shows in the attach below.
                if let Err(e) = tc::qdisc_add_clsact(&t.interface) {
                    tracing::debug!("adding clsact to {}: {e}", t.interface);
                }
                let options = tc::NlOptions {
                    priority: t.priority.and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
                    ..Default::default()
                };
                let id = c
                    .attach_with_options(
                        &t.interface,
                        tc_attach_type(t.direction),
                        TcAttachOptions::Netlink(options),
                    )
                    .map_err(attach_err)?;
                link = Some(LinkId::Tc(id));
            }
        }
        AttachPoint::Tcx(t) => {
            if let Ok(c) = <&mut SchedClassifier>::try_from(program) {
                let id = c
                    .attach_with_options(
                        &t.interface,
                        tc_attach_type(t.direction),
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(attach_err)?;
                link = Some(LinkId::Tc(id));
            }
        }
        // Single: since Linux 5.7 aya attaches through a BPF link, which
        // always coexists with other programs and refuses attach flags.
        AttachPoint::CgroupSkb(c) => {
            if let Ok(g) = <&mut CgroupSkb>::try_from(program) {
                let (_, cgroup) = open_cgroup(c.cgroup_path.as_deref()).map_err(plain_err)?;
                let id = g
                    .attach(
                        &cgroup,
                        skb_attach_type(c.direction),
                        CgroupAttachMode::Single,
                    )
                    .map_err(attach_err)?;
                link = Some(LinkId::CgroupSkb(id));
            }
        }
        AttachPoint::CgroupSock(c) => {
            if let Ok(g) = <&mut CgroupSock>::try_from(program) {
                let (_, cgroup) = open_cgroup(c.cgroup_path.as_deref()).map_err(plain_err)?;
                let id = g
                    .attach(&cgroup, CgroupAttachMode::Single)
                    .map_err(attach_err)?;
                link = Some(LinkId::CgroupSock(id));
            }
        }
        AttachPoint::CgroupSockAddr(c) => {
            if let Ok(g) = <&mut CgroupSockAddr>::try_from(program) {
                let (_, cgroup) = open_cgroup(c.cgroup_path.as_deref()).map_err(plain_err)?;
                let id = g
                    .attach(&cgroup, CgroupAttachMode::Single)
                    .map_err(attach_err)?;
                link = Some(LinkId::CgroupSockAddr(id));
            }
        }
        AttachPoint::CgroupSockopt(c) => {
            if let Ok(g) = <&mut CgroupSockopt>::try_from(program) {
                let (_, cgroup) = open_cgroup(c.cgroup_path.as_deref()).map_err(plain_err)?;
                let id = g
                    .attach(&cgroup, CgroupAttachMode::Single)
                    .map_err(attach_err)?;
                link = Some(LinkId::CgroupSockopt(id));
            }
        }
        AttachPoint::PerfEvent(e) => {
            if let Ok(prog) = <&mut PerfEvent>::try_from(program) {
                use aya::programs::perf_event as pe;
                let config = match (e.software, e.hardware) {
                    (Some(s), _) => pe::PerfEventConfig::Software(software_event(s)),
                    (_, Some(h)) => pe::PerfEventConfig::Hardware(hardware_event(h)),
                    (None, None) => return Err(plain_err("no event set".into())),
                };
                let policy = match (e.frequency, e.period) {
                    (Some(f), _) => pe::SamplePolicy::Frequency(f),
                    (_, p) => pe::SamplePolicy::Period(p.unwrap_or(1)),
                };
                let scopes: Vec<pe::PerfEventScope> = match (e.pid, e.cpu) {
                    (Some(pid), cpu) => vec![pe::PerfEventScope::OneProcess { pid, cpu }],
                    (None, Some(cpu)) => vec![pe::PerfEventScope::AllProcessesOneCpu { cpu }],
                    (None, None) => aya::util::online_cpus()
                        .map_err(|(what, e)| plain_err(format!("cannot list CPUs ({what}): {e}")))?
                        .into_iter()
                        .map(|cpu| pe::PerfEventScope::AllProcessesOneCpu { cpu })
                        .collect(),
                };
                for scope in scopes {
                    // Threads the process starts later count too.
                    let inherit = e.pid.is_some();
                    prog.attach(config, scope, policy, inherit)
                        .map_err(attach_err)?;
                }
            }
        }
    }
    Ok(link)
}

/// A bare library name (`libc.so.6`) as the file of that exact name in the
/// standard library directories. aya's own lookup in ld.so.cache matches
/// names without their version (`libc`) but not exact sonames; anything
/// not found here is passed on to it unchanged.
fn library_path(target: &str) -> PathBuf {
    if target.contains('/') {
        return PathBuf::from(target);
    }
    let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
    let dirs = [
        format!("/lib/{multiarch}"),
        format!("/usr/lib/{multiarch}"),
        "/lib64".into(),
        "/usr/lib64".into(),
        "/lib".into(),
        "/usr/lib".into(),
        "/usr/local/lib".into(),
    ];
    dirs.iter()
        .map(|d| Path::new(d).join(target))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(target))
}

fn software_event(e: SoftwareEvent) -> aya::programs::perf_event::SoftwareEvent {
    use aya::programs::perf_event::SoftwareEvent as A;
    match e {
        SoftwareEvent::CpuClock => A::CpuClock,
        SoftwareEvent::TaskClock => A::TaskClock,
        SoftwareEvent::PageFaults => A::PageFaults,
        SoftwareEvent::ContextSwitches => A::ContextSwitches,
        SoftwareEvent::CpuMigrations => A::CpuMigrations,
        SoftwareEvent::PageFaultsMin => A::PageFaultsMin,
        SoftwareEvent::PageFaultsMaj => A::PageFaultsMaj,
        SoftwareEvent::AlignmentFaults => A::AlignmentFaults,
        SoftwareEvent::EmulationFaults => A::EmulationFaults,
        SoftwareEvent::CgroupSwitches => A::CgroupSwitches,
    }
}

fn hardware_event(e: HardwareEvent) -> aya::programs::perf_event::HardwareEvent {
    use aya::programs::perf_event::HardwareEvent as A;
    match e {
        HardwareEvent::CpuCycles => A::CpuCycles,
        HardwareEvent::Instructions => A::Instructions,
        HardwareEvent::CacheReferences => A::CacheReferences,
        HardwareEvent::CacheMisses => A::CacheMisses,
        HardwareEvent::BranchInstructions => A::BranchInstructions,
        HardwareEvent::BranchMisses => A::BranchMisses,
        HardwareEvent::BusCycles => A::BusCycles,
        HardwareEvent::StalledCyclesFrontend => A::StalledCyclesFrontend,
        HardwareEvent::StalledCyclesBackend => A::StalledCyclesBackend,
        HardwareEvent::RefCpuCycles => A::RefCpuCycles,
    }
}

/// Each global's value as its variable's bytes: checked against the
/// variable's BTF type when the object has BTF (see [`crate::globals`]),
/// else as an integer against the symbol table (size and section).
fn global_values(
    path: &Path,
    bytes: &[u8],
    globals: &BTreeMap<String, GlobalValue>,
) -> Result<Vec<(String, Vec<u8>)>, BpfError> {
    use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
    if globals.is_empty() {
        return Ok(Vec::new());
    }
    let err = |cause: String| BpfError::Object {
        path: path.to_owned(),
        cause,
    };
    let file = object::File::parse(bytes).map_err(|e| err(e.to_string()))?;
    let mut variables = BTreeMap::new();
    for sym in file.symbols() {
        let (Ok(name), Some(index)) = (sym.name(), sym.section_index()) else {
            continue;
        };
        let Ok(section) = file
            .section_by_index(index)
            .and_then(|s| s.name().map(str::to_owned))
        else {
            continue;
        };
        let data_section = [".rodata", ".data", ".bss"]
            .iter()
            .any(|d| section == *d || section.starts_with(&format!("{d}.")));
        if sym.kind() == SymbolKind::Data && data_section {
            variables.insert(name.to_owned(), sym.size());
        }
    }
    let btf = crate::layout::Btf::parse_object(bytes).map_err(|e| err(e.to_string()))?;
    let mut values = Vec::new();
    for (name, value) in globals {
        let typed = btf.as_ref().and_then(|b| b.variable(name));
        if let (Some(ty), true) = (typed, variables.contains_key(name)) {
            let own = crate::globals::encode(name, &ty, value).map_err(err)?;
            values.push((name.clone(), own));
            continue;
        }
        let Some(&size) = variables.get(name) else {
            let known: Vec<_> = variables.keys().map(String::as_str).collect();
            return Err(err(format!(
                "globalData.{name}: the object has no global variable {name:?}; it has: {}",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )));
        };
        let GlobalValue::Unsigned(value) = *value else {
            return Err(err(format!(
                "globalData.{name}: {value} needs the variable's BTF type, and the object has none for it: build it with -g, or give a non-negative integer"
            )));
        };
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Err(err(format!(
                "globalData.{name}: the variable is {size} bytes; only integers of 1, 2, 4 or 8 bytes can be set"
            )));
        }
        if size < 8 && value >> (size * 8) != 0 {
            return Err(err(format!(
                "globalData.{name}: {value} does not fit the variable's {size} byte{}",
                if size == 1 { "" } else { "s" }
            )));
        }
        let all = value.to_ne_bytes();
        let size = size as usize;
        let own = if cfg!(target_endian = "little") {
            all[..size].to_vec()
        } else {
            all[8 - size..].to_vec()
        };
        values.push((name.clone(), own));
    }
    Ok(values)
}

/// The programs of `bytes` with the attach points their sections name,
/// each validated as a spec's would be.
fn auto_attach(path: &Path, bytes: &[u8]) -> Result<Vec<ProgramAttach>, BpfError> {
    let found = crate::sections::auto_attach(bytes).map_err(|cause| BpfError::Object {
        path: path.to_owned(),
        cause,
    })?;
    for (program, why) in &found.skipped {
        tracing::info!(object = %path.display(), "program {program:?} is not auto-attached: {why}");
    }
    let mut problems = Vec::new();
    for p in &found.programs {
        p.validate(&format!("program {:?}", p.name), &mut |field, message| {
            problems.push(format!("{field}: {message}"))
        });
    }
    if !problems.is_empty() {
        return Err(BpfError::Object {
            path: path.to_owned(),
            cause: format!(
                "the spec lists no programs and the section names do not give valid attach points: {}",
                problems.join("; ")
            ),
        });
    }
    Ok(found.programs)
}

/// Ids of the kernel's loaded BPF programs named `name` (the kernel keeps
/// the first 15 bytes of a name).
pub fn loaded_program_ids(name: &str) -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(name))
        .map(|p| p.id())
        .collect()
}

/// The `MapData` inside a [`Map`]; aya offers no accessor for it.
pub fn into_map_data(map: Map) -> MapData {
    match map {
        Map::Array(d)
        | Map::ArrayOfMaps(d)
        | Map::BloomFilter(d)
        | Map::CgroupArray(d)
        | Map::CgroupStorage(d)
        | Map::CgrpStorage(d)
        | Map::CpuMap(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::HashMap(d)
        | Map::HashOfMaps(d)
        | Map::InodeStorage(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuCgroupStorage(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::Queue(d)
        | Map::RingBuf(d)
        | Map::ReusePortSockArray(d)
        | Map::SockHash(d)
        | Map::SockMap(d)
        | Map::SkStorage(d)
        | Map::Stack(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d)
        | Map::XskMap(d) => d,
    }
}

/// Mount the filesystems BPF needs and lift the memlock limit (older
/// kernels charge BPF memory to it). Runs once at host start; as non-root
/// it reports what is missing instead of failing, since a spec may need none.
pub fn prepare_host() {
    use nix::sys::resource::{Resource, setrlimit};
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, u64::MAX, u64::MAX) {
        tracing::debug!("cannot raise RLIMIT_MEMLOCK: {e}");
    }
    ensure_mounted(
        "/sys/kernel/tracing",
        "tracefs",
        TRACEFS_MAGIC,
        "tracepoints cannot be attached",
    );
    ensure_mounted(
        "/sys/fs/bpf",
        "bpf",
        BPF_FS_MAGIC,
        "maps pinned by path cannot be opened",
    );
    // The active LSM list (/sys/kernel/security/lsm) tells whether `lsm`
    // programs can attach.
    ensure_mounted(
        "/sys/kernel/security",
        "securityfs",
        SECURITYFS_MAGIC,
        "whether the BPF LSM is active cannot be checked",
    );
}

const TRACEFS_MAGIC: i64 = 0x7472_6163;
const SECURITYFS_MAGIC: i64 = 0x7363_6673;
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn ensure_mounted(dir: &str, fstype: &str, magic: i64, consequence: &str) {
    use nix::mount::{MsFlags, mount};
    use nix::sys::statfs::statfs;
    match statfs(dir) {
        Ok(s) if s.filesystem_type().0 == magic => return,
        Ok(_) => {}
        Err(e) => {
            tracing::warn!("{dir} is not usable ({e}): {consequence}");
            return;
        }
    }
    match mount(
        Some(fstype),
        dir,
        Some(fstype),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        Ok(()) => tracing::info!("mounted {fstype} at {dir}"),
        Err(e) => tracing::warn!(
            "{fstype} is not mounted at {dir} and mounting it failed ({e}): {consequence}; mount it or run the host as root"
        ),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = c.source();
    }
    s
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
