//! `conductor new`: a standalone plugin project from a template.
//!
//! The templates are the folders of `templates/` at the repository root
//! (`common/`, shared by every language: the BPF C and the test script;
//! then one per language: `rust/`, `js/`, `python/`), embedded in the
//! binary at build time with `include_dir`, so an installed `conductor`
//! needs no checkout. In file contents `{{name}}` (the plugin's name),
//! `{{crate}}` (its name as an identifier), `{{wit}}` (the WIT version),
//! `{{sdk}}` and `{{sdk_note}}` (the SDK dependency) are replaced; in
//! paths, `__crate__`. Every project also gets the BPF headers this
//! repository's plugins build with (`bpf/include/vmlinux.h`,
//! `bpf/include/conductor.h`). A JavaScript or Python project also gets
//! the current WIT package (`wit/`) and a copy of its language's SDK
//! (`src/conductor/`, `src/conductor_plugin/`): neither SDK is published
//! yet, and componentize-js resolves only relative imports.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use conductor_api::package::{PACKAGE_FILE, PackageManifest};
use include_dir::{Dir, include_dir};

static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../templates");
/// The WIT packages, one folder per version (`v0.2.1/`).
static WIT: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../sdk/wit");

/// The JavaScript and Python SDKs, as copied into a new project.
const SDK_JS: &[(&str, &str)] = &[
    (
        "src/conductor/index.js",
        include_str!("../../../../sdk/js/index.js"),
    ),
    (
        "src/conductor/index.d.ts",
        include_str!("../../../../sdk/js/index.d.ts"),
    ),
    (
        "src/conductor/package.json",
        include_str!("../../../../sdk/js/package.json"),
    ),
];
const SDK_PYTHON: &[(&str, &str)] = &[(
    "src/conductor_plugin/__init__.py",
    include_str!("../../../../sdk/python/src/conductor_plugin/__init__.py"),
)];

/// The hand-written CO-RE header the repository's own plugins use (see its
/// comment for why it is not a dump of one kernel's BTF).
const VMLINUX_H: &str = include_str!("../../../../plugins/include/vmlinux.h");
const CONDUCTOR_H: &str = include_str!("../../../../plugins/include/conductor.h");

/// Where the SDK comes from while it is not on crates.io.
const SDK_GIT: &str = "https://github.com/ebpfconductor/ebpfconductor";

/// The languages a plugin's user side can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A Rust crate built with conductor-sdk for wasm32-wasip2.
    Rust,
    /// JavaScript built with componentize-js (npm).
    Js,
    /// Python built with componentize-py (PyPI).
    Python,
}

impl Lang {
    /// The folder of `templates/` holding this language's project.
    fn template(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Python => "python",
        }
    }

    /// The SDK files copied into the project (none for Rust: a dependency).
    fn sdk_files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lang::Rust => &[],
            Lang::Js => SDK_JS,
            Lang::Python => SDK_PYTHON,
        }
    }
}

/// Write a new plugin project (BPF C, a component, package.yaml, README
/// and a test on real events) into a new directory NAME.
#[derive(clap::Args)]
pub struct NewArgs {
    /// The plugin's name (lowercase letters, digits and `-`; it names the
    /// directory, the crate, the plugin and its metrics).
    pub name: String,
    /// The language of the plugin's user side.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
    /// Where to create the project directory NAME.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Depend on the SDK at this path (a checkout's `crates/sdk`)
    /// [default: this conductor's own checkout if it is still where it was
    /// built, else --sdk-git].
    #[arg(long, value_name = "DIR", conflicts_with = "sdk_git")]
    pub sdk_path: Option<PathBuf>,
    /// Depend on the SDK from this git repository.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = SDK_GIT)]
    pub sdk_git: Option<String>,
}

