//! A real bpfman (the `bpfman` command of the `bpfman` crate, installed by
//! `cargo xtask deps` into `target/tools/bpfman-<version>`), isolated from
//! the machine.
//!
//! bpfman keeps its configuration in `/etc/bpfman` and its state (database,
//! bpffs with the pins) in `/run/bpfman`. Each [`Bpfman`] gets a private
//! mount namespace, held by a `cat` that lives as long as the harness (it
//! exits when the test process goes away and closes its stdin), in which
//! `/etc` and `/run` are overlays whose upper layers are the harness's
//! temporary directory: bpfman's configuration (`[signing]
//! verify_enabled=false`, so `load file` never fetches Sigstore data) and
//! state exist only there, and its bpffs is mounted only there, so the
//! machine is not changed and every pin goes away with the namespace.
//!
//! bpfman also refuses to start unless it can raise `RLIMIT_MEMLOCK` to
//! infinity, which root without `CAP_SYS_RESOURCE` cannot (the kernel has
//! accounted BPF memory by cgroup since 5.11 and ignores the limit). Every
//! command [`Bpfman::enter`]s gets a seccomp filter under which raising
//! `RLIMIT_MEMLOCK` returns success without doing anything; every other
//! system call, and reading the limit, is untouched. The filter is
//! inherited, so `conductor` started this way passes it to the `bpfman`
//! it runs.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The bpfman release `cargo xtask deps` installs.
pub const VERSION: &str = "0.6.0";

/// The `bpfman` command: `CONDUCTOR_BPFMAN`, else the one `cargo xtask
/// deps` installed.
pub fn bpfman_bin() -> PathBuf {
    let path = std::env::var_os("CONDUCTOR_BPFMAN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/tools")
                .join(format!("bpfman-{VERSION}"))
                .join("bin/bpfman")
        });
    assert!(
        path.is_file(),
        "bpfman is missing at {}: install it with `cargo xtask deps` (or set CONDUCTOR_BPFMAN)",
        path.display()
    );
    path.canonicalize().unwrap_or(path)
}

/// bpfman in a private mount namespace (see the module docs).
pub struct Bpfman {
    holder: Child,
    ns: File,
    pub bin: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bpfman {
    /// Set up the namespace. Needs root (call [`crate::require_root`] first).
    pub fn start() -> Self {
        let bin = bpfman_bin();
        let dir = tempfile::tempdir().unwrap();
        for d in ["etc-upper/bpfman", "etc-work", "run-upper", "run-work"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(
            dir.path().join("etc-upper/bpfman/bpfman.toml"),
            "[signing]\nallow_unsigned = true\nverify_enabled = false\n",
        )
        .unwrap();
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        let d = dir.path().display().to_string();
        let overlays = [
            (
                c("/etc"),
                c(&format!(
                    "lowerdir=/etc,upperdir={d}/etc-upper,workdir={d}/etc-work"
                )),
            ),
            (
                c("/run"),
                c(&format!(
                    "lowerdir=/run,upperdir={d}/run-upper,workdir={d}/run-work"
                )),
            ),
        ];
        let (root, overlay) = (c("/"), c("overlay"));
        let mut holder = Command::new("cat");
        holder
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: only system calls between fork and exec, on memory
        // prepared before the fork.
        unsafe {
            holder.pre_exec(move || {
                let check = |r: libc::c_int| {
                    if r == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                check(libc::unshare(libc::CLONE_NEWNS))?;
                check(libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                for (target, options) in &overlays {
                    check(libc::mount(
                        overlay.as_ptr(),
                        target.as_ptr(),
                        overlay.as_ptr(),
                        0,
                        options.as_ptr().cast(),
                    ))?;
                }
                Ok(())
            });
        }
        let holder = holder
            .spawn()
            .expect("cannot set up bpfman's mount namespace (unshare, overlay mounts)");
        let ns = File::open(format!("/proc/{}/ns/mnt", holder.id())).unwrap();
        let bpfman = Self {
            holder,
            ns,
            bin,
            _dir: dir,
        };
        // bpfman creates its directories and mounts its bpffs on first use.
        bpfman.cli(&["list", "programs"]);
        bpfman
    }

    /// Make `cmd` run in bpfman's namespace, allowed to "raise"
    /// RLIMIT_MEMLOCK, with `CONDUCTOR_BPFMAN` naming bpfman.
    pub fn enter(&self, cmd: &mut Command) {
        let ns = self.ns.as_raw_fd();
        cmd.env("CONDUCTOR_BPFMAN", &self.bin);
        // SAFETY: only system calls between fork and exec; `ns` stays open
        // for as long as `self` lives, and the filter is a constant.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns, libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                ignore_memlock_raises()
            });
        }
    }

    /// Run `bpfman args` in the namespace; its stdout. Panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).env("RUST_LOG", "error");
        self.enter(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "bpfman {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Ids of the programs `bpfman list programs` shows, with extra
    /// arguments (e.g. `--metadata-selector k=v`).
    pub fn program_ids(&self, args: &[&str]) -> Vec<u32> {
        let mut all = vec!["list", "programs"];
        all.extend_from_slice(args);
        self.cli(&all)
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// Ids of the programs tagged with plugin `name` by a conductor host.
    pub fn plugin_programs(&self, name: &str) -> Vec<u32> {
        self.program_ids(&[
            "--metadata-selector",
            &format!("conductor.io/plugin={name}"),
        ])
    }

    /// The namespace's mount namespace file, for `nsenter --mount=` (a
    /// process that only opens bpfman's pins needs nothing else).
    pub fn mount_ns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/mnt", self.holder.id()))
    }

    /// `path` as seen inside the namespace (e.g. a pin under /run/bpfman).
    pub fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.holder.id()))
    }
}

