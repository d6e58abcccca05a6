//! Every attach kind of the spec, attached for real on this kernel and fed
//! by real activity, counted exactly (`test_attach.bpf.c` counts into one
//! slot per program). Kinds this kernel cannot attach (kprobes compiled
//! out, BPF trampolines refused) are still validated and loaded, and the
//! refusal names the missing kernel feature.
//!
//! The programs are loaded through `object::load` from a real
//! `PluginSpec`, the path `conductor run` and the daemon take.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use conductor_api::{PluginSpec, ProgramAttach};
use conductor_kernel::features::Feature;
use conductor_kernel::maps::KernelMap;
use conductor_kernel::object::{self, LoadedObject};
use conductor_test_support::*;

// Slots of `counts` / `bytes` (enum slot in test_attach.bpf.c).
const TP_BTF: u32 = 0;
const UPROBE_BIN: u32 = 1;
const UPROBE_LIBC: u32 = 2;
const URETPROBE_BIN: u32 = 3;
const XDP: u32 = 4;
const TC: u32 = 5;
const TCX: u32 = 6;
const CGROUP_SKB: u32 = 7;
const LSM: u32 = 8;
const PERF: u32 = 9;
const CGROUP_SOCK: u32 = 12;
const CGROUP_CONNECT: u32 = 13;
const WEIGHTED: u32 = 14;
const BY_COMM: u32 = 15;

/// The programs of a spec whose `programs:` list is `programs` (YAML flow
/// items, one per line), validated as `conductor run` validates them.
fn programs(programs: &[String]) -> Vec<ProgramAttach> {
    let list: String = programs.iter().map(|p| format!("    - {p}\n")).collect();
    let text = format!(
        "name: attach-test\ncomponent: /unused.wasm\nbytecode:\n  path: {}\n  programs:\n{list}",
        artifact("test_attach.bpf.o").display()
    );
    let spec = PluginSpec::from_yaml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    spec.bytecode.unwrap().programs
}

struct Loaded {
    obj: LoadedObject,
    counts: KernelMap,
    bytes: KernelMap,
    cfg: Option<KernelMap>,
}

fn load(list: &[String]) -> Loaded {
    object::prepare_host();
    let mut obj = object::load(&artifact("test_attach.bpf.o"), &programs(list))
        .unwrap_or_else(|e| panic!("{e}"));
    let counts = obj.open_map("counts").unwrap();
    let bytes = obj.open_map("bytes").unwrap();
    Loaded {
        obj,
        counts,
        bytes,
        cfg: None,
    }
}

impl Loaded {
    /// Narrow counting to this thread, syscall `nr` and UDP port `port`.
    fn configure(&mut self, tid: u32, nr: u32, port: u16) {
        if self.cfg.is_none() {
            self.cfg = Some(self.obj.open_map("cfg").unwrap());
        }
        let cfg = self.cfg.as_ref().unwrap();
        let mut value = Vec::new();
        for v in [tid, nr, u32::from(port), 0] {
            value.extend_from_slice(&v.to_ne_bytes());
        }
        cfg.update(&0u32.to_ne_bytes(), &value, 0).unwrap();
    }

    fn count(&self, slot: u32) -> u64 {
        read_u64(&self.counts, slot)
    }

    fn bytes(&self, slot: u32) -> u64 {
        read_u64(&self.bytes, slot)
    }
}

fn read_u64(map: &KernelMap, slot: u32) -> u64 {
    let v = map
        .lookup(&slot.to_ne_bytes())
        .unwrap()
        .expect("array slots exist");
    u64::from_ne_bytes(v[..8].try_into().unwrap())
}

fn tid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}

#[test]
fn tp_btf_counts_the_syscalls_of_this_thread() {
    if !require_root() {
        return;
    }
    let mut l = load(&["{name: on_sys_enter, tpBtf: sys_enter}".into()]);
    l.configure(tid(), libc::SYS_getpgid as u32, 0);
    for _ in 0..500 {
        // SAFETY: getpgid has no memory arguments.
        unsafe { libc::getpgid(0) };
    }
    assert_eq!(l.count(TP_BTF), 500);
}

