//! `conductor build`: compile a plugin project (as `conductor new` writes
//! one) and assemble its package.
//!
//! 1. every `bpf/*.bpf.c` with clang (`-O2 -g -target bpf`, headers from
//!    `bpf/include/`) into `target/bpf/<name>.bpf.o`;
//! 2. the component: a Rust project (`Cargo.toml`) with `cargo build
//!    --release --target wasm32-wasip2`; a JavaScript one (`src/plugin.js`)
//!    with componentize-js, a Python one (`src/app.py`) with
//!    componentize-py, both against the project's `wit/`, into
//!    `target/<component>`;
//! 3. checks: the programs and maps `package.yaml` names exist in the
//!    object, the component's event records (`record!`) have the layouts of
//!    the C structs in the object's BTF, the component implements a
//!    `conductor:plugin` version this host links;
//! 4. the package directory (default `target/conductor/`): `package.yaml`
//!    and the files it names, which `conductor push --package` takes.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use conductor_api::package::{PACKAGE_FILE, PackageManifest};
use conductor_oci as oci;

const WASM_TARGET: &str = "wasm32-wasip2";

/// Build the plugin project in DIR into a package directory.
#[derive(clap::Args)]
pub struct BuildArgs {
    /// The project (the directory holding package.yaml, bpf/ and Cargo.toml, src/plugin.js or src/app.py).
    #[arg(long, short = 'C', value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Where to write the package [default: DIR/target/conductor].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The C compiler for the BPF programs (clang; it needs the `bpf` target).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "clang",
        env = "CONDUCTOR_CLANG"
    )]
    pub clang: PathBuf,
    /// componentize-js, for a JavaScript project [default: the project's
    /// node_modules/.bin/componentize-js (`npm install`), else on PATH].
    #[arg(long, value_name = "PATH", env = "CONDUCTOR_COMPONENTIZE_JS")]
    pub componentize_js: Option<PathBuf>,
    /// componentize-py, for a Python project [default: the project's
    /// .venv/bin/componentize-py, else on PATH].
    #[arg(long, value_name = "PATH", env = "CONDUCTOR_COMPONENTIZE_PY")]
    pub componentize_py: Option<PathBuf>,
}

/// The language of a project's component, from the files it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Rust,
    Js,
    Python,
}

/// The JavaScript and Python entry points, as `conductor new` writes them.
const JS_ENTRY: &str = "src/plugin.js";
const PYTHON_ENTRY: &str = "src/app.py";

