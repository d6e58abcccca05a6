//! bpfman as the owner of a plugin's programs (`bytecode.loader: bpfman`).
//!
//! The host drives bpfman through its command-line interface (`bpfman`, the
//! binary of the `bpfman` crate 0.6): `load file` with the plugin's name in
//! the program metadata ([`PLUGIN_TAG`]) and as bpfman application,
//! `attach` per program, `get program` for the directory bpfman pinned the
//! maps in, `unload` when the plugin stops. Why the CLI and not the gRPC
//! API is in docs/src/design.md.
//!
//! Everything this host loaded is found again by its tag, never by a
//! remembered id: a load that fails half way, and a host that was killed
//! (`kill -9`) before it could unload, are cleaned up by unloading every
//! program tagged with the plugin's name ([`Bpfman::reclaim`], run before
//! each load).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use conductor_api::{AttachPoint, BpfmanProgram, Bytecode, MapGrant, PluginSpec};

/// The environment variable naming the `bpfman` command (default: `bpfman`
/// on `PATH`).
pub const ENV_COMMAND: &str = "CONDUCTOR_BPFMAN";
/// The metadata key the host tags its programs with; the value is the
/// plugin's name.
pub const PLUGIN_TAG: &str = "conductor.io/plugin";

#[derive(Debug, thiserror::Error)]
pub enum BpfmanError {
    #[error(
        "cannot run bpfman ({command}): {cause}; install bpfman 0.6 (`cargo install --locked bpfman --version 0.6.0`) or set {ENV_COMMAND} to its path"
    )]
    Spawn { command: String, cause: String },
    #[error(
        "bpfman failed: `bpfman {args}` exited with {status}: {stderr} (bpfman runs with the host's capabilities: a host that uses `loader: bpfman` must keep what bpfman needs, e.g. `--keep-capabilities all`)"
    )]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("cannot understand bpfman's answer to `bpfman {args}`: {cause}")]
    Answer { args: String, cause: String },
    #[error("plugin {plugin:?}: bpfman loaded no program named {program:?} (it lists {listed})")]
    Missing {
        plugin: String,
        program: String,
        listed: String,
    },
    #[error("plugin {plugin:?}: program {program:?}: bpfman cannot attach {kind} programs")]
    Unsupported {
        plugin: String,
        program: String,
        kind: &'static str,
    },
}

/// One program bpfman lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: u32,
    /// The kernel's name of the program (at most 15 characters).
    pub function: String,
}

/// The `bpfman` command.
#[derive(Debug, Clone)]
pub struct Bpfman {
    command: PathBuf,
}

impl Default for Bpfman {
    fn default() -> Self {
        Self::from_env()
    }
}

