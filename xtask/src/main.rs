//! `cargo xtask`: eBPFConductor's build and test driver.
//!
//! On a fresh Debian machine with Rust installed through rustup, these two
//! commands are all a new user needs:
//!
//! ```text
//! cargo xtask demo   # build everything, run the exec-counter plugin on live events
//! cargo xtask test   # build everything, run the whole test suite
//! ```
//!
//! `cargo xtask docs` regenerates the manual's command-line and metric
//! references (docs/src/reference/) from the code.
//!
//! Every external command is printed before it runs (`$ cargo build ...`)
//! and inherits the terminal, so what the task does can be replayed by hand.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// Debian packages the build needs, each with a way to tell that what it
/// provides is present (so a machine with the tools installed some other way
/// is not required to have the packages). Add packages here.
const APT_PACKAGES: &[(&str, Probe)] = &[
    ("clang", Probe::Command("clang")),
    ("llvm", Probe::Command("llvm-objdump")),
    ("libbpf-dev", Probe::File("/usr/include/bpf/bpf_helpers.h")),
    // The ring-buffer benchmark: libbpf-rs builds libbpf from source (libelf,
    // zlib, pkg-config) and the plot's labels need a font.
    ("libelf-dev", Probe::File("/usr/include/libelf.h")),
    ("zlib1g-dev", Probe::File("/usr/include/zlib.h")),
    ("pkg-config", Probe::Command("pkg-config")),
    (
        "fonts-dejavu-core",
        Probe::File("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    ),
    // prometheus-client's protobuf model (read by the OTLP exporter) is
    // generated at build time and imports the well-known types.
    ("protobuf-compiler", Probe::Command("protoc")),
    (
        "libprotobuf-dev",
        Probe::File("/usr/include/google/protobuf/timestamp.proto"),
    ),
    // The metrics tests scrape the host with a real Prometheus and lint the
    // exposition with promtool (same package).
    ("prometheus", Probe::Command("promtool")),
    // The OCI registry (CNCF distribution 2.8) the OCI tests run on loopback.
    ("docker-registry", Probe::Command("docker-registry")),
    // The stock gRPC clients the daemon tests run (Python's grpcio, Node's
    // grpc-js), installed from PyPI and npm into target/clients.
    (
        "python3-venv",
        Probe::Runs(&["python3", "-c", "import venv, ensurepip"]),
    ),
    ("nodejs", Probe::Command("node")),
    ("npm", Probe::Command("npm")),
    // The attach tests make veth pairs between network namespaces (`ip`).
    ("iproute2", Probe::Command("ip")),
    // The reliability tests freeze a state directory (`chattr +i`) and run
    // the daemon under a descriptor limit (`prlimit`).
    ("e2fsprogs", Probe::Command("chattr")),
    ("util-linux", Probe::Command("prlimit")),
    // The test script `conductor new` writes (run by the author test)
    // scrapes the plugin's /metrics with curl.
    ("curl", Probe::Command("curl")),
    // The ebpf_exporter built-in's pci_* decoders name ids from the PCI ID
    // database (the path ebpf_exporter reads); its tests check known ids.
    ("pci.ids", Probe::File("/usr/share/misc/pci.ids")),
];

/// Where the stock-client tests keep their pinned client packages
/// (requirements.txt, package.json and package-lock.json).
const CLIENTS_DIR: &str = "crates/cli/tests/clients";

/// The bpfman release the bpfman tests run (the `bpfman` crate's CLI), built
/// from crates.io into target/tools/bpfman-<version> once per machine.
const BPFMAN_VERSION: &str = "0.6.0";

/// The JavaScript and Python component toolchains, pinned (componentize-js
/// and preview2-shim in package.json/package-lock.json, componentize-py in
/// requirements.txt) and installed into target/tools/{node,python}.
const JS_PLUGINS_DIR: &str = "plugins/js";
const PYTHON_PLUGINS_DIR: &str = "plugins/python";

/// The WIT package JavaScript and Python plugins are built against (the
/// current version: crates/sdk/wit/v<wit::CURRENT>).
const PLUGIN_WIT: &str = "crates/sdk/wit/v0.2.1";

/// The rustup target the plugins are compiled for.
const WASM_TARGET: &str = "wasm32-wasip2";

/// What the demo runs and where its metrics are served by default.
const DEMO_SPEC: &str = "examples/exec-counter.yaml";
const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

#[derive(Debug, Clone, Copy)]
enum Probe {
    /// An executable of this name is on `PATH`.
    Command(&'static str),
    /// This file exists.
    File(&'static str),
    /// This command runs and exits successfully.
    Runs(&'static [&'static str]),
}

impl Probe {
    fn present(self) -> bool {
        match self {
            Probe::Command(name) => find_in_path(name).is_some(),
            Probe::File(path) => Path::new(path).is_file(),
            Probe::Runs(argv) => Command::new(argv[0])
                .args(&argv[1..])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
        }
    }
}

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "eBPFConductor build and test driver"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build needs: clang, llvm, libbpf headers, protoc,
    /// Prometheus, Python and Node (apt, as root), the wasm32-wasip2 Rust
    /// target, the pinned gRPC clients the tests run (PyPI and npm, into
    /// target/clients) and bpfman (crates.io, into target/tools).
    Deps,
    /// Compile the BPF objects and the wasm plugins into target/plugins/.
    Build,
    /// cargo fmt --check and cargo clippy -D warnings, in both workspaces.
    Lint,
    /// Build, then run the whole test suite (needs root for the BPF tests).
    Test {
        /// Arguments passed on to `cargo test`, after `--`
        /// (e.g. `cargo xtask test -- -p conductor-runtime maps`).
        #[arg(last = true)]
        cargo_args: Vec<OsString>,
    },
    /// Regenerate the manual's generated pages (docs/src/reference/cli.md
    /// and metrics.md) from the code; their tests fail when they are stale.
    Docs,
    /// Build, then run the exec-counter plugin on live exec events, with
    /// Prometheus metrics served over HTTP. Ctrl-C stops it.
    Demo {
        /// Address the metrics endpoint listens on.
        #[arg(long, default_value = DEFAULT_METRICS_ADDR)]
        metrics_addr: SocketAddr,
        /// Further arguments for `conductor run`, after `--`.
        #[arg(last = true)]
        conductor_args: Vec<OsString>,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli.task) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(task: Task) -> Result<()> {
    let ws = Workspace::locate()?;
    match task {
        // Everything, including what only the tests use (bpfman).
        Task::Deps => deps(&ws).and_then(|()| install_bpfman(&ws)),
        Task::Build => build(&ws),
        Task::Lint => lint(&ws),
        Task::Test { cargo_args } => test(&ws, &cargo_args),
        Task::Docs => docs(&ws),
        Task::Demo {
            metrics_addr,
            conductor_args,
        } => demo(&ws, metrics_addr, &conductor_args),
    }
}

/// Where things are.
struct Workspace {
    /// The repository root (the root Cargo workspace).
    root: PathBuf,
    /// The root workspace's target directory (`CARGO_TARGET_DIR` or `target/`).
    target: PathBuf,
}

impl Workspace {
    fn locate() -> Result<Self> {
        // xtask/ is a member of the root workspace: its parent is the root,
        // wherever cargo xtask was started from.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has no parent directory")?
            .to_path_buf();
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => {
                // Relative values are relative to the directory cargo was
                // started in, which is ours.
                std::env::current_dir()
                    .context("cannot read the current directory")?
                    .join(dir)
            }
            _ => root.join("target"),
        };
        Ok(Self { root, target })
    }

    fn plugins(&self) -> PathBuf {
        self.root.join("plugins")
    }

    /// Where the built BPF objects and wasm components go.
    fn artifacts(&self) -> PathBuf {
        self.target.join("plugins")
    }

    /// `path` relative to the root if it is inside it, for messages.
    fn show<'a>(&self, path: &'a Path) -> std::borrow::Cow<'a, str> {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
    }

    fn cargo(&self) -> Cmd {
        Cmd::new("cargo").dir(&self.root)
    }
}

