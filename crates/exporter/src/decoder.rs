//! Decoders: the chain that turns a field of a map key into a label value,
//! with ebpf_exporter's semantics (each takes the previous one's output).
//!
//! What a decoder needs from outside the key (kernel symbols, interface
//! names, cgroup paths, block devices, the pods of this node) comes from
//! the [`Host`] the exporter is given, not from files the decoder opens.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use regex::bytes::Regex;

use crate::config::DecoderConfig;
use crate::pci::PciIds;
use crate::tables;

pub use conductor_api::exporter::DecoderKind;

/// Which pod a cgroup belongs to, for the `k8s_*` decoders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub pod: String,
    /// Empty when the cgroup is the pod's, not one container's.
    pub container: String,
    /// The owning workload's name (a Deployment's, not its ReplicaSet's),
    /// or the pod's own name when nothing owns it.
    pub workload: String,
}

/// What decoders need from the host. Every method may answer `None`
/// (unknown); decoders then write ebpf_exporter's `unknown...` values.
pub trait Host: Send + Sync {
    /// The kernel symbol exactly at `addr`.
    fn ksym(&self, addr: u64) -> Option<String>;
    /// The kernel symbol containing `addr` (the nearest at or below it).
    fn ksym_containing(&self, addr: u64) -> Option<String>;
    /// The network interface with this index.
    fn ifname(&self, index: u32) -> Option<String>;
    /// The cgroup v2 directory (full path) with this id (its inode).
    fn cgroup_path(&self, id: u64) -> Option<String>;
    /// The block device `major:minor` (`/proc/partitions` name).
    fn block_device(&self, major: u32, minor: u32) -> Option<String>;
    /// The pod of cgroup `id`, or `None` when it is not a pod's.
    fn workload(&self, id: u64) -> Option<Workload>;
    /// The id of process `pid`'s cgroup (v2), or `None` when it is gone.
    fn pid_cgroup_id(&self, _pid: u32) -> Option<u64> {
        None
    }
    /// The pod that has `ip` among its `status.podIPs` (host-network pods
    /// share the node's addresses and are never answered).
    fn workload_by_ip(&self, _ip: IpAddr) -> Option<Workload> {
        None
    }
    /// The PCI ID database, for the `pci_*` decoders. Asked once when a
    /// config that uses them loads (an error then fails the load, with
    /// the field named), and again at each decode.
    fn pci_ids(&self) -> Result<Arc<PciIds>, String> {
        Err("this host has no PCI ID database".into())
    }
    /// Every cgroup (v2) now: id and full path, for `cgroup_id_map`.
    fn cgroup_tree(&self) -> Vec<(u64, String)> {
        Vec::new()
    }
}

/// Why a chain produced no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// `regexp` matched nothing: the whole key is left out (not an error).
    #[error("skipped by the regexp decoder")]
    Skip,
    #[error("decoder {decoder:?}: {problem}")]
    Failed {
        decoder: &'static str,
        problem: String,
    },
}

/// One configured decoder, ready to run.
#[derive(Debug)]
enum Step {
    Plain(DecoderKind),
    StaticMap {
        map: Option<BTreeMap<String, String>>,
        allow_unknown: bool,
    },
    Regexp(Vec<Regex>),
}

/// A label's decoder chain.
#[derive(Debug)]
pub struct Chain {
    steps: Vec<Step>,
}

/// A decoded value, and whether it may be cached for this key (a lookup
/// that found nothing yet, such as a pod not in the cache, may later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub value: Vec<u8>,
    pub cacheable: bool,
}

impl Chain {
    /// Build the chain of a validated label ([`crate::config::Config::validate`]
    /// already refused unknown decoders and bad regexps).
    pub fn new(decoders: &[DecoderConfig]) -> Result<Self, String> {
        let mut steps = Vec::with_capacity(decoders.len());
        for d in decoders {
            let kind = DecoderKind::parse(&d.name)
                .ok_or_else(|| format!("unknown decoder {:?}", d.name))?;
            steps.push(match kind {
                DecoderKind::StaticMap => Step::StaticMap {
                    map: d.static_map.clone(),
                    allow_unknown: d.allow_unknown,
                },
                DecoderKind::Regexp => Step::Regexp(
                    d.regexps
                        .iter()
                        .flatten()
                        .map(|r| Regex::new(r).map_err(|e| format!("regexp {r:?}: {e}")))
                        .collect::<Result<_, _>>()?,
                ),
                k => Step::Plain(k),
            });
        }
        Ok(Self { steps })
    }

