//! A uprobe whose target is a path inside a pod's container, through
//! `conductor run` with the fake API server: the "container" is a process
//! in its own mount namespace, placed in a pod's container cgroup, where a
//! tmpfs holds a copy of libc that the node does not have at that path.
//! The host finds the process through its workload cache, attaches to
//! `getppid` of that copy through `/proc/<pid>/root/...`, and counts
//! exactly the container's calls (the node's own libc is another file).

mod catalog;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use catalog::*;
use conductor_kernel::maps::KernelMap;
use conductor_kernel::shared::pin_path;
use conductor_test_support::*;
use fake_apiserver::FakeApiServer;

// The `counts` slot of on_uprobe_libc (enum slot in test_attach.bpf.c).
const UPROBE_LIBC: u32 = 2;

fn libc() -> String {
    let libc = std::fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
    libc.display().to_string()
}

/// A Python process in `cgroup`, in a mount namespace of its own where a
/// tmpfs over `dir` holds a copy of libc it loads; it calls getppid() as
/// many times as each line it reads says and answers `done`.
fn container_process(cgroup: &Path, dir: &Path) -> Child {
    let program = [
        "import os, sys",
        "print('ready', flush=True)",
        "for line in sys.stdin:",
        "    for _ in range(int(line)): os.getppid()",
        "    print('done', flush=True)",
    ]
    .join("\n");
    std::fs::write(dir.join("..").join("container.py"), &program).unwrap();
    let script = format!(
        "mount -t tmpfs cndtr-ct {dir} && cp {libc} {dir}/libc.so.6 && \
         LD_LIBRARY_PATH={dir} exec {python} {dir}/../container.py",
        dir = dir.display(),
        libc = libc(),
        python = python(),
    );
    let procs = cgroup.join("cgroup.procs");
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    // SAFETY: only a write(2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, b"0"));
    }
    cmd.spawn().unwrap()
}

fn spec(name: &str, target: &str, pod: &str) -> String {
    format!(
        r#"
name: {name}
component: {}
bytecode:
  path: {}
  programs:
    - name: on_uprobe_libc
      uprobe: {{target: "{target}", symbol: getppid, pod: {pod}}}
maps:
  - {{name: counts, expose: true}}
"#,
        path_str(&artifact("testing_steady.wasm")),
        path_str(&artifact("test_attach.bpf.o")),
    )
}

#[test]
fn a_uprobe_on_a_file_inside_a_pods_container_counts_its_calls() {
    if !require_root() {
        return;
    }
    let cgroups = TestCgroups::new("uprobe-pod");
    let pod = TestPod::new(&cgroups, 41, "shop", "api-1", &[]);
    let api = FakeApiServer::start();
    api.create(&pod.pod);
    let kube = tempfile::tempdir().unwrap();
    let kubeconfig = kube.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);

    // Where the container has its libc: empty on the node.
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("app");
    std::fs::create_dir(&dir).unwrap();
    let target = dir.join("libc.so.6");
    let mut container = container_process(&pod.cgroup, &dir);
    let mut out = BufReader::new(container.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    assert!(
        !target.exists(),
        "the node must not see the container's file"
    );

    let k8s = [
        // Opening another process's root (`/proc/<pid>/root`) is a ptrace
        // access check (the container's process has every capability),
        // and a uprobe on every process of a file needs CAP_SYS_ADMIN here.
        "--keep-capabilities",
        "bpf,perfmon,net_admin,sys_admin,sys_ptrace",
        "--node-name",
        NODE,
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--cgroup-root",
        cgroups.root.to_str().unwrap(),
    ];
    let name = "uprobe-in-pod";
    let host = Host::start_with(
        &spec(name, &path_str(&target), "{namespace: shop, name: api-1}"),
        None,
        &k8s,
        &[],
    );
    let log = host.log_text();
    assert!(
        log.contains("uprobe target inside the pod's container"),
        "{log}"
    );
    let counts = KernelMap::from_pin("counts", &pin_path(name, "counts")).unwrap();
    let read = || {
        let v = counts
            .lookup(&UPROBE_LIBC.to_ne_bytes())
            .unwrap()
            .expect("array slot");
        u64::from_ne_bytes(v[..8].try_into().unwrap())
    };
    let mut stdin = container.stdin.take().unwrap();
    for (calls, total) in [(41, 41), (9, 50)] {
        writeln!(stdin, "{calls}").unwrap();
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "done\n");
        // The node's processes call getppid() of the node's libc: not counted.
        assert_eq!(read(), total);
    }
    assert!(host.stop().success());

    // Without CAP_SYS_PTRACE the container's root cannot be opened: the
    // load is refused saying what to keep.
    let dir2 = tempfile::tempdir().unwrap();
    let refused = |spec_text: &str, args: &[&str]| {
        std::fs::write(dir2.path().join("spec.yaml"), spec_text).unwrap();
        let out = Command::new(conductor_bin())
            .arg("run")
            .arg(dir2.path().join("spec.yaml"))
            .args(["--metrics-addr", "127.0.0.1:0", "--cache-dir"])
            .arg(dir2.path().join("cache"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{stderr}");
        stderr
    };
    let stderr = refused(
        &spec(
            "uprobe-no-ptrace",
            &path_str(&target),
            "{namespace: shop, name: api-1}",
        ),
        &k8s[2..],
    );
    assert!(
        stderr.contains("pod shop/api-1: cannot open the root of its process")
            && stderr.contains("the host needs CAP_SYS_PTRACE"),
        "{stderr}"
    );
    drop(stdin);
    assert!(container.wait().unwrap().success());

    // A pod with no process on this node: the load is refused, naming it.
    let stderr = refused(
        &spec(
            "uprobe-no-pod",
            "/lib/libc.so.6",
            "{namespace: shop, name: nowhere}",
        ),
        &k8s,
    );
    assert!(
        stderr.contains(
            "program \"on_uprobe_libc\": pod shop/nowhere: no process of it runs on this node"
        ),
        "{stderr}"
    );
    drop(cgroups);
}