// ---- deps ------------------------------------------------------------------

fn deps(ws: &Workspace) -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(_, probe)| !probe.present())
        .map(|(package, _)| *package)
        .collect();
    if !missing.is_empty() {
        install_packages(&missing)?;
        let still: Vec<&str> = APT_PACKAGES
            .iter()
            .filter(|(_, probe)| !probe.present())
            .map(|(package, _)| *package)
            .collect();
        if !still.is_empty() {
            bail!(
                "packages {} were installed but what they provide is still missing; check the output above",
                still.join(", ")
            );
        }
    }
    ensure_rust_target(ws)?;
    install_clients(ws)?;
    install_component_toolchains(ws)
}

/// componentize-js (npm, into target/tools/node) and componentize-py (PyPI,
/// a venv in target/tools/python), at the versions pinned in plugins/js and
/// plugins/python. Reinstalled only when a pin changes, like the clients.
fn install_component_toolchains(ws: &Workspace) -> Result<()> {
    let tools = ws.target.join("tools");
    let js = ws.root.join(JS_PLUGINS_DIR);
    let node = tools.join("node");
    let mut pins = read(&js.join("package.json"))?;
    pins.extend(read(&js.join("package-lock.json"))?);
    if !installed(&node, &pins) {
        fresh_dir(&node)?;
        for file in ["package.json", "package-lock.json"] {
            fs::copy(js.join(file), node.join(file))
                .with_context(|| format!("cannot copy {file} to {}", node.display()))?;
        }
        Cmd::new("npm")
            .dir(&node)
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .run()?;
        mark_installed(&node, &pins)?;
    }

    let requirements = ws.root.join(PYTHON_PLUGINS_DIR).join("requirements.txt");
    let python = tools.join("python");
    let pins = read(&requirements)?;
    if !installed(&python, &pins) {
        fresh_dir(&python)?;
        Cmd::new("python3")
            .args(["-m", "venv"])
            .arg(&python)
            .run()?;
        Cmd::new(python.join("bin").join("pip"))
            .args(["install", "--quiet", "--no-input", "-r"])
            .arg(&requirements)
            .run()?;
        mark_installed(&python, &pins)?;
    }
    Ok(())
}

