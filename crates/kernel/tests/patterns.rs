//! Programs attached to interfaces and cgroups named by pattern, on the
//! real kernel: nothing matches at load; a veth pair (or cgroup) made
//! afterwards is attached on the next rescan and its real packets (or a
//! process's bytes) are counted exactly; when it goes, the rescan releases
//! its links (none left in the kernel); another match is attached and
//! counted again; and unloading leaves no program, link or TC filter, even
//! when a match vanished just before.
//!
//! The programs are `test_attach.bpf.o`'s (see `attach.rs`), loaded through
//! `object::load` from a real `PluginSpec`, as `conductor run` does; the
//! plugin's thread calls `rescan` every second.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use conductor_api::PluginSpec;
use conductor_kernel::maps::KernelMap;
use conductor_kernel::object::{self, LoadedObject};
use conductor_kernel::patterns::Change;
use conductor_test_support::*;

// Slots of `counts` / `bytes` (enum slot in test_attach.bpf.c).
const XDP: u32 = 4;
const TC: u32 = 5;
const TCX: u32 = 6;
const CGROUP_SKB: u32 = 7;

fn load(list: &[String]) -> LoadedObject {
    object::prepare_host();
    let items: String = list.iter().map(|p| format!("    - {p}\n")).collect();
    let text = format!(
        "name: pattern-test\ncomponent: /unused.wasm\nbytecode:\n  path: {}\n  programs:\n{items}",
        artifact("test_attach.bpf.o").display()
    );
    let spec = PluginSpec::from_yaml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    object::load(
        &artifact("test_attach.bpf.o"),
        &spec.bytecode.unwrap().programs,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn read_u64(map: &KernelMap, slot: u32) -> u64 {
    let v = map
        .lookup(&slot.to_ne_bytes())
        .unwrap()
        .expect("array slot");
    u64::from_ne_bytes(v[..8].try_into().unwrap())
}

/// Count only UDP datagrams to `port` (`struct cfg` of test_attach.bpf.c).
fn configure(cfg: &KernelMap, port: u16) {
    let mut value = Vec::new();
    for v in [0u32, 0, u32::from(port), 0] {
        value.extend_from_slice(&v.to_ne_bytes());
    }
    cfg.update(&0u32.to_ne_bytes(), &value, 0).unwrap();
}

/// BPF links the kernel holds for program `id` (XDP, TCX and cgroup links;
/// a released link is gone from this list).
fn links_of(id: u32) -> usize {
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|l| l.program_id() == id)
        .count()
}

/// Wait until programs `ids` hold no BPF link: the kernel frees a link
/// whose last descriptor was closed from a work queue, a moment later.
fn wait_no_links(ids: &[u32]) {
    let held = || ids.iter().map(|id| links_of(*id)).sum::<usize>();
    wait_for(
        Duration::from_secs(10),
        "the released links to be freed",
        || format!("{} links of programs {ids:?}", held()),
        || (held() == 0).then_some(()),
    );
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `f` on a thread inside network namespace `ns`.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).unwrap();
            // SAFETY: a valid namespace descriptor; affects this thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

/// Two network namespaces, deleted on drop: `host` where the programs are
/// loaded (the host's side of pod veths), `peer` where packets come from.
struct Namespaces {
    host: String,
    peer: String,
    /// 10.214.N.x/30 addresses of each pair.
    net: u32,
}

impl Namespaces {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let ns = Namespaces {
            host: format!("cdt-path-{id}"),
            peer: format!("cdt-patp-{id}"),
            net: id % 250,
        };
        for n in [&ns.host, &ns.peer] {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
            ip(&["netns", "add", n]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        ns
    }

    /// A veth pair: `host_if` (10.214.N.1) in `host`, `peer_if`
    /// (10.214.N.2) in `peer`.
    fn pair(&self, host_if: &str, peer_if: &str) {
        ip(&[
            "-n", &self.host, "link", "add", host_if, "type", "veth", "peer", "name", peer_if,
            "netns", &self.peer,
        ]);
        let (a, b) = (
            format!("10.214.{}.1/30", self.net),
            format!("10.214.{}.2/30", self.net),
        );
        for (ns, dev, addr) in [(&self.host, host_if, &a), (&self.peer, peer_if, &b)] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
    }

    /// Delete `host_if` (and so its peer).
    fn delete(&self, host_if: &str) {
        ip(&["-n", &self.host, "link", "del", host_if]);
    }

    /// `n` UDP datagrams of `payload` bytes from `peer` to the host side.
    fn send(&self, n: u64, payload: usize, port: u16) {
        let (from, to) = (
            format!("10.214.{}.2", self.net),
            format!("10.214.{}.1", self.net),
        );
        in_netns(&self.peer, || {
            let sock = std::net::UdpSocket::bind((from.as_str(), 0)).unwrap();
            for _ in 0..n {
                sock.send_to(&vec![7u8; payload], (to.as_str(), port))
                    .unwrap();
            }
        });
    }

    /// The TC filters on `dev`'s ingress in `host` (`tc filter show`).
    fn tc_filters(&self, dev: &str) -> String {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.host, "tc", "filter", "show", "dev", dev, "ingress",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.host, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// `(program, target, attached?)` of each change, sorted.
fn summary(changes: &[Change]) -> Vec<(String, String, &'static str)> {
    let mut v: Vec<_> = changes
        .iter()
        .map(|c| match c {
            Change::Attached {
                program, target, ..
            } => (program.clone(), target.name.clone(), "attached"),
            Change::Detached {
                program, target, ..
            } => (program.clone(), target.name.clone(), "detached"),
            Change::Failed { cause, .. } => panic!("{c}: {cause}"),
        })
        .collect();
    v.sort();
    v
}

fn each(
    programs: &[&str],
    target: &str,
    what: &'static str,
) -> Vec<(String, String, &'static str)> {
    let mut v: Vec<_> = programs
        .iter()
        .map(|p| ((*p).to_owned(), target.to_owned(), what))
        .collect();
    v.sort();
    v
}

#[test]
fn xdp_tc_and_tcx_on_an_interface_pattern_follow_veths_that_come_and_go() {
    if !require_root() {
        return;
    }
    let ns = Namespaces::new();
    let tag = format!("cv{}", std::process::id() % 100_000);
    let pattern = format!("{tag}*");
    let port = 45_000 + (std::process::id() % 1000) as u16;
    const PROGRAMS: [&str; 3] = ["on_tc", "on_tcx", "on_xdp"];
    const PAYLOAD: usize = 100;
    // Ethernet + IPv4 + UDP headers + payload, as seen on ingress.
    let frame = (14 + 20 + 8 + PAYLOAD) as u64;

    // Everything that touches the host side runs in its namespace, as the
    // plugin's thread runs in the host's.
    in_netns(&ns.host.clone(), || {
        let mut obj = load(&[
            format!("{{name: on_xdp, xdp: {{interface: \"{pattern}\", mode: skb}}}}"),
            format!(
                "{{name: on_tc, tc: {{interface: \"{pattern}\", direction: ingress, priority: 9}}}}"
            ),
            format!("{{name: on_tcx, tcx: {{interface: \"{pattern}\", direction: ingress}}}}"),
        ]);
        let ids: Vec<u32> = PROGRAMS
            .iter()
            .map(|p| obj.program_id(p).unwrap())
            .collect();
        let counts = obj.open_map("counts").unwrap();
        let bytes = obj.open_map("bytes").unwrap();
        let cfg = obj.open_map("cfg").unwrap();
        configure(&cfg, port);
        let count = |slot| read_u64(&counts, slot);
        let sent_all = |n: u64| {
            wait_for(
                Duration::from_secs(10),
                "the datagrams to reach the XDP, TC and TCX programs",
                || format!("xdp {} tc {} tcx {}", count(XDP), count(TC), count(TCX)),
                || [XDP, TC, TCX].iter().all(|s| count(*s) >= n).then_some(()),
            );
            for (slot, what) in [(XDP, "xdp"), (TC, "tc"), (TCX, "tcx")] {
                assert_eq!(count(slot), n, "{what} packets");
                assert_eq!(read_u64(&bytes, slot), n * frame, "{what} bytes");
            }
        };

        // Nothing matches yet: loaded, attached nowhere.
        assert!(obj.pattern_targets().values().all(Vec::is_empty));
        assert!(obj.rescan().is_empty());

        // A matching veth appears: attached to it on the next round.
        let first = format!("{tag}a");
        ns.pair(&first, &format!("{tag}b"));
        assert_eq!(summary(&obj.rescan()), each(&PROGRAMS, &first, "attached"));
        assert!(obj.rescan().is_empty(), "a second round changes nothing");
        const N: u64 = 30;
        ns.send(N, PAYLOAD, port);
        sent_all(N);
        // XDP and TCX hold a BPF link each (netlink TC holds none).
        assert_eq!(ids.iter().map(|id| links_of(*id)).sum::<usize>(), 2);

        // It goes: the kernel detached the links but their descriptors are
        // the host's until the next round releases them.
        ns.delete(&first);
        assert_eq!(ids.iter().map(|id| links_of(*id)).sum::<usize>(), 2);
        assert_eq!(summary(&obj.rescan()), each(&PROGRAMS, &first, "detached"));
        wait_no_links(&ids);

        // Another match: attached and counted again, from where it was.
        let second = format!("{tag}c");
        ns.pair(&second, &format!("{tag}d"));
        assert_eq!(summary(&obj.rescan()), each(&PROGRAMS, &second, "attached"));
        const M: u64 = 17;
        ns.send(M, PAYLOAD, port);
        sent_all(N + M);
        let targets = obj.pattern_targets();
        for p in PROGRAMS {
            let names: Vec<_> = targets[p].iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, [second.as_str()], "{p}");
        }
        assert!(ns.tc_filters(&second).contains("on_tc"));

        // A third appears and vanishes before the next round; unloading
        // then still releases everything (aya alone stops at the first
        // netlink filter it cannot remove).
        let third = format!("{tag}e");
        ns.pair(&third, &format!("{tag}f"));
        assert_eq!(summary(&obj.rescan()), each(&PROGRAMS, &third, "attached"));
        ns.delete(&third);
        drop(obj);
        assert_eq!(ns.tc_filters(&second).trim(), "", "a TC filter was left");
        wait_no_links(&ids);
        // Freed from a work queue too, once nothing holds them.
        let still_loaded = || -> Vec<u32> {
            aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .map(|p| p.id())
                .filter(|id| ids.contains(id))
                .collect()
        };
        wait_for(
            Duration::from_secs(10),
            "the programs to be unloaded",
            || format!("still loaded: {:?}", still_loaded()),
            || still_loaded().is_empty().then_some(()),
        );
    });
}

/// A cgroup v2 directory for the test, removed (with its children) on drop.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Ok(children) = std::fs::read_dir(&self.0) {
            for c in children.filter_map(Result::ok) {
                if c.path().is_dir() {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The real Python interpreter (not a pyenv shim, which forks).
fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A child process placed in `cgroup` sends `n` datagrams of 100 bytes.
fn send_from(cgroup: &Path, n: u32, port: u16) {
    let procs = cgroup.join("cgroup.procs");
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range({n}):\n    s.sendto(bytes(100), ('127.0.0.1', {port}))\n"
    );
    let mut child = Command::new(python());
    child.args(["-c", &script]).stdin(Stdio::null());
    // SAFETY: only a write(2) between fork and exec.
    unsafe {
        child.pre_exec(move || std::fs::write(&procs, b"0"));
    }
    assert!(child.status().unwrap().success());
}

#[test]
fn cgroup_skb_on_a_cgroup_pattern_follows_cgroups_created_after_load() {
    if !require_root() {
        return;
    }
    let root = conductor_kernel::features::cgroup2_root().unwrap();
    let parent = TestCgroup(Path::new(&root).join(format!("conductor-pat-{}", std::process::id())));
    std::fs::create_dir_all(&parent.0).unwrap();
    let port = 44_000 + (std::process::id() % 1000) as u16;
    let pattern = format!("{}/pod-*", parent.0.display());
    let mut obj = load(&[format!(
        "{{name: on_cgroup_egress, cgroupSkb: {{cgroupPath: \"{pattern}\", direction: egress}}}}"
    )]);
    let id = obj.program_id("on_cgroup_egress").unwrap();
    let counts = obj.open_map("counts").unwrap();
    let bytes = obj.open_map("bytes").unwrap();
    let cfg = obj.open_map("cfg").unwrap();
    configure(&cfg, port);
    // IPv4 + UDP headers + 100 bytes.
    let packet = 20 + 8 + 100;
    assert!(obj.rescan().is_empty());

    // Created after load (a new pod): attached on the next round.
    let first = parent.0.join("pod-a");
    std::fs::create_dir(&first).unwrap();
    // A directory the pattern does not match stays unattached.
    let other = parent.0.join("other");
    std::fs::create_dir(&other).unwrap();
    let name = first.display().to_string();
    assert_eq!(
        summary(&obj.rescan()),
        each(&["on_cgroup_egress"], &name, "attached")
    );
    send_from(&first, 20, port);
    send_from(&other, 5, port);
    assert_eq!(read_u64(&counts, CGROUP_SKB), 20);
    assert_eq!(read_u64(&bytes, CGROUP_SKB), 20 * packet);
    assert_eq!(links_of(id), 1);

    // Removed (the pod went): the next round releases its link.
    std::fs::remove_dir(&first).unwrap();
    assert_eq!(
        summary(&obj.rescan()),
        each(&["on_cgroup_egress"], &name, "detached")
    );
    wait_no_links(&[id]);

    // Another one, counted from where the first stopped.
    let second = parent.0.join("pod-b");
    std::fs::create_dir(&second).unwrap();
    let name = second.display().to_string();
    assert_eq!(
        summary(&obj.rescan()),
        each(&["on_cgroup_egress"], &name, "attached")
    );
    send_from(&second, 7, port);
    assert_eq!(read_u64(&counts, CGROUP_SKB), 27);
    assert_eq!(read_u64(&bytes, CGROUP_SKB), 27 * packet);
    drop(obj);
    wait_no_links(&[id]);
    drop(parent);
}