fn project_lang(dir: &Path) -> anyhow::Result<Lang> {
    let found: Vec<Lang> = [
        ("Cargo.toml", Lang::Rust),
        (JS_ENTRY, Lang::Js),
        (PYTHON_ENTRY, Lang::Python),
    ]
    .into_iter()
    .filter(|(f, _)| dir.join(f).is_file())
    .map(|(_, l)| l)
    .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => bail!(
            "{} has no component source: a project has Cargo.toml (Rust), {JS_ENTRY} (JavaScript) or {PYTHON_ENTRY} (Python), as `conductor new --lang rust|js|python` writes them",
            dir.display()
        ),
        many => bail!(
            "{} has the sources of more than one language ({many:?}): keep one of Cargo.toml, {JS_ENTRY}, {PYTHON_ENTRY}",
            dir.display()
        ),
    }
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    let file = dir.join(PACKAGE_FILE);
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "cannot read {}: run `conductor build` in a plugin project (one made by `conductor new`), or pass -C DIR",
            file.display()
        )
    })?;
    let manifest = PackageManifest::from_yaml(&text, &file.display().to_string())?;
    let spec = &manifest.spec;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| dir.join("target").join("conductor"));

    // 1. The BPF objects.
    let objects = compile_bpf(dir, &args.clang)?;
    let bytecode = match &spec.bytecode {
        Some(b) => {
            let want = plain_file_name(&b.path, "spec.bytecode.path")?;
            let (_, object) = objects
                .iter()
                .find(|(name, _)| *name == want)
                .or(match objects.as_slice() {
                    [only] => Some(only),
                    _ => None,
                })
                .with_context(|| {
                    format!(
                        "{PACKAGE_FILE} names the BPF object {want:?}, but bpf/ builds {}: name one of them in spec.bytecode.path",
                        names(objects.iter().map(|o| o.0.as_str()))
                    )
                })?;
            check_object(object, spec)?;
            Some((want, object.clone()))
        }
        None => None,
    };

    // 2. The component.
    let component_name = plain_file_name(&spec.component, "spec.component")?;
    let component = match project_lang(dir)? {
        Lang::Rust => build_component(dir)?,
        Lang::Js => componentize(
            dir,
            Toolchain::Js,
            args.componentize_js.as_deref(),
            component_name,
        )?,
        Lang::Python => componentize(
            dir,
            Toolchain::Python,
            args.componentize_py.as_deref(),
            component_name,
        )?,
    };

    // 3. The package directory: package.yaml and the files it names.
    if out.join(PACKAGE_FILE).is_file() {
        std::fs::remove_dir_all(&out)
            .with_context(|| format!("cannot clear the old package in {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let copy = |from: &Path, to: &Path| -> anyhow::Result<()> {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::copy(from, to)
            .map(|_| ())
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))
    };
    std::fs::write(out.join(PACKAGE_FILE), &text)
        .with_context(|| format!("cannot write {}", out.join(PACKAGE_FILE).display()))?;
    copy(&component, &out.join(component_name))?;
    if let Some((name, object)) = &bytecode {
        copy(object, &out.join(name))?;
    }
    for d in &manifest.dashboards {
        copy(&dir.join(d), &out.join(d))?;
    }

    // 4. The component's event records (`record!`) against the C structs
    // in the object's BTF: the same check the host makes at load.
    if let Some((_, object)) = &bytecode {
        check_record_layouts(&component, object)?;
    }

    // 5. The component against the host (the same checks `push` makes).
    let package = oci::Assembled::from_dir(&out)?;
    let wit = package.manifest.wit_version.clone().unwrap_or_default();
    if !conductor_api::wit::is_supported(&wit) {
        bail!(
            "{} implements {}@{wit}, which this conductor does not link (it links {}): build it with a conductor-sdk of a supported version",
            component.display(),
            conductor_api::wit::PACKAGE,
            conductor_api::wit::supported_ranges()
        );
    }
    println!("built {}", out.display());
    for (title, media_type, bytes) in &package.files {
        println!("  {title}\t{media_type}\t{} bytes", bytes.len());
    }
    println!("  WIT: {}@{wit}", conductor_api::wit::PACKAGE);
    println!(
        "push it with: conductor push --package {} oci://REGISTRY/REPOSITORY:TAG",
        out.display()
    );
    Ok(())
}

/// `name` if it names a file without a directory (what a package holds).
fn plain_file_name<'a>(name: &'a str, field: &str) -> anyhow::Result<&'a str> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        bail!(
            "{PACKAGE_FILE}: {field} is {name:?}; in a project it names the built file by its file name alone (e.g. my_plugin.wasm), which `conductor build` writes into the package"
        );
    }
    Ok(name)
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "nothing".into()
    } else {
        v.join(", ")
    }
}