    pub fn decode(&self, input: &[u8], host: &dyn Host) -> Result<Decoded, DecodeError> {
        let mut out = Decoded {
            value: input.to_vec(),
            cacheable: true,
        };
        for step in &self.steps {
            out.value = match step {
                Step::Plain(kind) => decode_one(*kind, &out.value, host, &mut out.cacheable)?,
                Step::StaticMap { map, allow_unknown } => {
                    static_map(map.as_ref(), *allow_unknown, &out.value)
                }
                Step::Regexp(exprs) => regexp(exprs, &out.value)?,
            };
        }
        Ok(out)
    }
}

fn failed(decoder: &'static str, problem: impl Into<String>) -> DecodeError {
    DecodeError::Failed {
        decoder,
        problem: problem.into(),
    }
}

/// Host byte order, as BPF programs write keys.
fn ne_uint(decoder: &'static str, b: &[u8]) -> Result<u64, DecodeError> {
    Ok(match b.len() {
        8 => u64::from_ne_bytes(b.try_into().unwrap_or_default()),
        4 => u32::from_ne_bytes(b.try_into().unwrap_or_default()).into(),
        2 => u16::from_ne_bytes(b.try_into().unwrap_or_default()).into(),
        1 => b[0].into(),
        n => {
            return Err(failed(
                decoder,
                format!("unknown value length {n} for {b:?}"),
            ));
        }
    })
}

fn first_u32(decoder: &'static str, b: &[u8]) -> Result<u32, DecodeError> {
    b.get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(|| failed(decoder, format!("needs at least 4 bytes, got {}", b.len())))
}

fn first_u64(decoder: &'static str, b: &[u8]) -> Result<u64, DecodeError> {
    b.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_ne_bytes)
        .ok_or_else(|| failed(decoder, format!("needs at least 8 bytes, got {}", b.len())))
}

/// A decimal number written by a previous decoder (usually `uint`).
fn text_uint(decoder: &'static str, b: &[u8]) -> Result<u64, DecodeError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            failed(
                decoder,
                format!(
                    "error parsing {:?} as uint: put the uint decoder before it",
                    String::from_utf8_lossy(b)
                ),
            )
        })
}

