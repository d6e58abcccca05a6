//! Programs attached to interfaces and cgroups named by glob pattern
//! (`interface: veth*`, `cgroupPath: /sys/fs/cgroup/kubepods.slice/*/*`).
//!
//! A pattern is matched against what exists now: the interfaces of the
//! host's network namespace (`if_nameindex`, a netlink dump) and the
//! cgroup v2 directories the glob walks to. [`Patterns::rescan`] attaches
//! the program to each new match and detaches it from each match that went
//! away, one link per match, and says so. The plugin's thread calls it on
//! its housekeeping round (every second): new pods' veths and cgroups are
//! picked up within a second, and a match that went away has its link
//! released, so no descriptor outlives it (the kernel detaches a deleted
//! interface's XDP and TCX links itself, but the link's descriptor stays
//! open until the host drops it).
//!
//! A match is keyed by its name *and* its kernel identity (interface index,
//! cgroup inode), so an interface deleted and re-created under the same
//! name between two rounds is detached and attached again.

use std::collections::BTreeMap;
use std::fmt;

use aya::Ebpf;
use aya::programs::cgroup_skb::CgroupSkbLinkId;
use aya::programs::cgroup_sock::CgroupSockLinkId;
use aya::programs::cgroup_sock_addr::CgroupSockAddrLinkId;
use aya::programs::cgroup_sockopt::CgroupSockoptLinkId;
use aya::programs::tc::SchedClassifierLinkId;
use aya::programs::xdp::XdpLinkId;
use aya::programs::{CgroupSkb, CgroupSock, CgroupSockAddr, CgroupSockopt, SchedClassifier, Xdp};
use conductor_api::{AttachPoint, ProgramAttach};

/// One attachment of a program to one match, as the kernel knows it.
#[derive(Debug)]
pub(crate) enum LinkId {
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
    CgroupSkb(CgroupSkbLinkId),
    CgroupSock(CgroupSockLinkId),
    CgroupSockAddr(CgroupSockAddrLinkId),
    CgroupSockopt(CgroupSockoptLinkId),
}

/// One interface or cgroup a pattern matched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// The interface's name or the cgroup's directory.
    pub name: String,
    /// The interface's index or the cgroup's inode (its cgroup id).
    pub id: u64,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// What a rescan did for one program and one match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Attached {
        program: String,
        kind: &'static str,
        target: Target,
    },
    /// The match went away (interface deleted, cgroup removed); its link
    /// was released.
    Detached {
        program: String,
        kind: &'static str,
        target: Target,
    },
    /// The match exists but the program could not attach to it; not
    /// retried until the match is replaced.
    Failed {
        program: String,
        kind: &'static str,
        target: Target,
        cause: String,
    },
}

impl Change {
    /// Log the change: attach failures as warnings, the rest as info.
    pub fn log(&self, plugin: &str) {
        match self {
            Change::Failed { .. } => tracing::warn!(plugin, "{self}"),
            _ => tracing::info!(plugin, "{self}"),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Attached {
                program,
                kind,
                target,
            } => write!(f, "program {program:?} attached ({kind}) to {target}"),
            Change::Detached {
                program,
                kind,
                target,
            } => write!(
                f,
                "program {program:?} detached ({kind}) from {target}: it is gone"
            ),
            Change::Failed {
                program,
                kind,
                target,
                cause,
            } => write!(
                f,
                "program {program:?} cannot attach ({kind}) to {target}, which matches its pattern: {cause}"
            ),
        }
    }
}

/// What a pattern matches: interfaces by name, or cgroup directories.
#[derive(Debug, Clone)]
pub enum Matcher {
    Interface(glob::Pattern),
    Cgroup(String),
}

impl Matcher {
    /// The matcher of a validated attach point's pattern, if it has one.
    pub fn of(point: &AttachPoint<'_>) -> Option<Result<Matcher, String>> {
        let pattern = point.pattern()?;
        Some(match point {
            AttachPoint::Xdp(_) | AttachPoint::Tc(_) | AttachPoint::Tcx(_) => {
                glob::Pattern::new(pattern)
                    .map(Matcher::Interface)
                    .map_err(|e| format!("{pattern:?} is not a valid glob pattern: {e}"))
            }
            _ => glob::Pattern::new(pattern)
                .map(|_| Matcher::Cgroup(pattern.to_owned()))
                .map_err(|e| format!("{pattern:?} is not a valid glob pattern: {e}")),
        })
    }

    /// Whether an interface `name` matches (always false for cgroups).
    pub fn matches_interface(&self, name: &str) -> bool {
        match self {
            Matcher::Interface(p) => p.matches(name),
            Matcher::Cgroup(_) => false,
        }
    }

