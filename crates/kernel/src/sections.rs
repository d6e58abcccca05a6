//! Auto-attach: where each program of an object attaches, read from its
//! ELF section name the way libbpf's auto-attach does, for a spec that
//! lists no programs. Existing libbpf-style objects then run unmodified.
//!
//! Sections that say where to attach (`tracepoint/<cat>/<name>`,
//! `raw_tp/<name>`, `tp_btf/<name>`, `fentry/<fn>`, `fexit/<fn>`,
//! `lsm/<hook>`, `kprobe/<fn>[+off]`, `kretprobe/<fn>`,
//! `uprobe/<binary>:<fn>[+off]`, `uretprobe/...`, and ebpf_exporter's
//! `xdp/<interface>`) become attach points; the others (a bare `xdp`,
//! `classifier`, `cgroup/...`, `perf_event`, a bare `uprobe`) need an
//! interface, a cgroup or an event from the spec and are skipped, as
//! libbpf skips them.

use std::borrow::Cow;

use conductor_api::{KprobeAttach, ProgramAttach, UprobeAttach, XdpAttach};
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
                pod: None,
            };
            if kind.starts_with("uprobe") {
                p.uprobe = Some(probe);
            } else {
                p.uretprobe = Some(probe);
            }
        }
        // ebpf_exporter's own section kind (libbpf has no such one): XDP
        // on the named interface, in the kernel's default mode.
        "xdp" if !rest.is_empty() => {
            p.xdp = Some(XdpAttach {
                interface: rest.to_owned(),
                mode: Default::default(),
            })
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

/// The object as aya can parse it: aya knows the section kind `xdp` but
/// not ebpf_exporter's `xdp/<interface>`, so in a copy of the object each
/// such section name, and the same string among the BTF strings (which
/// the BTF's per-section function info names), is cut at the slash. The
/// interface is read from the original bytes ([`from_section`]). Bytes
/// that are not an ELF64 object, or have no such section, are returned
/// as they are. A `usdt` section is refused by name (aya's parser would
/// only say "invalid program section").
pub fn for_aya(bytes: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    use object::read::elf::{ElfFile64, FileHeader, SectionHeader};
    let Ok(file) = ElfFile64::<object::Endianness>::parse(bytes) else {
        return Ok(Cow::Borrowed(bytes));
    };
    let endian = file.endian();
    let sections = file.elf_section_table();
    let Some((names_at, _)) = file
        .elf_header()
        .shstrndx(endian, bytes)
        .ok()
        .and_then(|i| sections.section(object::SectionIndex(i as usize)).ok())
        .and_then(|s| s.file_range(endian))
    else {
        return Ok(Cow::Borrowed(bytes));
    };
    // (offset of the slash, the whole name with its NUL)
    let mut cuts: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut btf = None;
    for header in sections.iter() {
        let Ok(name) = sections.section_name(endian, header) else {
            continue;
        };
        if name == b".BTF" {
            btf = header.file_range(endian);
        }
        if name.starts_with(b"usdt") {
            return Err(format!(
                "section `{}`: USDT probes are not supported yet; attach a uprobe to the probe's address instead",
                String::from_utf8_lossy(name)
            ));
        }
        if name.len() > 4 && name.starts_with(b"xdp/") {
            let slash = names_at as usize + header.sh_name(endian) as usize + 3;
            cuts.push((slash, [name, b"\0"].concat()));
        }
    }
    if cuts.is_empty() {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = bytes.to_vec();
    for (slash, _) in &cuts {
        if let Some(b) = out.get_mut(*slash) {
            *b = 0;
        }
    }
    if let Some((at, len)) = btf {
        cut_btf_strings(&mut out, at as usize, len as usize, &cuts);
    }
    Ok(Cow::Owned(out))
}

/// Cut each name of `cuts` at its slash where it is a whole string in the
/// string section of the BTF at `at..at + len` of `elf`.
fn cut_btf_strings(elf: &mut [u8], at: usize, len: usize, cuts: &[(usize, Vec<u8>)]) {
    let u32_at = |b: &[u8], i: usize| -> Option<usize> {
        let v: [u8; 4] = b.get(i..i + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(v) as usize)
    };
    let Some(btf) = elf.get(at..at.saturating_add(len)) else {
        return;
    };
    // The header: magic (0xeb9f, little-endian here), version, flags,
    // hdr_len, type_off, type_len, str_off, str_len.
    if btf.get(0..2) != Some(&[0x9f, 0xeb]) {
        return;
    }
    let (Some(hdr_len), Some(str_off), Some(str_len)) =
        (u32_at(btf, 4), u32_at(btf, 16), u32_at(btf, 20))
    else {
        return;
    };
    let start = at + hdr_len + str_off;
    let Some(strings) = elf.get_mut(start..start.saturating_add(str_len)) else {
        return;
    };
    for (_, name) in cuts {
        let mut from = 0;
        while let Some(i) = strings[from..]
            .windows(name.len())
            .position(|w| w == name.as_slice())
        {
            let i = from + i;
            // A whole string: at the start or right after a NUL.
            if i == 0 || strings[i - 1] == 0 {
                strings[i + 3] = 0;
            }
            from = i + 1;
        }
    }
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
        // ebpf_exporter's own kind: XDP on the interface it names.
        let p = from_section("p", "xdp/lo").unwrap();
        assert_eq!(p.xdp.as_ref().map(|x| x.interface.as_str()), Some("lo"));
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