/// The uprobe target in this test binary; `no_mangle` keeps its symbol.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn conductor_attach_test_target(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(3)
}

#[test]
fn uprobe_and_uretprobe_count_calls_of_a_function_in_the_test_binary() {
    if !require_root() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let pid = std::process::id();
    let probe = format!(
        "{{target: {}, symbol: conductor_attach_test_target, pid: {pid}}}",
        exe.display()
    );
    let l = load(&[
        format!("{{name: on_uprobe_bin, uprobe: {probe}}}"),
        format!("{{name: on_uretprobe_bin, uretprobe: {probe}}}"),
    ]);
    let f: extern "C" fn(u64) -> u64 = std::hint::black_box(conductor_attach_test_target);
    let mut sum = 0u64;
    for i in 0..137 {
        sum = sum.wrapping_add(f(i));
    }
    assert_eq!(sum, 3 * (0..137).sum::<u64>());
    assert_eq!(l.count(UPROBE_BIN), 137);
    assert_eq!(l.count(URETPROBE_BIN), 137);
}

#[test]
fn uprobe_counts_calls_of_a_libc_symbol_by_library_name() {
    if !require_root() {
        return;
    }
    let pid = std::process::id();
    let l = load(&[format!(
        "{{name: on_uprobe_libc, uprobe: {{target: libc.so.6, symbol: getppid, pid: {pid}}}}}"
    )]);
    for _ in 0..91 {
        // SAFETY: no arguments.
        unsafe { libc::getppid() };
    }
    assert_eq!(l.count(UPROBE_LIBC), 91);
}

/// Two network namespaces joined by a veth pair: `a_if` (10.213.N.1) in
/// `a`, `b_if` (10.213.N.2) in `b`. Deleted on drop.
struct VethPair {
    a: String,
    b: String,
    a_if: String,
    b_if: String,
    a_addr: String,
    b_addr: String,
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

impl VethPair {
    fn new(tag: &str) -> Self {
        let id = std::process::id() % 100_000;
        let n = id % 250;
        let p = VethPair {
            a: format!("cdt-{tag}a-{id}"),
            b: format!("cdt-{tag}b-{id}"),
            a_if: format!("{tag}a{id}"),
            b_if: format!("{tag}b{id}"),
            a_addr: format!("10.213.{n}.1"),
            b_addr: format!("10.213.{n}.2"),
        };
        ip(&["netns", "add", &p.a]);
        ip(&["netns", "add", &p.b]);
        ip(&[
            "link", "add", &p.a_if, "netns", &p.a, "type", "veth", "peer", "name", &p.b_if,
            "netns", &p.b,
        ]);
        for (ns, dev, addr) in [(&p.a, &p.a_if, &p.a_addr), (&p.b, &p.b_if, &p.b_addr)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        p
    }

    /// Run `f` on a thread inside network namespace `ns`.
    fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).unwrap();
                use std::os::fd::AsRawFd;
                // SAFETY: a valid namespace descriptor; affects this thread only.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn xdp_tc_and_tcx_count_real_packets_on_a_veth_between_two_namespaces() {
    if !require_root() {
        return;
    }
    let pair = VethPair::new("x");
    let port = 47_000 + (std::process::id() % 1000) as u16;
    let iface = pair.a_if.clone();
    // Attach inside namespace `a`, where the interface is; the links keep
    // working from any thread afterwards.
    let mut l = VethPair::in_netns(&pair.a, || {
        load(&[
            format!("{{name: on_xdp, xdp: {{interface: {iface}, mode: driver}}}}"),
            format!("{{name: on_tc, tc: {{interface: {iface}, direction: ingress, priority: 7}}}}"),
            format!("{{name: on_tcx, tcx: {{interface: {iface}, direction: ingress}}}}"),
        ])
    });
    l.configure(0, 0, port);