/// `cargo install bpfman` at [`BPFMAN_VERSION`] into
/// target/tools/bpfman-<version> (the version is in the path, so a new pin
/// installs beside the old one and a rerun costs nothing). Its build
/// compiles the BPF C of its XDP/TC dispatchers, which includes
/// `<asm/types.h>` from the multiarch include directory (Debian's gcc
/// finds it there, clang's BPF target does not). The build directory is
/// removed afterwards: only the binary is kept.
fn install_bpfman(ws: &Workspace) -> Result<()> {
    let root = ws
        .target
        .join("tools")
        .join(format!("bpfman-{BPFMAN_VERSION}"));
    if root.join("bin").join("bpfman").is_file() {
        return Ok(());
    }
    let build = ws.target.join("tools").join("bpfman-build");
    let multiarch = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    let include = match std::env::var("C_INCLUDE_PATH") {
        Ok(v) if !v.is_empty() => format!("{v}:{multiarch}"),
        _ => multiarch,
    };
    let started = Instant::now();
    Cmd::new("cargo")
        .dir(&ws.root)
        .args(["install", "--locked", "bpfman", "--version"])
        .arg(format!("={BPFMAN_VERSION}"))
        .arg("--root")
        .arg(&root)
        .arg("--target-dir")
        .arg(&build)
        .env("C_INCLUDE_PATH", include)
        .run()?;
    eprintln!(
        "installed bpfman {BPFMAN_VERSION} into {} in {:.0?}",
        ws.show(&root),
        started.elapsed()
    );
    fs::remove_dir_all(&build).with_context(|| format!("cannot remove {}", build.display()))
}