/// Compile every `DIR/bpf/*.bpf.c` into `DIR/target/bpf/`; the objects by
/// file name (`x.bpf.c` -> `x.bpf.o`).
fn compile_bpf(dir: &Path, clang: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let bpf = dir.join("bpf");
    let mut sources: Vec<PathBuf> = match std::fs::read_dir(&bpf) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
            .collect(),
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", bpf.display())),
    };
    sources.sort();
    let build_dir = dir.join("target").join("bpf");
    if !sources.is_empty() {
        std::fs::create_dir_all(&build_dir)
            .with_context(|| format!("cannot create {}", build_dir.display()))?;
    }
    let arch = bpf_target_arch()?;
    let mut objects = Vec::new();
    for src in sources {
        let file = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = format!("{}.o", file.trim_end_matches(".c"));
        let object = build_dir.join(&name);
        eprintln!("compiling {}", src.display());
        let output = Command::new(clang)
            .args(["-O2", "-g", "-target", "bpf"])
            .arg(format!("-D__TARGET_ARCH_{arch}"))
            .arg("-I")
            .arg(bpf.join("include"))
            .args(["-Wall", "-c"])
            .arg(&src)
            .arg("-o")
            .arg(&object)
            .stdin(Stdio::null())
            .output();
        let output = match output {
            Ok(o) => o,
            Err(e) if e.kind() == ErrorKind::NotFound => bail!(
                "{} is not installed: it compiles the BPF C. Install it with `apt-get install clang libbpf-dev` (or point --clang / CONDUCTOR_CLANG at a clang)",
                clang.display()
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot run {}", clang.display()));
            }
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            let hint = if stderr.contains("bpf/bpf_helpers.h' file not found") {
                "\nthe libbpf headers are missing: install them with `apt-get install libbpf-dev`"
            } else if stderr.contains("'vmlinux.h' file not found") {
                "\nbpf/include/vmlinux.h is missing: copy it from a new project (`conductor new`), or dump your kernel's with `bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/include/vmlinux.h`"
            } else if stderr.contains("No available targets are compatible")
                || stderr.contains("unknown target triple 'bpf'")
            {
                "\nthis clang cannot target bpf: install Debian's clang (`apt-get install clang`)"
            } else {
                ""
            };
            bail!(
                "clang could not compile {}:\n{}{hint}",
                src.display(),
                stderr.trim_end()
            );
        }
        if !stderr.trim().is_empty() {
            eprint!("{stderr}");
        }
        objects.push((name, object));
    }
    Ok(objects)
}

/// The `__TARGET_ARCH_*` libbpf's bpf_tracing.h expects for this machine.
fn bpf_target_arch() -> anyhow::Result<&'static str> {
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

/// The programs and maps the spec names exist in the object.
/// Refuse a component whose event records disagree with the BPF object's
/// C structs (both layouts named); warn about records the object has no
/// BTF for.
fn check_record_layouts(component: &Path, object: &Path) -> anyhow::Result<()> {
    use conductor_kernel::layout::Checked;
    let wasm =
        std::fs::read(component).with_context(|| format!("cannot read {}", component.display()))?;
    let records = conductor_runtime::engine::record_layouts(&wasm, component)?;
    let checked = conductor_kernel::object::check_records(object, &records, u64::MAX)
        .with_context(|| {
            format!(
                "the event records of {} do not match the C structs of {}: change the `record!` or the C struct so that they agree",
                component.display(),
                object.display()
            )
        })?;
    for c in checked {
        if let Checked::NoBtf { rust } = c {
            eprintln!(
                "warning: {} has no BTF for record {rust}: add `CONDUCTOR_RECORD(<struct>);` to the BPF C so that its layout is checked",
                object.display()
            );
        }
    }
    Ok(())
}

fn check_object(object: &Path, spec: &conductor_api::PluginSpec) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(object).with_context(|| format!("cannot read {}", object.display()))?;
    let (programs, maps) = object_names(&bytes)
        .with_context(|| format!("{} is not a BPF ELF object", object.display()))?;
    let shown = object.display();
    let Some(b) = &spec.bytecode else {
        return Ok(());
    };
    if b.programs.is_empty() {
        let auto = conductor_kernel::sections::auto_attach(&bytes)
            .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
        if auto.programs.is_empty() {
            bail!(
                "{PACKAGE_FILE} lists no programs and no program of {shown} says where it attaches in its SEC() name: list them in spec.bytecode.programs (the object has {})",
                names(programs.iter().map(String::as_str))
            );
        }
    }
    for p in &b.programs {
        if !programs.contains(&p.name) {
            bail!(
                "{PACKAGE_FILE} attaches program {:?}, which {shown} does not define (its programs: {}): rename it in spec.bytecode.programs or in the C source",
                p.name,
                names(programs.iter().map(String::as_str))
            );
        }
    }
    for m in spec.maps.iter().filter(|m| m.pin.is_none()) {
        if !maps.contains(&m.name) {
            bail!(
                "{PACKAGE_FILE} grants map {:?}, which {shown} does not define (its maps: {}): rename it in spec.maps or in the C source",
                m.name,
                names(maps.iter().map(String::as_str))
            );
        }
    }
    Ok(())
}