    const N: u64 = 50;
    const PAYLOAD: usize = 100;
    let (from, to) = (pair.b_addr.clone(), pair.a_addr.clone());
    VethPair::in_netns(&pair.b, || {
        let sock = std::net::UdpSocket::bind((from.as_str(), 0)).unwrap();
        for _ in 0..N {
            sock.send_to(&[7u8; PAYLOAD], (to.as_str(), port)).unwrap();
        }
    });
    // Ethernet + IPv4 + UDP headers + payload, as seen on ingress.
    let frame = (14 + 20 + 8 + PAYLOAD) as u64;
    wait_for(
        Duration::from_secs(10),
        "all datagrams to reach the XDP, TC and TCX programs",
        || {
            format!(
                "xdp {} tc {} tcx {}",
                l.count(XDP),
                l.count(TC),
                l.count(TCX)
            )
        },
        || (l.count(XDP) >= N && l.count(TC) >= N && l.count(TCX) >= N).then_some(()),
    );
    for (slot, what) in [(XDP, "xdp"), (TC, "tc"), (TCX, "tcx")] {
        assert_eq!(l.count(slot), N, "{what} packets");
        assert_eq!(l.bytes(slot), N * frame, "{what} bytes");
    }
    drop(l);
    drop(pair);
}

/// A cgroup v2 directory for the test, removed on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(test: &str) -> Self {
        let root = conductor_kernel::features::cgroup2_root().unwrap();
        let dir = Path::new(&root).join(format!("conductor-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TestCgroup(dir)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
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

#[test]
fn cgroup_skb_counts_the_bytes_a_process_in_the_cgroup_sends() {
    if !require_root() {
        return;
    }
    let cgroup = TestCgroup::new("skb");
    let port = 46_000 + (std::process::id() % 1000) as u16;
    let mut l = load(&[format!(
        "{{name: on_cgroup_egress, cgroupSkb: {{cgroupPath: {}, direction: egress}}}}",
        cgroup.0.display()
    )]);
    l.configure(0, 0, port);

    // Datagrams sent from this process (outside the cgroup) are not counted.
    let outside = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    outside.send_to(&[0u8; 10], ("127.0.0.1", port)).unwrap();

    let procs = cgroup.0.join("cgroup.procs");
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(20):\n    s.sendto(bytes(100 + i), ('127.0.0.1', {port}))\n"
    );
    let mut child = Command::new(python());
    child.args(["-c", &script]).stdin(Stdio::null());
    // SAFETY: only async-signal-safe work between fork and exec (open,
    // write, close through std's thin wrappers).
    unsafe {
        child.pre_exec(move || std::fs::write(&procs, b"0"));
    }
    let status = child.status().unwrap();
    assert!(status.success());
    // IPv4 + UDP headers + payloads of 100..120 bytes.
    let expected: u64 = (0..20).map(|i| 20 + 8 + 100 + i).sum();
    assert_eq!(l.count(CGROUP_SKB), 20);
    assert_eq!(l.bytes(CGROUP_SKB), expected);
}

#[test]
fn cgroup_sock_and_sock_addr_count_the_sockets_and_connects_of_a_process_in_the_cgroup() {
    if !require_root() {
        return;
    }
    let cgroup = TestCgroup::new("sock");
    let path = cgroup.0.display().to_string();
    let l = load(&[
        format!("{{name: on_sock_create, cgroupSock: {{cgroupPath: {path}}}}}"),
        format!("{{name: on_connect4, cgroupSockAddr: {{cgroupPath: {path}}}}}"),
    ]);
    // This process is outside the cgroup: not counted.
    let outside = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    outside.connect("127.0.0.1:9").unwrap();

    let procs = cgroup.0.join("cgroup.procs");
    let script = "import socket\nfor i in range(7):\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    s.connect(('127.0.0.1', 9))\n    s.close()\n";
    let mut child = Command::new(python());
    child.args(["-c", script]).stdin(Stdio::null());
    // SAFETY: as in the cgroupSkb test.
    unsafe {
        child.pre_exec(move || std::fs::write(&procs, b"0"));
    }
    assert!(child.status().unwrap().success());
    assert_eq!(l.count(CGROUP_SOCK), 7);
    assert_eq!(l.count(CGROUP_CONNECT), 7);
}

#[test]
fn lsm_counts_file_opens_or_names_the_inactive_bpf_lsm() {
    if !require_root() {
        return;
    }
    object::prepare_host();
    let list = ["{name: on_file_open, lsm: file_open}".to_owned()];
    // LSM programs need the BPF LSM active and BPF trampolines.
    for (feature, name) in [
        (Feature::BpfLsm, "bpf-lsm"),
        (Feature::Trampolines, "bpf-trampolines"),
    ] {
        if let Err(why) = feature.probe() {
            let err = object::load(&artifact("test_attach.bpf.o"), &programs(&list)).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("missing kernel feature: {name}")) && msg.contains(&why),
                "{msg}"
            );
            eprintln!("LSM programs cannot attach here, refusal checked: {msg}");
            return;
        }
    }
    let mut l = load(&list);
    let file = tempfile::NamedTempFile::new().unwrap();
    l.configure(tid(), 0, 0);
    for _ in 0..33 {
        drop(std::fs::File::open(file.path()).unwrap());
    }
    l.configure(0, 0, 0);
    assert_eq!(l.count(LSM), 33);
}