/// Only the missing packages: a tool installed some other way (e.g. Node
/// from another repository) is left alone.
fn install_packages(missing: &[&str]) -> Result<()> {
    let packages = missing;
    let command = format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    );
    if find_in_path("apt-get").is_none() {
        bail!(
            "missing build prerequisites ({}) and this is not a Debian/Ubuntu system: \
             install clang, llvm, the libbpf headers (bpf/bpf_helpers.h) and, for the tests, docker-registry (CNCF distribution) with your package manager",
            missing.join(", ")
        );
    }
    if !is_root() {
        bail!(
            "missing build prerequisites: {}. Install them as root with:\n  sudo sh -c '{command}'",
            missing.join(", ")
        );
    }
    eprintln!(
        "missing build prerequisites: {}; installing",
        missing.join(", ")
    );
    Cmd::new("apt-get").arg("update").run()?;
    Cmd::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages)
        .run()
}

fn ensure_rust_target(ws: &Workspace) -> Result<()> {
    if find_in_path("rustup").is_none() {
        // Not a rustup install: the target's standard library must be in
        // the sysroot already.
        let out = Command::new("rustc")
            .args(["--print", "sysroot"])
            .current_dir(&ws.root)
            .output()
            .context("cannot run rustc")?;
        let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if Path::new(&sysroot)
            .join("lib/rustlib")
            .join(WASM_TARGET)
            .is_dir()
        {
            return Ok(());
        }
        bail!(
            "the Rust target {WASM_TARGET} is not installed and rustup is not available: \
             install Rust with rustup (https://rustup.rs), or add the {WASM_TARGET} standard library"
        );
    }
    // Run in the root so that rust-toolchain.toml selects the toolchain.
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(&ws.root)
        .output()
        .context("cannot run `rustup target list --installed`")?;
    if !out.status.success() {
        bail!(
            "`rustup target list --installed` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|t| t.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    Cmd::new("rustup")
        .dir(&ws.root)
        .args(["target", "add", WASM_TARGET])
        .run()
}

/// The stock gRPC clients (crates/cli/tests/clients): a Python venv with
/// grpcio in target/clients/python and grpc-js in target/clients/node.
/// Each is reinstalled only when its pinned versions change (a copy of the
/// pin files is kept beside it), so reruns cost nothing.
fn install_clients(ws: &Workspace) -> Result<()> {
    let src = ws.root.join(CLIENTS_DIR);
    let dest = ws.target.join("clients");

    let requirements = src.join("requirements.txt");
    let python = dest.join("python");
    let pins = read(&requirements)?;
    if !installed(&python, &pins) {
        fresh_dir(&python)?;
        Cmd::new("python3")
            .args(["-m", "venv"])
            .arg(&python)
            .run()?;
        Cmd::new(python.join("bin").join("pip"))
            .args(["install", "--quiet", "--no-input", "-r"])
            .arg(&requirements)
            .run()?;
        mark_installed(&python, &pins)?;
    }

    let node = dest.join("node");
    let mut pins = read(&src.join("package.json"))?;
    pins.extend(read(&src.join("package-lock.json"))?);
    if !installed(&node, &pins) {
        fresh_dir(&node)?;
        for file in ["package.json", "package-lock.json"] {
            fs::copy(src.join(file), node.join(file))
                .with_context(|| format!("cannot copy {file} to {}", node.display()))?;
        }
        // `npm ci`: exactly the lock file's versions.
        Cmd::new("npm")
            .dir(&node)
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .run()?;
        mark_installed(&node, &pins)?;
    }
    Ok(())
}

const INSTALLED_MARK: &str = ".installed-from";

fn installed(dir: &Path, pins: &[u8]) -> bool {
    fs::read(dir.join(INSTALLED_MARK)).is_ok_and(|m| m == pins)
}

fn mark_installed(dir: &Path, pins: &[u8]) -> Result<()> {
    let mark = dir.join(INSTALLED_MARK);
    fs::write(&mark, pins).with_context(|| format!("cannot write {}", mark.display()))
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

// ---- build -----------------------------------------------------------------

fn build(ws: &Workspace) -> Result<()> {
    deps(ws)?;
    let started = Instant::now();
    let artifacts = ws.artifacts();
    fs::create_dir_all(&artifacts)
        .with_context(|| format!("cannot create {}", artifacts.display()))?;

    // BPF objects.
    let plugins = ws.plugins();
    let include = plugins.join("include");
    let mut sources = Vec::new();
    find_bpf_sources(&plugins, &mut sources)?;
    sources.sort();
    let shared_headers = newest_mtime(&include, |p| has_ext(p, "h"))?;
    let mut outputs = BTreeMap::new();
    let (mut bpf_built, mut bpf_fresh) = (0, 0);
    for src in &sources {
        let stem = src
            .file_name()
            .and_then(OsStr::to_str)
            .and_then(|n| n.strip_suffix(".c"))
            .with_context(|| format!("{}: unexpected file name", src.display()))?;
        let out = artifacts.join(format!("{stem}.o"));
        if let Some(other) = outputs.insert(out.clone(), src.clone()) {
            bail!(
                "{} and {} would both be built to {}: rename one",
                ws.show(&other),
                ws.show(src),
                ws.show(&out)
            );
        }
        // Headers next to the source count as well as the shared ones.
        let local_headers = newest_mtime(src.parent().unwrap_or(&plugins), |p| has_ext(p, "h"))?;
        let inputs = [Some(mtime(src)?), shared_headers, local_headers];
        let newest_input = inputs.into_iter().flatten().max();
        if let (Ok(out_time), Some(input_time)) = (mtime(&out), newest_input)
            && out_time > input_time
        {
            bpf_fresh += 1;
            continue;
        }
        Cmd::new("clang")
            .dir(&ws.root)
            .args(["-O2", "-g", "-target", "bpf"])
            .arg(format!("-D__TARGET_ARCH_{}", bpf_target_arch()?))
            .arg("-I")
            .arg(ws.show(&include).as_ref())
            .args(["-Wall", "-Werror", "-c"])
            .arg(ws.show(src).as_ref())
            .arg("-o")
            .arg(ws.show(&out).as_ref())
            .run()?;
        bpf_built += 1;
    }

    // Wasm components: the plugins workspace builds for wasm32-wasip2 only.
    // Its target directory is always plugins/target, even if CARGO_TARGET_DIR
    // is set for the root workspace.
    if !plugins.join("Cargo.toml").is_file() {
        bail!(
            "{} is missing: the plugins workspace is not in this checkout",
            ws.show(&plugins.join("Cargo.toml"))
        );
    }
    Cmd::new("cargo")
        .dir(&plugins)
        .args([
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--target-dir",
            "target",
        ])
        .run()?;
    let wasm_dir = plugins.join("target").join(WASM_TARGET).join("release");
    let mut wasm = 0;
    for entry in read_dir(&wasm_dir)? {
        let path = entry?.path();
        if has_ext(&path, "wasm") && path.is_file() {
            let name = path.file_name().expect("a file has a name");
            let dest = artifacts.join(name);
            fs::copy(&path, &dest)
                .with_context(|| format!("cannot copy {} to {}", path.display(), dest.display()))?;
            wasm += 1;
        }
    }
    if wasm == 0 {
        bail!(
            "the plugins build produced no .wasm file in {}",
            ws.show(&wasm_dir)
        );
    }

    let (polyglot_built, polyglot_fresh) = build_polyglot_plugins(ws)?;

    eprintln!(
        "built {} BPF object{} ({} up to date), copied {} wasm component{} and built {} JavaScript/Python component{} ({} up to date) to {} in {:.1}s",
        bpf_built,
        plural(bpf_built),
        bpf_fresh,
        wasm,
        plural(wasm),
        polyglot_built,
        plural(polyglot_built),
        polyglot_fresh,
        ws.show(&artifacts),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Every plugin folder of plugins/js (with a `plugin.js`) and plugins/python
/// (with an `app.py`), built with the toolchain's defaults against
/// [`PLUGIN_WIT`] into target/plugins/<folder>_{js,py}.wasm (dashes become
/// underscores). A component is rebuilt only when a source file, the WIT,
/// an SDK file or the toolchain pin is newer than it: the builders are not
/// reproducible, so a needless rebuild would also miss the compile cache.
/// Returns (built, up to date).
fn build_polyglot_plugins(ws: &Workspace) -> Result<(usize, usize)> {
    let tools = ws.target.join("tools");
    let wit = ws.root.join(PLUGIN_WIT);
    let shared = [
        newest_mtime(&wit, |p| has_ext(p, "wit"))?,
        newest_mtime_under(&ws.root.join("sdk").join("js"))?,
        newest_mtime_under(&ws.root.join("sdk").join("python"))?,
    ];
    let (mut built, mut fresh) = (0, 0);
    for (lang, dir, entry, suffix) in [
        ("js", JS_PLUGINS_DIR, "plugin.js", "js"),
        ("python", PYTHON_PLUGINS_DIR, "app.py", "py"),
    ] {
        let dir = ws.root.join(dir);
        let mark = tools
            .join(if lang == "js" { "node" } else { "python" })
            .join(INSTALLED_MARK);
        let mut plugins: Vec<PathBuf> = read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(entry).is_file())
            .collect();
        plugins.sort();
        for plugin in plugins {
            let name = plugin
                .file_name()
                .and_then(OsStr::to_str)
                .with_context(|| format!("{}: unexpected folder name", plugin.display()))?
                .replace('-', "_");
            let out = ws.artifacts().join(format!("{name}_{suffix}.wasm"));
            let inputs = [newest_mtime_under(&plugin)?, Some(mtime(&mark)?)];
            let newest_input = shared.iter().chain(&inputs).flatten().max().copied();
            if let (Ok(out_time), Some(input_time)) = (mtime(&out), newest_input)
                && out_time > input_time
            {
                fresh += 1;
                continue;
            }
            let cmd = if lang == "js" {
                Cmd::new(tools.join("node/node_modules/.bin/componentize-js"))
                    .dir(&ws.root)
                    .arg(ws.show(&plugin.join(entry)).as_ref())
                    .arg("--wit")
                    .arg(PLUGIN_WIT)
                    .args(["--world-name", "plugin", "-o"])
                    .arg(ws.show(&out).as_ref())
            } else {
                Cmd::new(tools.join("python/bin/componentize-py"))
                    .dir(&ws.root)
                    .args(["-d", PLUGIN_WIT, "-w", "plugin", "componentize", "-p"])
                    .arg(ws.show(&plugin).as_ref())
                    .args(["-p", "sdk/python/src", "app", "-o"])
                    .arg(ws.show(&out).as_ref())
            };
            cmd.run()?;
            built += 1;
        }
    }
    Ok((built, fresh))
}

/// The newest modification time of any file below `dir` (recursive,
/// skipping node_modules, __pycache__ and dot folders), if any.
fn newest_mtime_under(dir: &Path) -> Result<Option<SystemTime>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut newest = None;
    for entry in read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type()?.is_dir() {
            if name == "node_modules" || name == "__pycache__" || name.starts_with('.') {
                continue;
            }
            newest = newest.max(newest_mtime_under(&path)?);
        } else {
            newest = newest.max(Some(mtime(&path)?));
        }
    }
    Ok(newest)
}

/// Every `*.bpf.c` in a directory named `bpf` below `dir`.
fn find_bpf_sources(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    for entry in read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type()?.is_dir() {
            if name == "target" || name.starts_with('.') {
                continue;
            }
            find_bpf_sources(&path, found)?;
        } else if name.ends_with(".bpf.c") && dir.file_name() == Some(OsStr::new("bpf")) {
            found.push(path);
        }
    }
    Ok(())
}

/// The `__TARGET_ARCH_*` libbpf's bpf_tracing.h expects for this machine.
fn bpf_target_arch() -> Result<&'static str> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        "riscv64" => "riscv",
        "s390x" => "s390",
        "powerpc64" => "powerpc",
        "loongarch64" => "loongarch",
        arch => bail!("building BPF programs on {arch} is not supported"),
    })
}