fn decode_one(
    kind: DecoderKind,
    input: &[u8],
    host: &dyn Host,
    cacheable: &mut bool,
) -> Result<Vec<u8>, DecodeError> {
    Ok(match kind {
        DecoderKind::Uint => ne_uint("uint", input)?.to_string().into_bytes(),
        DecoderKind::String => {
            let end = input.iter().position(|&b| b == 0).unwrap_or(input.len());
            input[..end].to_vec()
        }
        DecoderKind::Hex => hex::encode(input).into_bytes(),
        DecoderKind::InetIp => inet_ip(input).into_bytes(),
        DecoderKind::Ifname => {
            let idx = first_u32("ifname", input)?;
            match host.ifname(idx) {
                Some(name) => name.into_bytes(),
                None => {
                    *cacheable = false;
                    format!("unknown:{idx}").into_bytes()
                }
            }
        }
        DecoderKind::Errno => {
            let n = text_uint("errno", input)?;
            match lookup(tables::ERRNOS, n) {
                Some(name) => name.as_bytes().to_vec(),
                None => format!("unknown:{n}").into_bytes(),
            }
        }
        DecoderKind::Syscall => {
            let n = text_uint("syscall", input)?;
            match lookup(tables::SYSCALLS, n) {
                Some(name) => name.as_bytes().to_vec(),
                None => format!("unknown_syscall:{n}").into_bytes(),
            }
        }
        DecoderKind::Ksym => {
            let addr = first_u64("ksym", input)?;
            match host.ksym(addr) {
                Some(sym) => sym.into_bytes(),
                None => format!("unknown_addr:0x{addr:x}").into_bytes(),
            }
        }
        DecoderKind::Kstack => {
            let frames: Vec<String> = input
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
                .take_while(|&a| a != 0)
                .map(|a| host.ksym_containing(a).unwrap_or_else(|| "??".into()))
                .collect();
            frames.join("\n").into_bytes()
        }
        DecoderKind::Cgroup => {
            let id = text_uint("cgroup", input)?;
            match host.cgroup_path(id) {
                Some(path) => path.into_bytes(),
                None => {
                    *cacheable = false;
                    format!("unknown_cgroup_id:{id}").into_bytes()
                }
            }
        }
        DecoderKind::Majorminor => {
            let dev = first_u32("majorminor", input)?;
            // The kernel's new_encode_dev(): minor's low byte, major, minor's rest.
            let major = (dev >> 8) & 0xfff;
            let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
            match host.block_device(major, minor) {
                Some(name) => name.into_bytes(),
                None => {
                    *cacheable = false;
                    format!("unknown:{major}:{minor}").into_bytes()
                }
            }
        }
        DecoderKind::Dname => dname(input),
        DecoderKind::K8sNamespace
        | DecoderKind::K8sPod
        | DecoderKind::K8sContainer
        | DecoderKind::K8sWorkload => {
            let name = match kind {
                DecoderKind::K8sNamespace => "k8s_namespace",
                DecoderKind::K8sPod => "k8s_pod",
                DecoderKind::K8sContainer => "k8s_container",
                _ => "k8s_workload",
            };
            match k8s_subject(name, input)? {
                Subject::CgroupId(id) => host.workload(id),
                Subject::Ip(ip) => {
                    // An IP passes to another pod when its pod goes: the
                    // answer for this key may change, so it is never cached.
                    *cacheable = false;
                    host.workload_by_ip(ip)
                }
            }
            .map(|w| {
                match kind {
                    DecoderKind::K8sNamespace => w.namespace,
                    DecoderKind::K8sPod => w.pod,
                    DecoderKind::K8sContainer => w.container,
                    _ => w.workload,
                }
                .into_bytes()
            })
            // Not a pod's cgroup or IP (or not known yet): an empty value,
            // which Prometheus treats as no label.
            .unwrap_or_else(|| {
                *cacheable = false;
                Vec::new()
            })
        }
        DecoderKind::PidCgroupId => {
            let pid = text_uint("pid_cgroup_id", input)?;
            // A pid's cgroup changes (moves, pid reuse): never cached. An
            // exited process decodes to cgroup id 0, which no cgroup has.
            *cacheable = false;
            u32::try_from(pid)
                .ok()
                .and_then(|p| host.pid_cgroup_id(p))
                .unwrap_or(0)
                .to_string()
                .into_bytes()
        }
        DecoderKind::PciVendor
        | DecoderKind::PciDevice
        | DecoderKind::PciClass
        | DecoderKind::PciSubclass => {
            let name = match kind {
                DecoderKind::PciVendor => "pci_vendor",
                DecoderKind::PciDevice => "pci_device",
                DecoderKind::PciClass => "pci_class",
                _ => "pci_subclass",
            };
            let n = text_uint(name, input)?;
            let ids = host.pci_ids().map_err(|e| failed(name, e))?;
            pci_name(kind, n, &ids).into_bytes()
        }
        // Built as their own steps.
        DecoderKind::StaticMap | DecoderKind::Regexp => input.to_vec(),
    })
}

/// What a `k8s_*` decoder was given: a cgroup id (written by `uint`, or
/// `pid_cgroup_id`) or a pod IP (written by `inet_ip`). A decimal number is
/// never an IP in its text form, so the two cannot be confused.
enum Subject {
    CgroupId(u64),
    Ip(IpAddr),
}