pub fn run(args: NewArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let project = args.dir.join(&args.name);
    if project.exists() {
        bail!(
            "{} already exists: choose another name or --dir",
            project.display()
        );
    }
    let sdk = match args.lang {
        Lang::Rust => sdk_source(args.sdk_path.as_deref(), args.sdk_git.as_deref())?,
        lang => {
            if args.sdk_path.is_some() || args.sdk_git.is_some() {
                bail!(
                    "--sdk-path and --sdk-git are for Rust projects: a {} project gets a copy of its SDK in src/",
                    lang.template()
                );
            }
            Sdk {
                toml: String::new(),
                note: format!("{} copied into src/", conductor_api::wit::CURRENT),
            }
        }
    };
    let files = render(args.lang, &args.name, &sdk)?;
    for (rel, text, executable) in &files {
        let path = project.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        if *executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", path.display()))?;
        }
    }
    println!(
        "created {} ({} plugin, SDK {})",
        project.display(),
        args.lang.template(),
        sdk.note
    );
    println!("next:");
    println!("  cd {}", project.display());
    match args.lang {
        Lang::Rust => {}
        Lang::Js => println!("  npm install                          # the pinned componentize-js"),
        Lang::Python => println!(
            "  python3 -m venv .venv && .venv/bin/pip install -r requirements.txt  # the pinned componentize-py"
        ),
    }
    println!("  conductor build                      # -> target/conductor/");
    println!("  sudo conductor run target/conductor  # run it here");
    println!("  sudo sh tests/run-on-events.sh       # its test, on real events");
    println!("  conductor push --package target/conductor oci://REGISTRY/REPOSITORY:TAG");
    Ok(())
}

/// A plugin name: a DNS label that is also a crate name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!(
            "{name:?} is not a plugin name: use lowercase letters, digits and '-', starting with a letter (e.g. exec-counter)"
        );
    }
    Ok(())
}

/// The SDK dependency written into the project's Cargo.toml.
#[derive(Debug)]
struct Sdk {
    /// A TOML inline table.
    toml: String,
    /// Where it points, for people.
    note: String,
}

fn sdk_source(path: Option<&Path>, git: Option<&str>) -> anyhow::Result<Sdk> {
    let git_sdk = |url: &str| Sdk {
        toml: format!("{{ git = {} }}", toml_string(url)),
        note: format!("from git {url}"),
    };
    if let Some(url) = git {
        return Ok(git_sdk(url));
    }
    let path = match path {
        Some(p) => {
            let p = p
                .canonicalize()
                .with_context(|| format!("--sdk-path {}: no such directory", p.display()))?;
            if !is_sdk(&p) {
                bail!(
                    "--sdk-path {}: not the conductor-sdk crate (give a checkout's crates/sdk)",
                    p.display()
                );
            }
            p
        }
        // The checkout this binary was built from, if it is still there.
        None => match Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../sdk")
            .canonicalize()
        {
            Ok(p) if is_sdk(&p) => p,
            _ => return Ok(git_sdk(SDK_GIT)),
        },
    };
    let shown = path.display().to_string();
    Ok(Sdk {
        toml: format!("{{ path = {} }}", toml_string(&shown)),
        note: format!("at {shown}"),
    })
}

fn is_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .is_ok_and(|t| t.contains("name = \"conductor-sdk\""))
}

