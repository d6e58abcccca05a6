//! Auto-attach: where each program of an object attaches, read from its
//! ELF section name the way libbpf's auto-attach does, for a spec that
//! lists no programs. Existing libbpf-style objects then run unmodified.
//!
//! Sections that say where to attach (`tracepoint/<cat>/<name>`,
//! `raw_tp/<name>`, `tp_btf/<name>`, `fentry/<fn>`, `fexit/<fn>`,
//! `lsm/<hook>`, `kprobe/<fn>[+off]`, `kretprobe/<fn>`,
//! `uprobe/<binary>:<fn>[+off]`, `uretprobe/...`) become attach points;
//! the others (`xdp`, `classifier`, `cgroup/...`, `perf_event`, a bare
//! `uprobe`) need an interface, a cgroup or an event from the spec and are
//! skipped, as libbpf skips them.

use conductor_api::{KprobeAttach, ProgramAttach, UprobeAttach};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// The result of reading an object's sections.
#[derive(Debug, Default)]
pub struct AutoAttach {
    /// Programs with the attach point their section names.
    pub programs: Vec<ProgramAttach>,
    /// Programs left out, with their section and why.
    pub skipped: Vec<(String, String)>,
}

/// Every program (a function symbol in an executable section) of the ELF
/// object `bytes`, with the attach point its section name gives.
pub fn auto_attach(bytes: &[u8]) -> Result<AutoAttach, String> {
    let file = object::File::parse(bytes).map_err(|e| e.to_string())?;
    let mut out = AutoAttach::default();
    let mut programs: Vec<(String, String)> = Vec::new();
    for sym in file.symbols() {
        if sym.kind() != SymbolKind::Text || !sym.is_global() {
            continue;
        }
        let (Ok(name), Some(index)) = (sym.name(), sym.section_index()) else {
            continue;
        };
        let Ok(section) = file
            .section_by_index(index)
            .and_then(|s| s.name().map(str::to_owned))
        else {
            continue;
        };
        // `.text` holds BPF-to-BPF subprograms, not programs.
        if section == ".text" || section.starts_with('.') {
            continue;
        }
        programs.push((name.to_owned(), section));
    }
    programs.sort();
    for (name, section) in programs {
        match from_section(&name, &section) {
            Ok(p) => out.programs.push(p),
            Err(why) => out
                .skipped
                .push((name, format!("section {section:?}: {why}"))),
        }
    }
    Ok(out)
}

/// The attach point section `section` names for program `name`.
pub fn from_section(name: &str, section: &str) -> Result<ProgramAttach, String> {
    let mut p = ProgramAttach {
        name: name.to_owned(),
        ..Default::default()
    };
    let (kind, rest) = section.split_once('/').unwrap_or((section, ""));
    let needs = |what: &str| Err(format!("{what}: list the program in bytecode.programs"));
    match kind {
        "tracepoint" | "tp" if rest.contains('/') => p.tracepoint = Some(rest.to_owned()),
        "raw_tp" | "raw_tracepoint" if !rest.is_empty() => p.raw_tracepoint = Some(rest.to_owned()),
        "tp_btf" if !rest.is_empty() => p.tp_btf = Some(rest.to_owned()),
        "fentry" | "fentry.s" if !rest.is_empty() => p.fentry = Some(rest.to_owned()),
        "fexit" | "fexit.s" if !rest.is_empty() => p.fexit = Some(rest.to_owned()),
        "lsm" | "lsm.s" if !rest.is_empty() => p.lsm = Some(rest.to_owned()),
        "kprobe" | "kretprobe" if !rest.is_empty() => {
            let (function, offset) = split_offset(rest)?;
            let probe = KprobeAttach { function, offset };
            if kind == "kprobe" {
                p.kprobe = Some(probe);
            } else {
                p.kretprobe = Some(probe);
            }
        }
        "uprobe" | "uretprobe" | "uprobe.s" | "uretprobe.s" if !rest.is_empty() => {
            // libbpf: uprobe/<binary>:<function>[+<offset>]
            let Some((target, func)) = rest.rsplit_once(':') else {
                return Err(format!("{rest:?} is not <binary>:<function>[+offset]"));
            };
            let (symbol, offset) = split_offset(func)?;
            let probe = UprobeAttach {
                target: target.to_owned(),
                symbol: Some(symbol),
                offset,
                pid: None,
            };
            if kind.starts_with("uprobe") {
                p.uprobe = Some(probe);
            } else {
                p.uretprobe = Some(probe);
            }
        }
        "xdp" | "xdp.frags" => return needs("XDP needs an interface"),
        "classifier" | "tc" | "tcx" => return needs("TC needs an interface and direction"),
        "perf_event" => return needs("a perf event needs its event and rate"),
        k if k.starts_with("cgroup") => return needs("cgroup programs attach to a cgroup"),
        "uprobe" | "uretprobe" | "kprobe" | "kretprobe" => {
            return needs("the section names no function");
        }
        _ => return Err("not a section kind that can attach on its own".into()),
    }
    Ok(p)
}

/// `name+offset` (decimal or 0x hex) into its parts.
fn split_offset(s: &str) -> Result<(String, Option<u64>), String> {
    match s.split_once('+') {
        None => Ok((s.to_owned(), None)),
        Some((name, off)) => {
            let parsed = match off.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => off.parse(),
            };
            parsed
                .map(|o| (name.to_owned(), Some(o)))
                .map_err(|_| format!("{off:?} is not an offset"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conductor_api::AttachPoint;

    #[test]
    fn libbpf_section_names_give_attach_points() {
        let kind = |s: &str| {
            from_section("p", s)
                .map(|p| format!("{:?}", p.attach_point().unwrap()))
                .unwrap_or_else(|e| format!("skip: {e}"))
        };
        assert!(kind("tracepoint/sched/sched_switch").contains("category: \"sched\""));
        assert!(kind("tp/sched/sched_switch").starts_with("Tracepoint"));
        assert!(kind("raw_tp/sys_enter").starts_with("RawTracepoint"));
        assert!(kind("tp_btf/sched_switch").starts_with("TpBtf"));
        assert!(kind("fentry/do_unlinkat").starts_with("Fentry"));
        assert!(kind("lsm.s/file_open").starts_with("Lsm"));
        assert!(kind("xdp").starts_with("skip: XDP needs an interface"));
        assert!(kind("cgroup_skb/egress").starts_with("skip"));
        assert!(kind("uprobe").starts_with("skip"));
        let p = from_section("p", "uretprobe/libc.so.6:malloc+0x10").unwrap();
        let Some(AttachPoint::Uprobe { probe, ret: true }) = p.attach_point() else {
            panic!("{p:?}");
        };
        assert_eq!(
            (probe.target.as_str(), probe.symbol.as_deref(), probe.offset),
            ("libc.so.6", Some("malloc"), Some(16))
        );
        let p = from_section("p", "kprobe/do_unlinkat+8").unwrap();
        assert_eq!(p.kprobe.unwrap().offset, Some(8));
        assert!(from_section("p", "kprobe/f+zz").is_err());
    }
}