// ---- lint ------------------------------------------------------------------

fn lint(ws: &Workspace) -> Result<()> {
    deps(ws)?;
    let plugins = ws.plugins();
    let checks = [
        ws.cargo().args(["fmt", "--all", "--", "--check"]),
        ws.cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        Cmd::new("cargo")
            .dir(&plugins)
            .args(["fmt", "--all", "--", "--check"]),
        Cmd::new("cargo").dir(&plugins).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--target",
            WASM_TARGET,
            "--target-dir",
            "target",
            "--",
            "-D",
            "warnings",
        ]),
    ];
    // Run every check, so one run reports every problem.
    let mut failed = Vec::new();
    for check in checks {
        if let Err(e) = check.run() {
            eprintln!("error: {e:#}");
            failed.push(check.to_string());
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} lint check{} failed:\n  {}",
            failed.len(),
            plural(failed.len()),
            failed.join("\n  ")
        );
    }
    eprintln!("lint: all checks passed");
    Ok(())
}

// ---- test ------------------------------------------------------------------

fn test(ws: &Workspace, cargo_args: &[OsString]) -> Result<()> {
    build(ws)?;
    // Only the tests use bpfman; `demo` and `build` do not wait for it.
    install_bpfman(ws)?;
    if !is_root() {
        eprintln!(
            "warning: not running as root: the tests that load BPF programs need root (CAP_BPF, CAP_PERFMON)"
        );
    }
    // `--workspace` would override a package selection passed through.
    // (Only cargo's own arguments count, not those after a second `--`.)
    let selects_packages = cargo_args
        .iter()
        .map(|a| a.to_string_lossy())
        .take_while(|a| a != "--")
        .any(|a| a.starts_with("-p") || a == "--package" || a.starts_with("--package="));
    // The operator's tests drive a real `conductor serve`: a binary of
    // another package, which cargo builds only for that package's own tests
    // (CARGO_BIN_EXE_*). A whole-workspace run builds it for the host's
    // tests before any test runs; a run of selected packages builds it here.
    // Either way the tests are told where it is.
    if selects_packages {
        ws.cargo()
            .args(["build", "-p", "conductor-cli", "--bin", "conductor"])
            .run()?;
    }
    let mut cmd = ws
        .cargo()
        .env("CONDUCTOR_ARTIFACTS", ws.artifacts())
        .env("CONDUCTOR_BIN", ws.target.join("debug").join("conductor"))
        .env(
            "CONDUCTOR_BPFMAN",
            ws.target
                .join("tools")
                .join(format!("bpfman-{BPFMAN_VERSION}"))
                .join("bin")
                .join("bpfman"),
        )
        .arg("test");
    if !selects_packages {
        cmd = cmd.arg("--workspace");
    }
    cmd.args(cargo_args).run()
}