/// A TOML basic string (JSON's escapes are valid TOML ones).
fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The project's files: relative path, contents, executable.
fn render(lang: Lang, name: &str, sdk: &Sdk) -> anyhow::Result<Vec<(PathBuf, String, bool)>> {
    let krate = name.replace('-', "_");
    let wit = conductor_api::wit::CURRENT;
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &krate)
            .replace("{{wit}}", wit)
            .replace("{{sdk}}", &sdk.toml)
            .replace("{{sdk_note}}", &sdk.note)
    };
    let mut out = Vec::new();
    for folder in ["common", lang.template()] {
        let dir = TEMPLATES
            .get_dir(folder)
            .with_context(|| format!("this conductor was built without templates/{folder}"))?;
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            stack.extend(d.dirs());
            for f in d.files() {
                let rel = f.path().strip_prefix(folder).with_context(|| {
                    format!("template file {} is outside its folder", f.path().display())
                })?;
                let rel = PathBuf::from(rel.to_string_lossy().replace("__crate__", &krate));
                let text = f.contents_utf8().with_context(|| {
                    format!("template file {} is not UTF-8", f.path().display())
                })?;
                let executable = rel.extension().is_some_and(|e| e == "sh");
                out.push((rel, fill(text), executable));
            }
        }
    }
    for (file, text) in [("vmlinux.h", VMLINUX_H), ("conductor.h", CONDUCTOR_H)] {
        out.push((Path::new("bpf/include").join(file), text.to_owned(), false));
    }
    if lang != Lang::Rust {
        let version = format!("v{wit}");
        let dir = WIT.get_dir(&version).with_context(|| {
            format!("this conductor was built without crates/sdk/wit/{version}")
        })?;
        for f in dir.files() {
            let file = f
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let (Some(file), Some(text)) = (file, f.contents_utf8()) else {
                continue;
            };
            out.push((Path::new("wit").join(file), text.to_owned(), false));
        }
        for (rel, text) in lang.sdk_files() {
            out.push((PathBuf::from(rel), (*text).to_owned(), false));
        }
    }
    // The package's default spec must be one the host accepts.
    if let Some((_, text, _)) = out.iter().find(|(p, _, _)| p == Path::new(PACKAGE_FILE)) {
        PackageManifest::from_yaml(text, PACKAGE_FILE)
            .with_context(|| format!("the template's {PACKAGE_FILE} is not valid for {name:?}"))?;
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_dns_labels_and_crate_names() {
        for good in ["execs", "exec-counter", "a1"] {
            check_name(good).unwrap();
        }
        for bad in ["", "Execs", "1x", "x-", "x_y", "x.y", &"a".repeat(64)] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("not a plugin name"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_rust_template_renders_with_every_placeholder_filled() {
        let sdk = Sdk {
            toml: "{ path = \"/sdk\" }".into(),
            note: "at /sdk".into(),
        };
        let files = render(Lang::Rust, "my-probe", &sdk).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|(p, _, _)| p.display().to_string())
            .collect();
        for want in [
            "Cargo.toml",
            ".cargo/config.toml",
            "src/lib.rs",
            "bpf/my_probe.bpf.c",
            "bpf/include/vmlinux.h",
            "bpf/include/conductor.h",
            "package.yaml",
            "README.md",
            "tests/run-on-events.sh",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        for (path, text, _) in &files {
            assert!(
                !text.contains("{{") && !path.to_string_lossy().contains("__crate__"),
                "{} has an unfilled placeholder",
                path.display()
            );
        }
        let cargo = &files
            .iter()
            .find(|f| f.0 == Path::new("Cargo.toml"))
            .unwrap()
            .1;
        assert!(cargo.contains("name = \"my-probe\""), "{cargo}");
        assert!(
            cargo.contains("conductor-sdk = { path = \"/sdk\" }"),
            "{cargo}"
        );
        let script = files
            .iter()
            .find(|f| f.0 == Path::new("tests/run-on-events.sh"))
            .unwrap();
        assert!(script.2, "the test script is executable");
        assert!(
            script
                .1
                .contains("my_probe__execs_total{plugin=\\\"my-probe\\\"")
        );
    }

    #[test]
    fn the_js_and_python_templates_carry_their_sdk_wit_and_bpf_c() {
        let sdk = Sdk {
            toml: String::new(),
            note: String::new(),
        };
        for (lang, source, sdk_file) in [
            (Lang::Js, "src/plugin.js", "src/conductor/index.js"),
            (
                Lang::Python,
                "src/app.py",
                "src/conductor_plugin/__init__.py",
            ),
        ] {
            let files = render(lang, "my-probe", &sdk).unwrap();
            let has = |want: &str| files.iter().any(|f| f.0 == Path::new(want));
            for want in [
                source,
                sdk_file,
                "wit/world.wit",
                "wit/metrics.wit",
                "bpf/my_probe.bpf.c",
                "bpf/include/vmlinux.h",
                "package.yaml",
                "README.md",
                "tests/run-on-events.sh",
            ] {
                assert!(has(want), "{lang:?}: {want} missing");
            }
            assert!(!has("Cargo.toml") && !has("src/lib.rs"), "{lang:?}");
            for (path, text, _) in &files {
                assert!(
                    !text.contains("{{") && !path.to_string_lossy().contains("__crate__"),
                    "{}: {} has an unfilled placeholder",
                    lang.template(),
                    path.display()
                );
            }
            let world = &files
                .iter()
                .find(|f| f.0 == Path::new("wit/world.wit"))
                .unwrap()
                .1;
            assert!(
                world.contains(&format!("conductor:plugin@{}", conductor_api::wit::CURRENT)),
                "{world}"
            );
            let yaml = &files
                .iter()
                .find(|f| f.0 == Path::new("package.yaml"))
                .unwrap()
                .1;
            assert!(yaml.contains("component: my_probe.wasm"), "{yaml}");
        }
    }

    #[test]
    fn the_sdk_is_this_checkout_unless_told_otherwise() {
        let sdk = sdk_source(None, None).unwrap();
        assert!(sdk.toml.starts_with("{ path = "), "{}", sdk.toml);
        let git = sdk_source(None, Some("https://example.com/x")).unwrap();
        assert_eq!(git.toml, "{ git = \"https://example.com/x\" }");
        let err = sdk_source(Some(Path::new("/")), None).unwrap_err();
        assert!(
            err.to_string().contains("not the conductor-sdk crate"),
            "{err}"
        );
    }
}