    /// Everything the pattern matches now, by name and kernel identity.
    pub fn current(&self) -> Result<Vec<Target>, String> {
        match self {
            Matcher::Interface(p) => Ok(interfaces()?
                .into_iter()
                .filter(|t| p.matches(&t.name))
                .collect()),
            Matcher::Cgroup(pattern) => cgroups(pattern),
        }
    }
}

/// The interfaces of the calling thread's network namespace.
pub fn interfaces() -> Result<Vec<Target>, String> {
    // SAFETY: if_nameindex returns a heap array ending in an entry with
    // index 0, freed below with if_freenameindex; names are C strings.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Err(format!(
                "cannot list network interfaces: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut out = Vec::new();
        let mut at = list;
        while (*at).if_index != 0 && !(*at).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*at).if_name)
                .to_string_lossy()
                .into_owned();
            out.push(Target {
                name,
                id: u64::from((*at).if_index),
            });
            at = at.add(1);
        }
        libc::if_freenameindex(list);
        Ok(out)
    }
}

/// The directories `pattern` matches, by path and inode. `*` does not
/// cross a `/`; directories that cannot be read are skipped.
pub fn cgroups(pattern: &str) -> Result<Vec<Target>, String> {
    use std::os::unix::fs::MetadataExt;
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let paths = glob::glob_with(pattern, options)
        .map_err(|e| format!("{pattern:?} is not a valid glob pattern: {e}"))?;
    Ok(paths
        .filter_map(Result::ok)
        .filter_map(|path| {
            let meta = std::fs::metadata(&path).ok()?;
            meta.is_dir().then(|| Target {
                name: path.to_string_lossy().into_owned(),
                id: meta.ino(),
            })
        })
        .collect())
}

/// One program whose interface or cgroup is a pattern, and its links.
#[derive(Debug)]
pub(crate) struct PatternProgram {
    spec: ProgramAttach,
    kind: &'static str,
    matcher: Matcher,
    /// Each match, with its link (`None`: attaching failed).
    links: BTreeMap<Target, Option<LinkId>>,
}

/// The pattern programs of one loaded object.
#[derive(Debug, Default)]
pub(crate) struct Patterns {
    programs: Vec<PatternProgram>,
}

impl Patterns {
    pub(crate) fn is_empty(&self) -> bool {
        self.programs.is_empty()
    }

    /// Follow `spec`'s pattern (which [`Matcher::of`] accepted).
    pub(crate) fn add(&mut self, spec: &ProgramAttach, matcher: Matcher) {
        let kind = spec.attach_point().map_or("", |p| p.kind());
        self.programs.push(PatternProgram {
            spec: spec.clone(),
            kind,
            matcher,
            links: BTreeMap::new(),
        });
    }

    /// The matches each program is attached to now, by program name.
    pub(crate) fn attached(&self) -> BTreeMap<String, Vec<Target>> {
        self.programs
            .iter()
            .map(|p| {
                let targets = p
                    .links
                    .iter()
                    .filter(|(_, l)| l.is_some())
                    .map(|(t, _)| t.clone())
                    .collect();
                (p.spec.name.clone(), targets)
            })
            .collect()
    }

    /// Attach to new matches and detach from vanished ones. `attach`
    /// attaches one program to one concrete target and returns its link.
    pub(crate) fn rescan(
        &mut self,
        ebpf: &mut Ebpf,
        mut attach: impl FnMut(&mut Ebpf, &ProgramAttach) -> Result<Option<LinkId>, String>,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        for p in &mut self.programs {
            let now = match p.matcher.current() {
                Ok(now) => now,
                Err(e) => {
                    // Keep what is attached: a failed listing is not a removal.
                    tracing::warn!(program = %p.spec.name, "cannot look for matches of the pattern: {e}");
                    continue;
                }
            };
            let gone: Vec<Target> = p
                .links
                .keys()
                .filter(|t| !now.contains(t))
                .cloned()
                .collect();
            for target in gone {
                if let Some(Some(link)) = p.links.remove(&target) {
                    detach(ebpf, &p.spec.name, link);
                    changes.push(Change::Detached {
                        program: p.spec.name.clone(),
                        kind: p.kind,
                        target,
                    });
                }
            }
            for target in now {
                if p.links.contains_key(&target) {
                    continue;
                }
                let one = p.spec.with_target(&target.name);
                match attach(ebpf, &one) {
                    Ok(link) => {
                        p.links.insert(target.clone(), link);
                        changes.push(Change::Attached {
                            program: p.spec.name.clone(),
                            kind: p.kind,
                            target,
                        });
                    }
                    Err(cause) => {
                        p.links.insert(target.clone(), None);
                        changes.push(Change::Failed {
                            program: p.spec.name.clone(),
                            kind: p.kind,
                            target,
                            cause,
                        });
                    }
                }
            }
        }
        changes
    }