/// The program (function symbols of executable, non-`.` sections) and map
/// (symbols of `.maps` / `maps`) names of a BPF object.
fn object_names(bytes: &[u8]) -> anyhow::Result<(BTreeSet<String>, BTreeSet<String>)> {
    use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
    let file = object::File::parse(bytes)?;
    let (mut programs, mut maps) = (BTreeSet::new(), BTreeSet::new());
    for sym in file.symbols() {
        let (Ok(name), Some(index)) = (sym.name(), sym.section_index()) else {
            continue;
        };
        let Ok(section) = file.section_by_index(index).and_then(|s| s.name()) else {
            continue;
        };
        if section == ".maps" || section == "maps" {
            if sym.kind() == SymbolKind::Data || sym.is_global() {
                maps.insert(name.to_owned());
            }
        } else if sym.kind() == SymbolKind::Text && sym.is_global() && !section.starts_with('.') {
            programs.insert(name.to_owned());
        }
    }
    Ok((programs, maps))
}

/// `cargo build --release --target wasm32-wasip2` in `dir`; the component.
fn build_component(dir: &Path) -> anyhow::Result<PathBuf> {
    check_wasm_target(dir)?;
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{} is missing: the project's component is a Rust crate (see `conductor new`)",
            manifest.display()
        );
    }
    eprintln!("building the component (cargo build --release --target {WASM_TARGET})");
    let output = Command::new(cargo())
        .current_dir(dir)
        .args(["build", "--release", "--target", WASM_TARGET])
        .args(["--message-format", "json-render-diagnostics"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo: install Rust with rustup (https://rustup.rs)")?;
    if !output.status.success() {
        bail!(
            "cargo could not build the component in {} (its errors are above)",
            dir.display()
        );
    }
    // The cdylib's .wasm of the crate at `dir` (target dirs may be anywhere).
    let wanted = manifest.canonicalize().unwrap_or(manifest);
    let mut found = None;
    for line in output.stdout.split(|&b| b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact"
            || msg["manifest_path"].as_str().map(Path::new) != Some(&wanted)
        {
            continue;
        }
        if let Some(files) = msg["filenames"].as_array() {
            found = files
                .iter()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
                .map(PathBuf::from)
                .or(found);
        }
    }
    found.with_context(|| {
        format!(
            "cargo built no .wasm for {}: its [lib] needs crate-type = [\"cdylib\"]",
            wanted.display()
        )
    })
}

#[derive(Debug, Clone, Copy)]
enum Toolchain {
    Js,
    Python,
}

impl Toolchain {
    fn program(self) -> &'static str {
        match self {
            Toolchain::Js => "componentize-js",
            Toolchain::Python => "componentize-py",
        }
    }

    /// Where the project's own install puts it.
    fn local(self, dir: &Path) -> PathBuf {
        match self {
            Toolchain::Js => dir.join("node_modules/.bin/componentize-js"),
            Toolchain::Python => dir.join(".venv/bin/componentize-py"),
        }
    }

    /// How to install it, for the error when it is missing.
    fn install_hint(self) -> &'static str {
        match self {
            Toolchain::Js => {
                "run `npm install` in the project (its package.json pins @bytecodealliance/componentize-js 0.23.0 and @bytecodealliance/preview2-shim 0.25.0), or point --componentize-js / CONDUCTOR_COMPONENTIZE_JS at one (in a checkout, `cargo xtask deps` installs it as target/tools/node/node_modules/.bin/componentize-js)"
            }
            Toolchain::Python => {
                "run `python3 -m venv .venv && .venv/bin/pip install -r requirements.txt` in the project (componentize-py==0.25.1), or point --componentize-py / CONDUCTOR_COMPONENTIZE_PY at one (in a checkout, `cargo xtask deps` installs it as target/tools/python/bin/componentize-py)"
            }
        }
    }
}

