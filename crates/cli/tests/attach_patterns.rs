//! Interfaces and cgroups named by pattern through `conductor run`: the
//! host runs in a test network namespace with a `tcx` program on
//! `cw<pid>*` and a `cgroupSkb` program on `<test cgroup>/pod-*`, nothing
//! matching at start. Its plugin thread's rescan attaches to a veth and a
//! cgroup made afterwards and logs it; their packets and bytes are counted
//! exactly (read through the exposed `counts` map); a deleted veth is
//! logged as detached and the next one is attached and counted on.
//! `crates/kernel/tests/patterns.rs` checks the same on the kernel side in
//! detail (every kind, links released, nothing left after unload).

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use conductor_kernel::maps::KernelMap;
use conductor_kernel::shared::pin_path;
use conductor_test_support::*;

const PLUGIN: &str = "patterns-e2e";
// Slots of `counts` (enum slot in test_attach.bpf.c).
const TCX: u32 = 6;
const CGROUP_SKB: u32 = 7;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The host's and the peer's network namespaces and the test cgroup,
/// removed on drop.
struct Fixture {
    host: String,
    peer: String,
    net: u32,
    cgroup: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let root = conductor_kernel::features::cgroup2_root().unwrap();
        let f = Fixture {
            host: format!("cdt-e2eh-{id}"),
            peer: format!("cdt-e2ep-{id}"),
            net: id % 250,
            cgroup: Path::new(&root).join(format!("conductor-e2e-pat-{id}")),
        };
        for n in [&f.host, &f.peer] {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
            ip(&["netns", "add", n]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        std::fs::create_dir_all(&f.cgroup).unwrap();
        f
    }

    fn pair(&self, host_if: &str, peer_if: &str) {
        ip(&[
            "-n", &self.host, "link", "add", host_if, "type", "veth", "peer", "name", peer_if,
            "netns", &self.peer,
        ]);
        for (ns, dev, last) in [(&self.host, host_if, 1), (&self.peer, peer_if, 2)] {
            let addr = format!("10.215.{}.{last}/30", self.net);
            ip(&["-n", ns, "addr", "add", &addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
    }

    /// `n` UDP datagrams of 100 bytes from the peer namespace to the host's.
    fn send(&self, n: u32, port: u16) {
        let path = format!("/run/netns/{}", self.peer);
        let (from, to) = (
            format!("10.215.{}.2", self.net),
            format!("10.215.{}.1", self.net),
        );
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            // SAFETY: a valid namespace descriptor; affects this thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            let sock = std::net::UdpSocket::bind((from.as_str(), 0)).unwrap();
            for _ in 0..n {
                sock.send_to(&[7u8; 100], (to.as_str(), port)).unwrap();
            }
        })
        .join()
        .unwrap();
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for ns in [&self.host, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if let Ok(children) = std::fs::read_dir(&self.cgroup) {
            for c in children.filter_map(Result::ok) {
                let _ = std::fs::remove_dir(c.path());
            }
        }
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

fn read_u64(map: &KernelMap, slot: u32) -> u64 {
    let v = map
        .lookup(&slot.to_ne_bytes())
        .unwrap()
        .expect("array slot");
    u64::from_ne_bytes(v[..8].try_into().unwrap())
}

/// A child process placed in `cgroup` sends `n` datagrams of 100 bytes.
fn send_from(cgroup: &Path, n: u32, port: u16) {
    let procs = cgroup.join("cgroup.procs");
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range({n}):\n    s.sendto(bytes(100), ('127.0.0.1', {port}))\n"
    );
    let mut child = Command::new("python3");
    child.args(["-c", &script]).stdin(Stdio::null());
    // SAFETY: only a write(2) between fork and exec.
    unsafe {
        child.pre_exec(move || std::fs::write(&procs, b"0"));
    }
    assert!(child.status().unwrap().success());
}

#[test]
fn conductor_run_follows_veths_and_cgroups_named_by_pattern() {
    if !require_root() {
        return;
    }
    let f = Fixture::new();
    let tag = format!("cw{}", std::process::id() % 100_000);
    let port = 43_000 + (std::process::id() % 1000) as u16;
    let spec = format!(
        r#"
name: {PLUGIN}
component: {}
bytecode:
  path: {}
  programs:
    - {{name: on_tcx, tcx: {{interface: "{tag}*", direction: ingress}}}}
    - {{name: on_cgroup_egress, cgroupSkb: {{cgroupPath: "{}/pod-*", direction: egress}}}}
maps:
  - {{name: counts, expose: true}}
  - {{name: cfg, expose: true}}
"#,
        path_str(&artifact("testing_steady.wasm")),
        path_str(&artifact("test_attach.bpf.o")),
        f.cgroup.display(),
    );
    let netns = std::fs::File::open(format!("/run/netns/{}", f.host)).unwrap();
    let fd = netns.as_raw_fd();
    let mut host = Host::start_wrapped(&spec, None, &[], &[], &|cmd| {
        // SAFETY: one system call between fork and exec; `netns` outlives
        // the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let counts = KernelMap::from_pin("counts", &pin_path(PLUGIN, "counts")).unwrap();
    let cfg = KernelMap::from_pin("cfg", &pin_path(PLUGIN, "cfg")).unwrap();
    let mut value = Vec::new();
    for v in [0u32, 0, u32::from(port), 0] {
        value.extend_from_slice(&v.to_ne_bytes());
    }
    cfg.update(&0u32.to_ne_bytes(), &value, 0).unwrap();
    let wait_log = |host: &mut Host, needle: &str| {
        host.wait_for_log(needle, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("no log line {needle:?}; log:\n{}", host.log_text()));
    };
    let wait_count = |slot: u32, want: u64, what: &str| {
        wait_for(
            Duration::from_secs(10),
            what,
            || format!("{}", read_u64(&counts, slot)),
            || (read_u64(&counts, slot) >= want).then_some(()),
        );
        assert_eq!(read_u64(&counts, slot), want, "{what}");
    };

    let first = format!("{tag}a");
    f.pair(&first, &format!("{tag}b"));
    wait_log(
        &mut host,
        &format!("program \"on_tcx\" attached (tcx) to {first}"),
    );
    f.send(30, port);
    wait_count(TCX, 30, "datagrams over the first veth");

    ip(&["-n", &f.host, "link", "del", &first]);
    wait_log(
        &mut host,
        &format!("program \"on_tcx\" detached (tcx) from {first}: it is gone"),
    );
    let second = format!("{tag}c");
    f.pair(&second, &format!("{tag}d"));
    wait_log(
        &mut host,
        &format!("program \"on_tcx\" attached (tcx) to {second}"),
    );
    f.send(12, port);
    wait_count(TCX, 42, "datagrams over both veths");

    let pod = f.cgroup.join("pod-a");
    std::fs::create_dir(&pod).unwrap();
    wait_log(
        &mut host,
        &format!(
            "program \"on_cgroup_egress\" attached (cgroupSkb) to {}",
            pod.display()
        ),
    );
    send_from(&pod, 20, port);
    wait_count(CGROUP_SKB, 20, "datagrams from the pod cgroup");
    drop(host);
    drop(f);
}