/// `voluntary + nonvoluntary` context switches of a process so far.
fn context_switches(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn wait_stopped(pid: u32) {
    wait_for(
        Duration::from_secs(10),
        "the child to stop itself",
        String::new,
        || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            (state == "T").then_some(())
        },
    );
}

#[test]
fn a_software_perf_event_samples_every_context_switch_of_a_process() {
    if !require_root() {
        return;
    }
    // The child stops itself before and after its work, so the probe sees
    // exactly the switches the kernel counts for it in between.
    let script = "import os, signal, time\nos.kill(os.getpid(), signal.SIGSTOP)\nfor _ in range(40):\n    time.sleep(0.002)\nos.kill(os.getpid(), signal.SIGSTOP)\n";
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_stopped(pid);
    let before = context_switches(pid);
    let l = load(&[format!(
        "{{name: on_perf, perfEvent: {{software: contextSwitches, period: 1, pid: {pid}}}}}"
    )]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    // Wait until it has run (its counter moved) and stopped again.
    wait_for(
        Duration::from_secs(20),
        "the child to do its work and stop again",
        String::new,
        || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            (state == "T" && context_switches(pid) >= before + 40).then_some(())
        },
    );
    let switched = context_switches(pid) - before;
    let sampled = l.count(PERF);
    let _ = child.kill();
    let _ = child.wait();
    assert!(switched >= 40, "{switched}");
    assert_eq!(sampled, switched, "perf samples vs the kernel's counters");
}

