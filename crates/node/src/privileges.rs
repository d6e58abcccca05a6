//! Least privilege: once the host has done what only start-up needs
//! (mounting tracefs and bpffs, raising `RLIMIT_MEMLOCK`), it keeps only
//! the capabilities that loading and attaching plugins needs and drops the
//! rest from its effective, permitted, inheritable, ambient and bounding
//! sets. Which capability each attach kind needs: docs/src/deploy.md.
//!
//! Capabilities belong to threads, so this runs before the host starts any
//! thread (every later thread inherits the reduced sets).

use std::str::FromStr;

pub use caps::Capability;
use caps::{CapSet, CapsHashSet};

/// What plugins need on a kernel with `CAP_BPF` (5.8 and later): loading
/// programs and maps (`CAP_BPF`), tracing programs, kprobes, uprobes,
/// tracepoints and perf events (`CAP_PERFMON`), TC, TCX, XDP and cgroup
/// programs (`CAP_NET_ADMIN`).
pub const DEFAULT_KEEP: &[Capability] = &[
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
    Capability::CAP_NET_ADMIN,
];

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "unknown capability {0:?} in --keep-capabilities: use names like CAP_BPF or bpf, separated by commas, or `all` to keep every capability"
    )]
    Unknown(String),
    #[error(
        "cannot drop capabilities ({0}); run the host with CAP_SETPCAP or only the capabilities it keeps, or pass --keep-capabilities all"
    )]
    Drop(caps::errors::CapsError),
    #[error(
        "cannot drop capabilities: the host already runs {0} threads, and capabilities are per thread; this is a bug, please report it"
    )]
    Threads(usize),
}

/// Which capabilities to keep: `--keep-capabilities`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    /// Drop nothing.
    All,
    /// Keep these, drop every other one.
    Only(CapsHashSet),
}

impl Default for Keep {
    fn default() -> Self {
        Self::Only(DEFAULT_KEEP.iter().copied().collect())
    }
}

impl FromStr for Keep {
    type Err = PrivilegeError;

    /// `all`, or a comma-separated list of names (`CAP_BPF` or `bpf`, any
    /// case); an empty list drops every capability.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(Self::All);
        }
        let mut keep = CapsHashSet::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let upper = name.to_ascii_uppercase();
            let full = if upper.starts_with("CAP_") {
                upper
            } else {
                format!("CAP_{upper}")
            };
            keep.insert(
                Capability::from_str(&full)
                    .map_err(|_| PrivilegeError::Unknown(name.to_owned()))?,
            );
        }
        Ok(Self::Only(keep))
    }
}

impl Keep {
    /// Also keep `cap` (unless everything is kept anyway).
    pub fn with(mut self, cap: Capability) -> Self {
        if let Self::Only(set) = &mut self {
            set.insert(cap);
        }
        self
    }
}

/// What [`drop_capabilities`] left the process with, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub kept: Vec<String>,
    pub dropped: Vec<String>,
}

fn names<'a>(caps: impl Iterator<Item = &'a Capability>) -> Vec<String> {
    let mut names: Vec<String> = caps.map(|c| c.to_string()).collect();
    names.sort();
    names
}

/// Drop every capability `keep` does not name from the calling thread (the
/// only one: see the module). A capability the process does not have is not
/// added. Nothing happens with [`Keep::All`].
pub fn drop_capabilities(keep: &Keep) -> Result<Option<Dropped>, PrivilegeError> {
    let Keep::Only(keep) = keep else {
        return Ok(None);
    };
    // A thread that has just been joined may linger in /proc for a moment.
    let threads = || std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while threads() > 1 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    if threads() > 1 {
        return Err(PrivilegeError::Threads(threads()));
    }
    let permitted = caps::read(None, CapSet::Permitted).map_err(PrivilegeError::Drop)?;
    if permitted.is_empty() {
        // An unprivileged host: nothing to give up.
        return Ok(None);
    }
    // Without CAP_SETPCAP (e.g. started with only the kept capabilities)
    // the bounding set cannot shrink; it matters only for programs the
    // host would exec, and it execs none.
    let bounding = if permitted.contains(&Capability::CAP_SETPCAP) {
        caps::read(None, CapSet::Bounding).map_err(PrivilegeError::Drop)?
    } else {
        CapsHashSet::new()
    };
    let had: CapsHashSet = permitted.union(&bounding).copied().collect();
    let kept: CapsHashSet = permitted
        .iter()
        .copied()
        .filter(|c| keep.contains(c))
        .collect();
    // The bounding set first: that needs CAP_SETPCAP, which goes with the
    // permitted set below.
    for cap in bounding.iter().filter(|c| !keep.contains(c)) {
        caps::drop(None, CapSet::Bounding, *cap).map_err(PrivilegeError::Drop)?;
    }
    caps::clear(None, CapSet::Ambient).map_err(PrivilegeError::Drop)?;
    caps::clear(None, CapSet::Inheritable).map_err(PrivilegeError::Drop)?;
    caps::set(None, CapSet::Effective, &kept).map_err(PrivilegeError::Drop)?;
    caps::set(None, CapSet::Permitted, &kept).map_err(PrivilegeError::Drop)?;
    Ok(Some(Dropped {
        dropped: names(had.difference(&kept)),
        kept: names(kept.iter()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_lists_take_either_spelling_and_refuse_unknown_names() {
        assert_eq!(
            "bpf, CAP_PERFMON,Net_Admin".parse::<Keep>().unwrap(),
            Keep::default()
        );
        assert_eq!("ALL".parse::<Keep>().unwrap(), Keep::All);
        assert_eq!("".parse::<Keep>().unwrap(), Keep::Only(CapsHashSet::new()));
        let err = "bpf,cap_flying".parse::<Keep>().unwrap_err().to_string();
        assert!(err.contains("\"cap_flying\""), "{err}");
    }
}