fn k8s_subject(decoder: &'static str, input: &[u8]) -> Result<Subject, DecodeError> {
    let text = std::str::from_utf8(input).unwrap_or_default();
    if let Ok(id) = text.parse() {
        return Ok(Subject::CgroupId(id));
    }
    if let Ok(ip) = text.parse() {
        return Ok(Subject::Ip(ip));
    }
    Err(failed(
        decoder,
        format!(
            "{:?} is neither a cgroup id nor an IP address: put uint (for a cgroup id) or inet_ip (for a pod IP) before it",
            String::from_utf8_lossy(input)
        ),
    ))
}

/// ebpf_exporter's `pci_*` decoders: the number (after `uint`) is a vendor
/// id, `vendor << 16 | device`, a class, or `class << 8 | subclass`; the
/// unknown values are written as ebpf_exporter writes them.
fn pci_name(kind: DecoderKind, n: u64, ids: &PciIds) -> String {
    let found = |name: Option<&str>, unknown: String| name.map_or(unknown, str::to_owned);
    match kind {
        DecoderKind::PciVendor => found(
            u16::try_from(n).ok().and_then(|v| ids.vendor(v)),
            format!("unknown pci vendor: 0x{n:02x}"),
        ),
        DecoderKind::PciDevice => found(
            u32::try_from(n)
                .ok()
                .and_then(|n| ids.device((n >> 16) as u16, n as u16)),
            format!("unknown pci device: 0x{n:04x}"),
        ),
        DecoderKind::PciClass => found(
            u8::try_from(n).ok().and_then(|c| ids.class(c)),
            format!("unknown pci class: 0x{n:02x}"),
        ),
        _ => {
            let (class, sub) = (n >> 8, n & 0xff);
            match u8::try_from(class)
                .ok()
                .and_then(|c| ids.subclass(c, sub as u8))
            {
                Some(Some(name)) => name.to_owned(),
                Some(None) => {
                    format!("unknown pci subclass: 0x{sub:02x} (class 0x{class:02x})")
                }
                None => format!("unknown pci class: 0x{class:02x}"),
            }
        }
    }
}

