//! The kernel side of a plugin: load its BPF object with aya, verify and
//! attach the programs its spec lists, and hand out its maps.
//!
//! Loading is all-or-nothing: every program is loaded (verified) before any
//! is attached, and on any error the partly loaded [`aya::Ebpf`] is dropped,
//! which closes its descriptors and so detaches and unloads everything.
//! Nothing is pinned, so nothing outlives the host process.

use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData};
use aya::programs::{ProgramError, RawTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};

use crate::maps::KernelMap;
use conductor_api::files;
use conductor_api::{AttachPoint, ProgramAttach};

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
}

impl std::fmt::Debug for LoadedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedObject")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Load `path`, verify every listed program, then attach them all.
pub fn load(path: &Path, programs: &[ProgramAttach]) -> Result<LoadedObject, BpfError> {
    load_capped(path, programs, files::DEFAULT_MAX_BYTECODE_BYTES)
}

/// [`load`] of an object file of at most `max_bytes` (a regular file with
/// an ELF header, checked before the rest is read).
pub fn load_capped(
    path: &Path,
    programs: &[ProgramAttach],
    max_bytes: u64,
) -> Result<LoadedObject, BpfError> {
    let bytes = files::read_checked(path, max_bytes, "--max-bytecode-bytes", 4, |h| {
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
    })?;
    // Maps the object declares but the spec does not use are still created:
    // programs may reference them. BTF from /sys/kernel/btf/vmlinux drives
    // CO-RE relocations (aya's default).
    let mut ebpf = EbpfLoader::new()
        .load(&bytes)
        .map_err(|e| BpfError::Object {
            path: path.to_owned(),
            cause: error_chain(&e),
        })?;

    for p in programs {
        load_program(&mut ebpf, path, p)?;
    }
    for p in programs {
        attach_program(&mut ebpf, p)?;
    }
    Ok(LoadedObject {
        path: path.to_owned(),
        ebpf,
    })
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

fn load_program(ebpf: &mut Ebpf, path: &Path, p: &ProgramAttach) -> Result<(), BpfError> {
    let available = program_names(ebpf);
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
    let result = match p.attach_point() {
        Some(AttachPoint::Tracepoint { .. }) => {
            let tp: &mut TracePoint = program.try_into().map_err(|_| wrong("tracepoint"))?;
            tp.load()
        }
        Some(AttachPoint::RawTracepoint { .. }) => {
            let tp: &mut RawTracePoint = program.try_into().map_err(|_| wrong("raw tracepoint"))?;
            tp.load()
        }
        // `PluginSpec::validate` guarantees exactly one attach point.
        None => return Err(wrong("(no attach point)")),
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
        other => BpfError::Load {
            path: path.to_owned(),
            program: p.name.clone(),
            cause: error_chain(&other),
        },
    })
}

fn attach_program(ebpf: &mut Ebpf, p: &ProgramAttach) -> Result<(), BpfError> {
    let attach_err = |target: String, e: ProgramError| {
        let cause = error_chain(&e);
        let hint = if cause.contains("tracefs") {
            " (tracefs must be mounted at /sys/kernel/tracing; the host mounts it when run as root)"
        } else if cause.contains("No such file") {
            " (check the name under /sys/kernel/tracing/events)"
        } else {
            ""
        };
        BpfError::Attach {
            program: p.name.clone(),
            target,
            cause,
            hint,
        }
    };
    // Present and of the right type: `load_program` checked both.
    let Some(program) = ebpf.program_mut(&p.name) else {
        return Ok(());
    };
    match p.attach_point() {
        Some(AttachPoint::Tracepoint { category, name }) => {
            if let Ok(tp) = <&mut TracePoint>::try_from(program) {
                tp.attach(category, name)
                    .map_err(|e| attach_err(format!("tracepoint {category}/{name}"), e))?;
            }
        }
        Some(AttachPoint::RawTracepoint { name }) => {
            if let Ok(tp) = <&mut RawTracePoint>::try_from(program) {
                tp.attach(name)
                    .map_err(|e| attach_err(format!("raw tracepoint {name}"), e))?;
            }
        }
        None => {}
    }
    Ok(())
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
}

const TRACEFS_MAGIC: i64 = 0x7472_6163;
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