#[test]
fn kprobes_and_trampolines_load_but_refuse_to_attach_naming_the_missing_feature() {
    if !require_root() {
        return;
    }
    let object = artifact("test_attach.bpf.o");
    for (list, feature, expected) in [
        (
            vec![
                "{name: on_kprobe, kprobe: {function: do_unlinkat}}".to_owned(),
                "{name: on_kretprobe, kretprobe: {function: do_unlinkat}}".to_owned(),
            ],
            Feature::Kprobes,
            "missing kernel feature: kprobes",
        ),
        (
            vec![
                "{name: on_fentry, fentry: do_unlinkat}".to_owned(),
                "{name: on_fexit, fexit: do_unlinkat}".to_owned(),
            ],
            Feature::Trampolines,
            "missing kernel feature: bpf-trampolines",
        ),
    ] {
        let before = program_ids("on_kprobe").len() + program_ids("on_fentry").len();
        let result = object::load(&object, &programs(&list));
        match feature.probe() {
            Err(why) => {
                let msg = result.unwrap_err().to_string();
                assert!(msg.contains(expected), "{msg}");
                assert!(msg.contains(&why), "{msg}");
                assert!(!msg.contains("os error"), "a bare errno: {msg}");
                eprintln!("{msg}");
            }
            Ok(()) => {
                // Another kernel: the programs attach for real.
                let loaded = result.unwrap_or_else(|e| panic!("{e}"));
                drop(loaded);
            }
        }
        let after = program_ids("on_kprobe").len() + program_ids("on_fentry").len();
        assert_eq!(after, before, "a failed load left programs behind");
    }
    // kprobes fail at attach, so the program was verified: a verifier
    // problem would have been reported instead of the missing feature.
    if Feature::Kprobes.probe().is_err() {
        let msg = object::load(
            &object,
            &programs(&["{name: on_kprobe, kprobe: {function: do_unlinkat}}".to_owned()]),
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("CONFIG_KPROBES"), "{msg}");
    }
}