fn lookup(table: &[(u64, &'static str)], n: u64) -> Option<&'static str> {
    table.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
}

/// Go's `net.IP.String()`: dotted IPv4 for 4 bytes and IPv4-mapped IPv6,
/// RFC 5952 text for other IPv6, `?` and hex for other lengths.
fn inet_ip(b: &[u8]) -> String {
    match b.len() {
        0 => "<nil>".into(),
        4 => Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
        16 => {
            let octets: [u8; 16] = b.try_into().unwrap_or_default();
            let v6 = Ipv6Addr::from(octets);
            match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => v6.to_string(),
            }
        }
        _ => format!("?{}", hex::encode(b)),
    }
}

/// DNS wire format (`\x03www\x07example\x03com\x00`) to `www.example.com.`-style
/// text, as ebpf_exporter's `dname`.
fn dname(input: &[u8]) -> Vec<u8> {
    if input.is_empty() {
        return b".".to_vec();
    }
    let mut out = vec![0u8; input.len()];
    let mut off = 0;
    while off < input.len() {
        let n = input[off] as usize;
        out[off] = b'.';
        off += 1;
        if off + n > input.len() {
            return input.to_vec();
        }
        out[off..off + n].copy_from_slice(&input[off..off + n]);
        off += n;
    }
    out.split_off(1)
}

fn static_map(
    map: Option<&BTreeMap<String, String>>,
    allow_unknown: bool,
    input: &[u8],
) -> Vec<u8> {
    let Some(map) = map else {
        return b"empty mapping".to_vec();
    };
    match map.get(String::from_utf8_lossy(input).as_ref()) {
        Some(v) => v.as_bytes().to_vec(),
        None if allow_unknown => input.to_vec(),
        None => [b"unknown:".as_slice(), input].concat(),
    }
}

/// The first regexp that matches gives its first group (or the whole
/// match); none matching leaves the key out.
fn regexp(exprs: &[Regex], input: &[u8]) -> Result<Vec<u8>, DecodeError> {
    for re in exprs {
        if let Some(caps) = re.captures(input) {
            let m = if caps.len() == 2 {
                caps.get(1)
            } else {
                caps.get(0)
            };
            // A group that did not take part in the match: an empty value.
            return Ok(m.map(|m| m.as_bytes().to_vec()).unwrap_or_default());
        }
    }
    Err(DecodeError::Skip)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Answers from fixed tables, so each decoder's use of the host is seen.
    #[derive(Default)]
    pub(crate) struct FixedHost;

    impl Host for FixedHost {
        fn ksym(&self, addr: u64) -> Option<String> {
            (addr == 0xffff_ffff_8100_0000).then(|| "startup_64".into())
        }
        fn ksym_containing(&self, addr: u64) -> Option<String> {
            (0xffff_ffff_8100_0000..0xffff_ffff_8100_1000)
                .contains(&addr)
                .then(|| "startup_64".into())
        }
        fn ifname(&self, index: u32) -> Option<String> {
            (index == 1).then(|| "lo".into())
        }
        fn cgroup_path(&self, id: u64) -> Option<String> {
            (id == 42).then(|| "/sys/fs/cgroup/system.slice/x.service".into())
        }
        fn block_device(&self, major: u32, minor: u32) -> Option<String> {
            ((major, minor) == (259, 1)).then(|| "nvme0n1p1".into())
        }
        fn workload(&self, id: u64) -> Option<Workload> {
            (id == 7).then(|| Workload {
                namespace: "shop".into(),
                pod: "web-1".into(),
                container: "nginx".into(),
                workload: "web".into(),
            })
        }
        fn pid_cgroup_id(&self, pid: u32) -> Option<u64> {
            (pid == 1234).then_some(7)
        }
        fn workload_by_ip(&self, ip: IpAddr) -> Option<Workload> {
            let pod_ips: [IpAddr; 2] = [
                Ipv4Addr::new(10, 244, 1, 5).into(),
                "fd00:10:244::5".parse::<Ipv6Addr>().unwrap().into(),
            ];
            pod_ips.contains(&ip).then(|| Workload {
                namespace: "shop".into(),
                pod: "web-1".into(),
                container: String::new(),
                workload: "web".into(),
            })
        }
    }

    fn chain(names: &[&str]) -> Chain {
        let confs: Vec<DecoderConfig> = names
            .iter()
            .map(|n| DecoderConfig {
                name: (*n).into(),
                ..Default::default()
            })
            .collect();
        Chain::new(&confs).unwrap()
    }

    fn run(names: &[&str], input: &[u8]) -> String {
        let d = chain(names).decode(input, &FixedHost).unwrap();
        String::from_utf8(d.value).unwrap()
    }

    #[test]
    fn uint_reads_host_order_of_each_width() {
        assert_eq!(run(&["uint"], &[7]), "7");
        assert_eq!(run(&["uint"], &513u16.to_ne_bytes()), "513");
        assert_eq!(run(&["uint"], &70000u32.to_ne_bytes()), "70000");
        assert_eq!(
            run(&["uint"], &u64::MAX.to_ne_bytes()),
            "18446744073709551615"
        );
        assert!(chain(&["uint"]).decode(&[1, 2, 3], &FixedHost).is_err());
    }

    #[test]
    fn string_stops_at_nul_and_hex_encodes() {
        assert_eq!(run(&["string"], b"bash\0\0junk"), "bash");
        assert_eq!(run(&["string"], b"full"), "full");
        assert_eq!(run(&["hex"], &[0xde, 0xad, 0x01]), "dead01");
    }

    #[test]
    fn inet_ip_formats_like_go() {
        assert_eq!(run(&["inet_ip"], &[10, 0, 0, 1]), "10.0.0.1");
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[192, 168, 1, 2]);
        assert_eq!(run(&["inet_ip"], &mapped), "192.168.1.2");
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(run(&["inet_ip"], &v6.octets()), "2001:db8::1");
        assert_eq!(run(&["inet_ip"], &[1, 2]), "?0102");
    }

    #[test]
    fn ifname_asks_the_host() {
        assert_eq!(run(&["ifname"], &1u32.to_ne_bytes()), "lo");
        let d = chain(&["ifname"])
            .decode(&9u32.to_ne_bytes(), &FixedHost)
            .unwrap();
        assert_eq!(d.value, b"unknown:9");
        assert!(!d.cacheable, "an unknown interface may appear later");
    }

    #[test]
    fn errno_and_syscall_names() {
        assert_eq!(run(&["uint", "errno"], &2u64.to_ne_bytes()), "ENOENT");
        assert_eq!(run(&["uint", "errno"], &11u64.to_ne_bytes()), "EAGAIN");
        assert_eq!(
            run(&["uint", "errno"], &9999u64.to_ne_bytes()),
            "unknown:9999"
        );
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(run(&["uint", "syscall"], &0u64.to_ne_bytes()), "read");
            assert_eq!(run(&["uint", "syscall"], &39u64.to_ne_bytes()), "getpid");
        }
        assert_eq!(
            run(&["uint", "syscall"], &99999u64.to_ne_bytes()),
            "unknown_syscall:99999"
        );
        // Without uint first the input is not a number.
        assert!(chain(&["syscall"]).decode(&[0; 8], &FixedHost).is_err());
    }

    #[test]
    fn ksym_is_exact_and_kstack_is_containing() {
        let addr = 0xffff_ffff_8100_0000u64;
        assert_eq!(run(&["ksym"], &addr.to_ne_bytes()), "startup_64");
        assert_eq!(
            run(&["ksym"], &(addr + 8).to_ne_bytes()),
            "unknown_addr:0xffffffff81000008"
        );
        let stack: Vec<u8> = [addr + 8, 1, 0, addr]
            .iter()
            .flat_map(|a| a.to_ne_bytes())
            .collect();
        assert_eq!(run(&["kstack"], &stack), "startup_64\n??");
    }

    #[test]
    fn cgroup_paths_and_unknown_ids() {
        assert_eq!(
            run(&["uint", "cgroup"], &42u64.to_ne_bytes()),
            "/sys/fs/cgroup/system.slice/x.service"
        );
        assert_eq!(
            run(&["uint", "cgroup"], &43u64.to_ne_bytes()),
            "unknown_cgroup_id:43"
        );
    }

    #[test]
    fn majorminor_undoes_new_encode_dev() {
        // new_encode_dev(259, 1) = (1 & 0xff) | (259 << 8) | ((1 & !0xff) << 12)
        let dev: u32 = 1 | (259 << 8);
        assert_eq!(run(&["majorminor"], &dev.to_ne_bytes()), "nvme0n1p1");
        let dev: u32 = 0x12 | (8 << 8) | (0x300 << 12);
        assert_eq!(run(&["majorminor"], &dev.to_ne_bytes()), "unknown:8:786");
    }

    #[test]
    fn dname_turns_wire_format_into_dots() {
        assert_eq!(
            run(&["dname"], b"\x03www\x07example\x03com"),
            "www.example.com"
        );
        assert_eq!(run(&["dname"], b""), ".");
        // A length past the end: the input unchanged.
        assert_eq!(run(&["dname"], b"\x09ab"), "\tab");
    }

    #[test]
    fn static_map_and_allow_unknown() {
        let map: BTreeMap<String, String> = [("0".to_owned(), "read".to_owned())].into();
        let conf = |allow_unknown| DecoderConfig {
            name: "static_map".into(),
            static_map: Some(map.clone()),
            allow_unknown,
            ..Default::default()
        };
        let uint = DecoderConfig {
            name: "uint".into(),
            ..Default::default()
        };
        let strict = Chain::new(&[uint.clone(), conf(false)]).unwrap();
        let loose = Chain::new(&[uint, conf(true)]).unwrap();
        let v = |c: &Chain, n: u32| c.decode(&n.to_ne_bytes(), &FixedHost).unwrap().value;
        assert_eq!(v(&strict, 0), b"read");
        assert_eq!(v(&strict, 5), b"unknown:5");
        assert_eq!(v(&loose, 5), b"5");
        assert_eq!(run(&["static_map"], b"x"), "empty mapping");
    }

    #[test]
    fn regexp_keeps_the_first_group_or_skips() {
        let conf = DecoderConfig {
            name: "regexp".into(),
            regexps: Some(vec![
                "^/sys/fs/cgroup/(system\\.slice)/".into(),
                "^/other".into(),
            ]),
            ..Default::default()
        };
        let c = Chain::new(&[conf]).unwrap();
        let d = c
            .decode(b"/sys/fs/cgroup/system.slice/x.service", &FixedHost)
            .unwrap();
        assert_eq!(d.value, b"system.slice");
        assert_eq!(c.decode(b"/other/y", &FixedHost).unwrap().value, b"/other");
        assert_eq!(c.decode(b"/nope", &FixedHost), Err(DecodeError::Skip));
    }

    #[test]
    fn k8s_decoders_label_the_pod_of_a_pid() {
        let pid = 1234u32.to_ne_bytes();
        assert_eq!(run(&["uint", "pid_cgroup_id"], &pid), "7");
        assert_eq!(run(&["uint", "pid_cgroup_id", "k8s_pod"], &pid), "web-1");
        assert_eq!(
            run(&["uint", "pid_cgroup_id", "k8s_namespace"], &pid),
            "shop"
        );
        // A pid that is gone: cgroup id 0, no pod, and never cached.
        let gone = 99u32.to_ne_bytes();
        let d = chain(&["uint", "pid_cgroup_id", "k8s_pod"])
            .decode(&gone, &FixedHost)
            .unwrap();
        assert_eq!((d.value.as_slice(), d.cacheable), (&b""[..], false));
        assert_eq!(
            run(&["uint", "pid_cgroup_id", "cgroup"], &gone),
            "unknown_cgroup_id:0"
        );
    }

    #[test]
    fn k8s_decoders_label_a_pod_cgroup() {
        let id = 7u64.to_ne_bytes();
        assert_eq!(run(&["uint", "k8s_namespace"], &id), "shop");
        assert_eq!(run(&["uint", "k8s_pod"], &id), "web-1");
        assert_eq!(run(&["uint", "k8s_container"], &id), "nginx");
        assert_eq!(run(&["uint", "k8s_workload"], &id), "web");
        let d = chain(&["uint", "k8s_pod"])
            .decode(&8u64.to_ne_bytes(), &FixedHost)
            .unwrap();
        assert_eq!(d.value, b"");
        assert!(!d.cacheable, "a pod may be learnt later");
    }

    #[test]
    fn k8s_decoders_label_the_pod_of_an_ip() {
        let v4 = [10, 244, 1, 5];
        assert_eq!(run(&["inet_ip", "k8s_pod"], &v4), "web-1");
        assert_eq!(run(&["inet_ip", "k8s_namespace"], &v4), "shop");
        assert_eq!(run(&["inet_ip", "k8s_workload"], &v4), "web");
        // A pod IP is the pod's, not one container's.
        assert_eq!(run(&["inet_ip", "k8s_container"], &v4), "");
        // IPv6, and IPv4 written as IPv4-mapped IPv6 (a dual-stack socket).
        let v6: Ipv6Addr = "fd00:10:244::5".parse().unwrap();
        assert_eq!(run(&["inet_ip", "k8s_pod"], &v6.octets()), "web-1");
        let mapped = Ipv4Addr::from(v4).to_ipv6_mapped();
        assert_eq!(run(&["inet_ip", "k8s_pod"], &mapped.octets()), "web-1");
        // Never cached, found or not: the IP may pass to another pod.
        let c = chain(&["inet_ip", "k8s_pod"]);
        let found = c.decode(&v4, &FixedHost).unwrap();
        assert!(!found.cacheable, "a pod IP is reused by later pods");
        let other = c.decode(&[10, 244, 1, 6], &FixedHost).unwrap();
        assert_eq!((other.value.as_slice(), other.cacheable), (&b""[..], false));
    }

    #[test]
    fn k8s_decoders_refuse_raw_bytes_naming_the_decoders_to_add() {
        let err = chain(&["k8s_pod"])
            .decode(&[10, 244, 1, 5], &FixedHost)
            .unwrap_err();
        let DecodeError::Failed { decoder, problem } = err else {
            panic!("not a failure: {err:?}");
        };
        assert_eq!(decoder, "k8s_pod");
        assert!(
            problem.contains("put uint (for a cgroup id) or inet_ip (for a pod IP) before it"),
            "{problem}"
        );
    }
}