/// Build a JavaScript or Python component with its toolchain's defaults
/// against the project's `wit/` into `DIR/target/<component>`.
fn componentize(
    dir: &Path,
    toolchain: Toolchain,
    given: Option<&Path>,
    component: &str,
) -> anyhow::Result<PathBuf> {
    let wit = dir.join("wit");
    if !wit.is_dir() {
        bail!(
            "{} is missing: it holds the WIT package conductor:plugin the component is built against (copy a new project's, from `conductor new --lang {}`)",
            wit.display(),
            if matches!(toolchain, Toolchain::Js) {
                "js"
            } else {
                "python"
            }
        );
    }
    let program = match given {
        Some(p) => p.to_owned(),
        None => {
            let local = toolchain.local(dir);
            if local.is_file() {
                local
            } else {
                PathBuf::from(toolchain.program())
            }
        }
    };
    let target = dir.join("target");
    std::fs::create_dir_all(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let out = target.join(component);
    // Relative paths from the project: what the README shows.
    let rel_out = Path::new("target").join(component);
    let mut cmd = Command::new(&program);
    cmd.current_dir(dir);
    match toolchain {
        Toolchain::Js => {
            cmd.arg(JS_ENTRY)
                .args(["--wit", "wit", "--world-name", "plugin", "-o"])
                .arg(&rel_out);
        }
        Toolchain::Python => {
            cmd.args([
                "-d",
                "wit",
                "-w",
                "plugin",
                "componentize",
                "-p",
                "src",
                "app",
                "-o",
            ])
            .arg(&rel_out);
        }
    }
    eprintln!("building the component ({})", toolchain.program());
    let status = match cmd.stdin(Stdio::null()).stdout(Stdio::inherit()).status() {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "{} is not installed ({} not found): {}",
            toolchain.program(),
            program.display(),
            toolchain.install_hint()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot run {}", program.display())),
    };
    if !status.success() || !out.is_file() {
        bail!(
            "{} could not build the component in {} (its errors are above)",
            toolchain.program(),
            dir.display()
        );
    }
    Ok(out)
}

/// `$CARGO` when run by cargo, else `cargo`.
fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The project's toolchain has the wasm target (asked in `dir`, so a
/// rust-toolchain.toml there counts).
fn check_wasm_target(dir: &Path) -> anyhow::Result<()> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .current_dir(dir)
        .args(["--print", "sysroot"])
        .stdin(Stdio::null())
        .output();
    let sysroot = match output {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        Ok(o) => bail!(
            "rustc --print sysroot failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            bail!("Rust is not installed: install it with rustup (https://rustup.rs)")
        }
        Err(e) => return Err(e).context("cannot run rustc"),
    };
    if !sysroot.join("lib/rustlib").join(WASM_TARGET).is_dir() {
        bail!(
            "the Rust target {WASM_TARGET} is not installed in {}: install it with `rustup target add {WASM_TARGET}`",
            sysroot.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_files_are_plain_names() {
        assert_eq!(plain_file_name("x.wasm", "c").unwrap(), "x.wasm");
        for bad in ["", "target/x.wasm", "..", "/x.wasm"] {
            let err = plain_file_name(bad, "spec.component").unwrap_err();
            assert!(err.to_string().contains("spec.component"), "{err}");
        }
    }
}