impl Bpfman {
    /// `$CONDUCTOR_BPFMAN`, else `bpfman` on `PATH`.
    pub fn from_env() -> Self {
        let command = std::env::var_os(ENV_COMMAND)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("bpfman"), PathBuf::from);
        Self { command }
    }

    pub fn with_command(command: impl Into<PathBuf>) -> Self {
        Self {
            command: command.into(),
        }
    }

    /// Run `bpfman args`; its standard output on success.
    fn run(&self, args: &[OsString]) -> Result<String, BpfmanError> {
        let shown = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        tracing::debug!(command = %self.command.display(), "bpfman {shown}");
        let out = Command::new(&self.command)
            .args(args)
            // bpfman's own log goes to stderr; keep it to its errors.
            .env("RUST_LOG", "error")
            .output()
            .map_err(|e| BpfmanError::Spawn {
                command: self.command.display().to_string(),
                cause: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(BpfmanError::Failed {
                args: shown,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(strip_ansi(&String::from_utf8_lossy(&out.stdout)))
    }

    /// The programs tagged with `key=value` (`bpfman list programs
    /// --metadata-selector`).
    pub fn list_tagged(&self, key: &str, value: &str) -> Result<Vec<Listed>, BpfmanError> {
        let args = os(["list", "programs", "--metadata-selector"])
            .into_iter()
            .chain([OsString::from(format!("{key}={value}"))])
            .collect::<Vec<_>>();
        let text = self.run(&args)?;
        parse_list(&text).map_err(|cause| BpfmanError::Answer {
            args: "list programs".into(),
            cause,
        })
    }

    /// The programs of bpfman application `application`.
    pub fn list_application(&self, application: &str) -> Result<Vec<Listed>, BpfmanError> {
        let text = self.run(&os(["list", "programs", "--application", application]))?;
        parse_list(&text).map_err(|cause| BpfmanError::Answer {
            args: "list programs".into(),
            cause,
        })
    }

    /// Every program bpfman manages.
    pub fn list(&self) -> Result<Vec<Listed>, BpfmanError> {
        let text = self.run(&os(["list", "programs"]))?;
        parse_list(&text).map_err(|cause| BpfmanError::Answer {
            args: "list programs".into(),
            cause,
        })
    }

    pub fn unload(&self, id: u32) -> Result<(), BpfmanError> {
        self.run(&os(["unload", &id.to_string()])).map(drop)
    }

    /// The directory bpfman pinned program `id`'s maps in.
    pub fn map_pin_path(&self, id: u32) -> Result<PathBuf, BpfmanError> {
        let id = id.to_string();
        let args = ["get", "program", &id];
        let text = self.run(&os(args))?;
        text.lines()
            .find_map(|l| l.trim().strip_prefix("Map Pin Path:"))
            .map(|p| PathBuf::from(p.trim()))
            .filter(|p| p.is_absolute())
            .ok_or_else(|| BpfmanError::Answer {
                args: args.join(" "),
                cause: "no `Map Pin Path:` line".into(),
            })
    }

    /// The program `selector` names (the first of its application whose
    /// function matches, or the first listed when it names no function),
    /// with the directory bpfman pinned its maps in; `None` while bpfman
    /// has no such program.
    pub fn find(&self, selector: &BpfmanProgram) -> Result<Option<Found>, BpfmanError> {
        let listed = self.list_application(&selector.application)?;
        let hit = listed.iter().find(|l| {
            selector
                .program
                .as_deref()
                .is_none_or(|p| kernel_name_matches(&l.function, p))
        });
        let Some(hit) = hit else {
            return Ok(None);
        };
        Ok(Some(Found {
            id: hit.id,
            maps: self.map_pin_path(hit.id)?,
        }))
    }

    /// Unload every program tagged with plugin `plugin`'s name: what a
    /// previous host left behind (killed before it could unload) or a
    /// failed load. Returns how many there were.
    pub fn reclaim(&self, plugin: &str) -> Result<usize, BpfmanError> {
        let stale = self.list_tagged(PLUGIN_TAG, plugin)?;
        for p in &stale {
            self.unload(p.id)?;
        }
        Ok(stale.len())
    }

    /// Have bpfman load and attach `spec`'s programs (its bytecode must say
    /// `loader: bpfman` and name a file). Either every program is loaded and
    /// attached, or nothing tagged with the plugin is left.
    pub fn load(&self, spec: &PluginSpec, bytecode: &Bytecode) -> Result<Loaded, BpfmanError> {
        let plugin = spec.name.as_str();
        let left = self.reclaim(plugin)?;
        if left > 0 {
            tracing::warn!(
                plugin,
                programs = left,
                "unloaded bpfman programs a previous host left behind for this plugin"
            );
        }
        match self.load_and_attach(spec, bytecode) {
            Ok(loaded) => Ok(loaded),
            Err(e) => {
                if let Err(cleanup) = self.reclaim(plugin) {
                    tracing::error!(plugin, "cannot unload what bpfman loaded: {cleanup}");
                }
                Err(e)
            }
        }
    }

    fn load_and_attach(&self, spec: &PluginSpec, b: &Bytecode) -> Result<Loaded, BpfmanError> {
        let plugin = spec.name.as_str();
        let tag = format!("{PLUGIN_TAG}={plugin}");
        let mut args = os(["load", "file", "--path", &b.path, "--programs"]);
        for p in &b.programs {
            let kind = match p.attach_point() {
                Some(AttachPoint::Tracepoint { .. }) => "tracepoint",
                Some(AttachPoint::Kprobe { ret: false, .. }) => "kprobe",
                Some(AttachPoint::Kprobe { ret: true, .. }) => "kretprobe",
                Some(AttachPoint::Uprobe { ret: false, .. }) => "uprobe",
                Some(AttachPoint::Uprobe { ret: true, .. }) => "uretprobe",
                Some(AttachPoint::Xdp(_)) => "xdp",
                Some(AttachPoint::Tc(_)) => "tc",
                Some(AttachPoint::Tcx(_)) => "tcx",
                other => {
                    return Err(BpfmanError::Unsupported {
                        plugin: plugin.into(),
                        program: p.name.clone(),
                        kind: other.map_or("unnamed", |o| o.kind()),
                    });
                }
            };
            args.push(format!("{kind}:{}", p.name).into());
        }
        args.extend(os(["--application", plugin, "--metadata", &tag]));
        self.run(&args)?;

        let listed = self.list_tagged(PLUGIN_TAG, plugin)?;
        let mut ids = Vec::with_capacity(b.programs.len());
        for p in &b.programs {
            let found = listed
                .iter()
                .find(|l| kernel_name_matches(&l.function, &p.name));
            let Some(found) = found else {
                return Err(BpfmanError::Missing {
                    plugin: plugin.into(),
                    program: p.name.clone(),
                    listed: listed
                        .iter()
                        .map(|l| format!("{} ({})", l.function, l.id))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            ids.push(found.id);
        }
        for (p, id) in b.programs.iter().zip(&ids) {
            let mut attach = os(["attach", &id.to_string()]);
            attach.extend(attach_args(p.attach_point(), &p.name, plugin)?);
            attach.extend(os(["--metadata", &tag]));
            self.run(&attach)?;
        }
        let maps = self.map_pin_path(ids[0])?;
        tracing::info!(
            plugin,
            programs = ?ids,
            maps = %maps.display(),
            "bpfman loaded and attached the plugin's programs"
        );
        Ok(Loaded {
            bpfman: self.clone(),
            plugin: plugin.to_owned(),
            ids,
            maps,
        })
    }
}

/// The arguments of `bpfman attach <id>` for `point`.
fn attach_args(
    point: Option<AttachPoint<'_>>,
    program: &str,
    plugin: &str,
) -> Result<Vec<OsString>, BpfmanError> {
    let args = match point {
        Some(AttachPoint::Tracepoint { category, name }) => {
            os(["tracepoint", "--tracepoint", &format!("{category}/{name}")])
        }
        Some(AttachPoint::Kprobe { probe, .. }) => {
            let mut a = os(["kprobe", "--fn-name", &probe.function]);
            if let Some(o) = probe.offset {
                a.extend(os(["--offset", &o.to_string()]));
            }
            a
        }
        Some(AttachPoint::Uprobe { probe, .. }) => {
            let mut a = os(["uprobe", "--target", &probe.target]);
            if let Some(s) = &probe.symbol {
                a.extend(os(["--fn-name", s]));
            }
            if let Some(o) = probe.offset {
                a.extend(os(["--offset", &o.to_string()]));
            }
            if let Some(pid) = probe.pid {
                a.extend(os(["--pid", &pid.to_string()]));
            }
            a
        }
        // bpfman chains XDP and TC programs behind its dispatchers, ordered
        // by priority; the spec has no priority, so the middle of its range.
        Some(AttachPoint::Xdp(x)) => os(["xdp", "--iface", &x.interface, "--priority", "500"]),
        Some(AttachPoint::Tc(t)) => os([
            "tc",
            "--iface",
            &t.interface,
            "--direction",
            direction(&t.direction),
            "--priority",
            &t.priority.unwrap_or(500).to_string(),
        ]),
        Some(AttachPoint::Tcx(t)) => os([
            "tcx",
            "--iface",
            &t.interface,
            "--direction",
            direction(&t.direction),
            "--priority",
            "500",
        ]),
        other => {
            return Err(BpfmanError::Unsupported {
                plugin: plugin.into(),
                program: program.into(),
                kind: other.map_or("unnamed", |o| o.kind()),
            });
        }
    };
    Ok(args)
}

fn direction(d: &conductor_api::Direction) -> &'static str {
    match d {
        conductor_api::Direction::Ingress => "ingress",
        conductor_api::Direction::Egress => "egress",
    }
}

/// The kernel keeps 15 characters of a program's name.
fn kernel_name_matches(kernel: &str, name: &str) -> bool {
    let short: String = name.chars().take(15).collect();
    kernel == short
}

/// Rows of `bpfman list programs`: a header line starting with `Program
/// ID`, then one line per program whose first column is its id and fourth
/// its function name (empty Application columns are blank, so columns are
/// read from the header's offsets).
fn parse_list(text: &str) -> Result<Vec<Listed>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Ok(Vec::new());
    };
    let col = |name: &str| {
        header
            .find(name)
            .ok_or_else(|| format!("no {name:?} column in {header:?}"))
    };
    let (function, links) = (col("Function Name")?, col("Links")?);
    let mut out = Vec::new();
    for line in lines {
        let id = line.split_whitespace().next().unwrap_or_default();
        let id: u32 = id
            .parse()
            .map_err(|_| format!("{line:?} does not start with a program id"))?;
        let function = line
            .get(function..links.min(line.len()))
            .or_else(|| line.get(function..))
            .unwrap_or_default()
            .trim()
            .to_owned();
        out.push(Listed { id, function });
    }
    Ok(out)
}

fn os<'a>(args: impl IntoIterator<Item = &'a str>) -> Vec<OsString> {
    args.into_iter().map(OsString::from).collect()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A program bpfman manages, found by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: u32,
    /// Where bpfman pinned its maps (`/run/bpfman/fs/maps/<id>`).
    pub maps: PathBuf,
}

/// `spec` with every map grant that has no pin pointed at the pin of the
/// map of that name in `maps` (a bpfman map directory), and without
/// bytecode and `bpfmanProgram` (what they named is resolved).
pub fn pinned_spec(spec: &PluginSpec, maps: &Path) -> PluginSpec {
    let mut pinned = spec.clone();
    pinned.bytecode = None;
    pinned.bpfman_program = None;
    for MapGrant { name, pin, .. } in &mut pinned.maps {
        if pin.is_none() {
            *pin = Some(maps.join(&*name).display().to_string());
        }
    }
    pinned
}

/// A plugin's programs, loaded and attached by bpfman; dropping it asks
/// bpfman to unload them.
#[derive(Debug)]
pub struct Loaded {
    bpfman: Bpfman,
    plugin: String,
    ids: Vec<u32>,
    maps: PathBuf,
}

impl Loaded {
    /// bpfman's program ids, in the spec's order.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Where bpfman pinned the object's maps.
    pub fn maps_dir(&self) -> &Path {
        &self.maps
    }

    /// `spec` with every map grant that has no pin pointed at bpfman's pin
    /// of the map of that name, and without bytecode (bpfman holds it).
    pub fn pinned_spec(&self, spec: &PluginSpec) -> PluginSpec {
        pinned_spec(spec, &self.maps)
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        for id in &self.ids {
            if let Err(e) = self.bpfman.unload(*id) {
                tracing::error!(plugin = %self.plugin, id, "cannot unload through bpfman: {e}");
            }
        }
        // Anything else still tagged (nothing, normally).
        if let Err(e) = self.bpfman.reclaim(&self.plugin) {
            tracing::error!(plugin = %self.plugin, "cannot list bpfman's programs: {e}");
        }
        tracing::info!(plugin = %self.plugin, "bpfman unloaded the plugin's programs");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_rows_are_read_by_the_header_columns() {
        // As comfy-table's NOTHING preset prints it: padded columns.
        let row = |cols: [&str; 5]| {
            format!(
                " {:<10}  {:<11}  {:<10}  {:<15}  {:<8} \n",
                cols[0], cols[1], cols[2], cols[3], cols[4]
            )
        };
        let text = [
            row([
                "Program ID",
                "Application",
                "Type",
                "Function Name",
                "Links",
            ]),
            row([
                "6107",
                "exec-count",
                "tracepoint",
                "handle_exec",
                "(1) 6108",
            ]),
            row(["6110", "", "tracepoint", "a_very_long_nam", ""]),
        ]
        .concat();
        let text = text.as_str();
        let rows = parse_list(text).unwrap();
        assert_eq!(
            rows,
            [
                Listed {
                    id: 6107,
                    function: "handle_exec".into()
                },
                Listed {
                    id: 6110,
                    function: "a_very_long_nam".into()
                }
            ]
        );
        assert!(parse_list("").unwrap().is_empty());
        assert!(
            parse_list(" Program ID  Application  Type  Function Name  Links\n")
                .unwrap()
                .is_empty()
        );
        assert!(parse_list("Program ID Function Name Links\nnope x y\n").is_err());
        assert!(kernel_name_matches(
            "a_very_long_nam",
            "a_very_long_name_indeed"
        ));
        assert!(!kernel_name_matches("handle_exe", "handle_exec"));
    }

    #[test]
    fn a_missing_bpfman_is_named_with_what_to_do() {
        let b = Bpfman::with_command("/nonexistent/bpfman");
        let err = b.list().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/bpfman"), "{err}");
        assert!(err.contains(ENV_COMMAND), "{err}");
    }
}