// ---- docs ------------------------------------------------------------------

/// The reference pages are rendered by the drift tests themselves, which
/// write the page instead of comparing when `CONDUCTOR_BLESS` is set.
fn docs(ws: &Workspace) -> Result<()> {
    ws.cargo()
        .env("CONDUCTOR_BLESS", "1")
        .args([
            "test",
            "-p",
            "conductor-cli",
            "-p",
            "conductor-node",
            "--test",
            "reference",
        ])
        .run()?;
    eprintln!("docs: wrote docs/src/reference/cli.md and docs/src/reference/metrics.md");
    Ok(())
}

// ---- demo ------------------------------------------------------------------

fn demo(ws: &Workspace, metrics_addr: SocketAddr, conductor_args: &[OsString]) -> Result<()> {
    build(ws)?;
    ws.cargo()
        .args(["build", "--release", "-p", "conductor-cli"])
        .run()?;
    let conductor = ws.target.join("release").join("conductor");
    let spec = demo_spec(ws)?;
    if !is_root() {
        eprintln!(
            "warning: not running as root: loading BPF programs needs root (CAP_BPF, CAP_PERFMON)"
        );
    }

    // The address to curl: a wildcard listen address is reachable on localhost.
    let mut shown = metrics_addr;
    if shown.ip().is_unspecified() {
        shown.set_ip(match shown.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        });
    }
    eprintln!("metrics: curl -s http://{shown}/metrics | grep exec_counter");
    eprintln!("press Ctrl-C to stop");

    // Run from the root, so the paths shown are the paths used.
    std::env::set_current_dir(&ws.root)
        .with_context(|| format!("cannot change directory to {}", ws.root.display()))?;
    let cmd = Cmd::new(ws.show(&conductor).as_ref())
        .arg("run")
        .arg(ws.show(&spec).as_ref())
        .arg("--metrics-addr")
        .arg(metrics_addr.to_string())
        .args(conductor_args);
    // Replace this process with the host: Ctrl-C reaches it directly (cargo
    // run has already replaced itself with us), and it shuts down cleanly.
    cmd.exec()
}