impl Drop for Bpfman {
    fn drop(&mut self) {
        // Closing its stdin ends `cat`; the namespace (and bpfman's bpffs
        // with every pin in it) goes with the last process in it.
        drop(self.holder.stdin.take());
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A seccomp filter making `setrlimit(RLIMIT_MEMLOCK, ..)` and
/// `prlimit64(_, RLIMIT_MEMLOCK, new, _)` with a new limit return 0 without
/// effect (x86_64; other architectures pass unfiltered).
fn ignore_memlock_raises() -> std::io::Result<()> {
    const LD: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const NR_PRLIMIT64: u32 = 302;
    const NR_SETRLIMIT: u32 = 160;
    const RLIMIT_MEMLOCK: u32 = 8;
    const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    const SUCCEED: u32 = 0x0005_0000; // SECCOMP_RET_ERRNO with errno 0
    let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // struct seccomp_data: nr @0, arch @4, args[i] @16 + 8i (low word first).
    let filter = [
        /* 0 */ f(LD, 0, 0, 4),
        /* 1 */ f(JEQ, 0, 11, AUDIT_ARCH_X86_64),
        /* 2 */ f(LD, 0, 0, 0),
        /* 3 */ f(JEQ, 0, 6, NR_PRLIMIT64),
        /* 4 */ f(LD, 0, 0, 24),
        /* 5 */ f(JEQ, 0, 7, RLIMIT_MEMLOCK),
        /* 6 */ f(LD, 0, 0, 32),
        /* 7 */ f(JEQ, 0, 6, 0),
        /* 8 */ f(LD, 0, 0, 36),
        /* 9 */ f(JEQ, 3, 4, 0),
        /* 10 */ f(JEQ, 0, 2, NR_SETRLIMIT),
        /* 11 */ f(LD, 0, 0, 16),
        /* 12 */ f(JEQ, 1, 0, RLIMIT_MEMLOCK),
        /* 13 */ f(RET, 0, 0, ALLOW),
        /* 14 */ f(RET, 0, 0, SUCCEED),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `filter`, which outlives the call.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