#[test]
fn a_program_of_another_kind_is_refused_with_both_kinds_named() {
    if !require_root() {
        return;
    }
    let msg = object::load(
        &artifact("test_attach.bpf.o"),
        &programs(&["{name: on_xdp, tcx: {interface: lo, direction: ingress}}".to_owned()]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("on_xdp") && msg.contains("TC classifier") && msg.contains("Xdp"),
        "{msg}"
    );
    let msg = object::load(
        &artifact("test_attach.bpf.o"),
        &programs(&[
            "{name: on_uprobe_bin, uretprobe: {target: libc.so.6, symbol: getppid}}".to_owned(),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("uretprobe"), "{msg}");
}

#[test]
fn an_unmodified_libbpf_object_auto_attaches_from_its_section_names() {
    if !require_root() {
        return;
    }
    object::prepare_host();
    // No programs listed: tp_btf/, raw_tp/, tracepoint/ and uprobe/<lib>:<fn>
    // attach; `xdp` names no interface and is left out.
    let mut obj =
        object::load(&artifact("libbpf_style.bpf.o"), &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        program_ids("not_attached").is_empty(),
        "the xdp program was loaded"
    );
    let target = obj.open_map("target").unwrap();
    let hits = obj.open_map("hits").unwrap();
    target
        .update(&0u32.to_ne_bytes(), &u64::from(tid()).to_ne_bytes(), 0)
        .unwrap();
    target
        .update(
            &1u32.to_ne_bytes(),
            &(libc::SYS_getpgid as u64).to_ne_bytes(),
            0,
        )
        .unwrap();
    for _ in 0..64 {
        // SAFETY: no memory arguments.
        unsafe {
            libc::getpgid(0);
            libc::getppid();
        }
    }
    target
        .update(&0u32.to_ne_bytes(), &0u64.to_ne_bytes(), 0)
        .unwrap();
    let got: Vec<u64> = (0..5).map(|k| read_u64(&hits, k)).collect();
    // tp_btf, raw_tp, tracepoint, uprobe; xdp never ran.
    assert_eq!(got, [64, 64, 64, 64, 0]);
    drop(obj);
}

#[test]
fn global_data_from_the_spec_changes_what_the_program_counts() {
    if !require_root() {
        return;
    }
    let text = format!(
        "name: g\ncomponent: /unused.wasm\nbytecode:\n  path: {}\n  globalData: {{weight: 5}}\n  programs:\n    - {{name: on_weighted, rawTracepoint: sys_enter}}\n",
        artifact("test_attach.bpf.o").display()
    );
    let spec = PluginSpec::from_yaml(&text).unwrap();
    let b = spec.bytecode.unwrap();
    let object = artifact("test_attach.bpf.o");
    // The same object with the default (1) and with weight 5 from the spec.
    for (globals, weight) in [
        (std::collections::BTreeMap::new(), 1),
        (b.global_data.clone(), 5),
    ] {
        let mut obj = object::load_capped(&object, &b.programs, &globals, u64::MAX)
            .unwrap_or_else(|e| panic!("{e}"));
        let counts = obj.open_map("counts").unwrap();
        let bytes = obj.open_map("bytes").unwrap();
        let mut l = Loaded {
            obj,
            counts,
            bytes,
            cfg: None,
        };
        l.configure(tid(), libc::SYS_getpgid as u32, 0);
        for _ in 0..40 {
            // SAFETY: no memory arguments.
            unsafe { libc::getpgid(0) };
        }
        l.configure(0, 0, 0);
        assert_eq!(l.count(WEIGHTED), 40);
        assert_eq!(l.bytes(WEIGHTED), 40 * weight, "weight {weight}");
    }
    // Checked against the object: size and name.
    for (name, value, expected) in [
        (
            "small",
            300,
            "300 cannot be set in a `__u8`: out of range 0..=255",
        ),
        ("nope", 1, "no global variable \"nope\"; it has: "),
    ] {
        let globals = [(name.to_owned(), conductor_api::GlobalValue::Unsigned(value))]
            .into_iter()
            .collect();
        let msg = object::load_capped(&object, &b.programs, &globals, u64::MAX)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(expected) && msg.contains(&format!("globalData.{name}")),
            "{msg}"
        );
    }
}

/// `target_comm` is a `const volatile char[16]`: a string from the spec
/// makes `on_comm` count the syscalls of the thread of that name, and only
/// those; the default (empty) counts none.
#[test]
fn typed_global_data_from_the_spec_filters_by_comm() {
    if !require_root() {
        return;
    }
    let object = artifact("test_attach.bpf.o");
    let comm = format!("cndg{}", std::process::id() % 100_000);
    let text = format!(
        "name: g\ncomponent: /unused.wasm\nbytecode:\n  path: {}\n  globalData: {{target_comm: {comm}}}\n  programs:\n    - {{name: on_comm, rawTracepoint: sys_enter}}\n",
        object.display()
    );
    let spec = PluginSpec::from_yaml(&text).unwrap();
    let b = spec.bytecode.unwrap();
    let run_named = |name: &str| {
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(|| {
                for _ in 0..40 {
                    // SAFETY: no memory arguments.
                    unsafe { libc::getpgid(0) };
                }
            })
            .unwrap()
            .join()
            .unwrap();
    };
    let empty = std::collections::BTreeMap::new();
    for (globals, want) in [(&b.global_data, 40), (&empty, 0)] {
        let mut obj = object::load_capped(&object, &b.programs, globals, u64::MAX)
            .unwrap_or_else(|e| panic!("{e}"));
        let counts = obj.open_map("counts").unwrap();
        let bytes = obj.open_map("bytes").unwrap();
        let mut l = Loaded {
            obj,
            counts,
            bytes,
            cfg: None,
        };
        l.configure(0, libc::SYS_getpgid as u32, 0);
        run_named(&comm);
        // Another name is not counted.
        run_named("cndg-other");
        l.configure(0, 0, 0);
        assert_eq!(l.count(BY_COMM), want, "globals {globals:?}");
    }
    // Checked against the BTF type: the error names the variable, its
    // type and the value.
    let long: std::collections::BTreeMap<_, _> = [(
        "target_comm".to_owned(),
        conductor_api::GlobalValue::Text("a-name-of-sixteen".into()),
    )]
    .into();
    let msg = object::load_capped(&object, &b.programs, &long, u64::MAX)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("globalData.target_comm: \"a-name-of-sixteen\" cannot be set in a `char[16]`: 17 bytes do not fit"),
        "{msg}"
    );
    let wrong: std::collections::BTreeMap<_, _> =
        [("weight".to_owned(), conductor_api::GlobalValue::Bool(true))].into();
    let msg = object::load_capped(&object, &b.programs, &wrong, u64::MAX)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("cannot be set in a `__u32`: give an integer"),
        "{msg}"
    );
}