/// The spec the demo runs. The example refers to the artifacts as
/// `../target/plugins/...`; when CARGO_TARGET_DIR moves them elsewhere, a
/// copy pointing at the real location is written next to them.
fn demo_spec(ws: &Workspace) -> Result<PathBuf> {
    let example = ws.root.join(DEMO_SPEC);
    let artifacts = ws.artifacts();
    if artifacts == ws.root.join("target").join("plugins") {
        return Ok(example);
    }
    let text = fs::read_to_string(&example)
        .with_context(|| format!("cannot read {}", example.display()))?;
    // The copy lives in the artifacts directory, so the paths become bare
    // file names.
    let text = text.replace("../target/plugins/", "");
    let copy = artifacts.join("exec-counter.yaml");
    fs::write(&copy, text).with_context(|| format!("cannot write {}", copy.display()))?;
    Ok(copy)
}

// ---- commands ----------------------------------------------------------------

/// An external command, shown as `$ ...` before it runs.
struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    dir: Option<PathBuf>,
}

impl Cmd {
    fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
            dir: None,
        }
    }

    fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    fn args<I>(mut self, args: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        c.envs(self.envs.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.dir {
            c.current_dir(dir);
        }
        c
    }

    /// Run with inherited stdio; an error unless it exits successfully.
    fn run(&self) -> Result<()> {
        eprintln!("$ {self}");
        let status = self.command().status().with_context(|| {
            format!(
                "cannot run `{self}`: is {} installed?",
                self.program.to_string_lossy()
            )
        })?;
        if !status.success() {
            bail!("`{self}` failed: {status}");
        }
        Ok(())
    }

    /// Replace this process with the command.
    fn exec(&self) -> Result<()> {
        use std::os::unix::process::CommandExt;
        eprintln!("$ {self}");
        let err = self.command().exec();
        Err(err).with_context(|| format!("cannot run `{self}`"))
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Shown relative to the repository root, where every command starts
        // unless it says otherwise.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent();
        if let Some(dir) = &self.dir
            && Some(dir.as_path()) != root
        {
            let shown = root.and_then(|r| dir.strip_prefix(r).ok()).unwrap_or(dir);
            write!(f, "(cd {} && ", quote(shown.as_os_str()))?;
        }
        for (k, v) in &self.envs {
            write!(f, "{}={} ", k.to_string_lossy(), quote(v))?;
        }
        write!(f, "{}", quote(&self.program))?;
        for a in &self.args {
            write!(f, " {}", quote(a))?;
        }
        if self.dir.as_deref().is_some_and(|d| Some(d) != root) {
            write!(f, ")")?;
        }
        Ok(())
    }
}

/// Quote `s` for a POSIX shell if it needs it.
fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

// ---- small helpers -------------------------------------------------------------

fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Whether the effective user is root (from /proc, to need no libc binding).
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn read_dir(dir: &Path) -> Result<fs::ReadDir> {
    fs::read_dir(dir).with_context(|| format!("cannot read directory {}", dir.display()))
}

fn mtime(path: &Path) -> Result<SystemTime> {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .with_context(|| format!("cannot read the modification time of {}", path.display()))
}

/// The newest modification time of the files in `dir` (not recursive)
/// matching `filter`, if any.
fn newest_mtime(dir: &Path, filter: impl Fn(&Path) -> bool) -> Result<Option<SystemTime>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut newest = None;
    for entry in read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && filter(&path) {
            newest = newest.max(Some(mtime(&path)?));
        }
    }
    Ok(newest)
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension() == Some(OsStr::new(ext))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