    /// Release every link, one by one: aya stops detaching a program's
    /// links at the first error (a netlink TC filter of an interface that
    /// is gone), which would leave the rest attached.
    pub(crate) fn detach_all(&mut self, ebpf: &mut Ebpf) {
        for p in &mut self.programs {
            for (_, link) in std::mem::take(&mut p.links) {
                if let Some(link) = link {
                    detach(ebpf, &p.spec.name, link);
                }
            }
        }
    }
}

/// Release one link. The error of a link whose interface is gone (the
/// kernel already detached it) is expected and only logged.
fn detach(ebpf: &mut Ebpf, program: &str, link: LinkId) {
    let Some(prog) = ebpf.program_mut(program) else {
        return;
    };
    let result = match link {
        LinkId::Xdp(id) => <&mut Xdp>::try_from(prog).map(|p| p.detach(id)),
        LinkId::Tc(id) => <&mut SchedClassifier>::try_from(prog).map(|p| p.detach(id)),
        LinkId::CgroupSkb(id) => <&mut CgroupSkb>::try_from(prog).map(|p| p.detach(id)),
        LinkId::CgroupSock(id) => <&mut CgroupSock>::try_from(prog).map(|p| p.detach(id)),
        LinkId::CgroupSockAddr(id) => <&mut CgroupSockAddr>::try_from(prog).map(|p| p.detach(id)),
        LinkId::CgroupSockopt(id) => <&mut CgroupSockopt>::try_from(prog).map(|p| p.detach(id)),
    };
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(program, "detaching a link whose target is gone: {e}"),
        Err(e) => tracing::debug!(program, "detaching a link: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matcher of the one program `item` (a YAML flow item) of a spec.
    fn point_matcher(item: &str) -> Option<Result<Matcher, String>> {
        let text = format!(
            "name: p\ncomponent: /p.wasm\nbytecode:\n  path: /p.o\n  programs:\n    - {item}\n"
        );
        let spec = conductor_api::PluginSpec::from_yaml(&text).unwrap();
        let p = &spec.bytecode.as_ref().unwrap().programs[0];
        Matcher::of(&p.attach_point().unwrap())
    }

    #[test]
    fn interface_patterns_match_names_the_way_the_spec_says() {
        let m = point_matcher("{name: a, xdp: {interface: \"veth*\"}}")
            .unwrap()
            .unwrap();
        for (name, want) in [
            ("veth0", true),
            ("veth", true),
            ("vethc0ffee@if3", true),
            ("eth0", false),
            ("xveth0", false),
        ] {
            assert_eq!(m.matches_interface(name), want, "{name}");
        }
        let m = point_matcher("{name: a, tcx: {interface: \"eth[01]\", direction: ingress}}")
            .unwrap()
            .unwrap();
        let got: Vec<_> = ["eth0", "eth1", "eth2", "eth10"]
            .into_iter()
            .filter(|n| m.matches_interface(n))
            .collect();
        assert_eq!(got, ["eth0", "eth1"]);
        assert!(point_matcher("{name: a, xdp: {interface: eth0}}").is_none());
        assert!(point_matcher("{name: a, tpBtf: sched_switch}").is_none());
    }

    #[test]
    fn cgroup_patterns_match_directories_one_component_per_star() {
        let root = tempfile::tempdir().unwrap();
        for d in ["pods/a/c1", "pods/a/c2", "pods/b/c3", "pods/b/deep/c4"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        // Files (a cgroup's control files) are never matches.
        std::fs::write(root.path().join("pods/a/cgroup.procs"), "").unwrap();
        let pattern = format!("{}/pods/*/*", root.path().display());
        let m = point_matcher(&format!(
            "{{name: a, cgroupSkb: {{cgroupPath: \"{pattern}\", direction: egress}}}}"
        ))
        .unwrap()
        .unwrap();
        let mut names: Vec<_> = m
            .current()
            .unwrap()
            .into_iter()
            .map(|t| {
                t.name
                    .strip_prefix(&format!("{}/", root.path().display()))
                    .unwrap()
                    .to_owned()
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["pods/a/c1", "pods/a/c2", "pods/b/c3", "pods/b/deep"]
        );
    }

    #[test]
    fn interfaces_of_this_namespace_include_loopback() {
        let all = interfaces().unwrap();
        assert!(all.iter().any(|t| t.name == "lo" && t.id >= 1), "{all:?}");
    }
}
