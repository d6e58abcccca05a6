//! The CLI's side of the node API: `conductor load|unload|list|get|update|
//! logs|watch`, with table output for people, `-o json|yaml` for scripts,
//! and exit codes scripts can rely on ([`Exit`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use conductor_api::PluginSpec;
use conductor_api::v1::{self, conductor_client::ConductorClient, watch_event};
use serde::Serialize;
use tonic::Code;
use tonic::transport::Channel;

/// Exit codes of the client commands. Stable: scripts may rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    /// Anything not listed below.
    Error = 1,
    /// Bad command line (clap's own code).
    Usage = 2,
    /// The named plugin is not loaded (`NOT_FOUND`).
    NotFound = 3,
    /// A plugin of that name is already loaded (`ALREADY_EXISTS`).
    AlreadyExists = 4,
    /// The daemon refused this user, or the socket may not be opened.
    PermissionDenied = 5,
    /// No daemon answers on the socket (`UNAVAILABLE`, connection refused).
    Unreachable = 6,
    /// The spec (file or request) is invalid (`INVALID_ARGUMENT`).
    InvalidSpec = 7,
    /// The plugin could not be loaded or updated: pull, compile, verify,
    /// attach or `init` failed (`FAILED_PRECONDITION`); nothing changed.
    LoadFailed = 8,
    /// Another operation on the same plugin is under way (`ABORTED`): retry.
    Busy = 9,
    /// A size limit was reached: the plugins' specs together
    /// (`RESOURCE_EXHAUSTED`), or a message larger than the API carries.
    LimitReached = 10,
}

/// A failed client command: what to print and how to exit.
#[derive(Debug)]
pub struct ClientError {
    pub exit: Exit,
    pub message: String,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClientError {}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        let exit = match s.code() {
            Code::NotFound => Exit::NotFound,
            Code::AlreadyExists => Exit::AlreadyExists,
            Code::PermissionDenied | Code::Unauthenticated => Exit::PermissionDenied,
            Code::Unavailable => Exit::Unreachable,
            // tonic refusing a message over its size limit (either side): a
            // limit, not a problem of the spec.
            Code::OutOfRange if s.message().contains("message length too large") => {
                Exit::LimitReached
            }
            Code::InvalidArgument | Code::OutOfRange => Exit::InvalidSpec,
            Code::FailedPrecondition => Exit::LoadFailed,
            Code::Aborted => Exit::Busy,
            Code::ResourceExhausted => Exit::LimitReached,
            _ => Exit::Error,
        };
        let message = if s.code() == Code::Unavailable {
            format!(
                "the conductor daemon is unreachable: {} (is `conductor serve` running?)",
                s.message()
            )
        } else {
            s.message().to_owned()
        };
        Self { exit, message }
    }
}

impl From<conductor_api::v1::ConnectError> for ClientError {
    fn from(e: conductor_api::v1::ConnectError) -> Self {
        Self {
            exit: if e.permission_denied {
                Exit::PermissionDenied
            } else {
                Exit::Unreachable
            },
            message: e.to_string(),
        }
    }
}

fn invalid(message: String) -> ClientError {
    ClientError {
        exit: Exit::InvalidSpec,
        message,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// A plugin's status as `-o json|yaml` prints it (camelCase, like the spec).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub name: String,
    pub phase: String,
    pub phase_since: Option<String>,
    pub loaded_at: Option<String>,
    pub restarts: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// While `Restarting` or `CrashLoopBackOff`: when the next instance starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_retry: Option<String>,
    pub component_digest: String,
    pub generation: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Who signed the OCI artifact it runs (empty for a local file).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub signer: String,
    pub spec: Option<PluginSpec>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EventView {
    kind: &'static str,
    status: StatusView,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LogView {
    time: Option<String>,
    level: String,
    message: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    fields: BTreeMap<String, String>,
}

fn phase_name(phase: i32) -> &'static str {
    conductor_api::Phase::from_wire(phase).as_str()
}

fn rfc3339(t: &prost_types::Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.clamp(0, 999_999_999) as u32)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{}s", t.seconds))
}

impl From<v1::PluginStatus> for StatusView {
    fn from(s: v1::PluginStatus) -> Self {
        Self {
            phase: phase_name(s.phase).to_owned(),
            phase_since: s.phase_since.as_ref().map(rfc3339),
            loaded_at: s.loaded_at.as_ref().map(rfc3339),
            restarts: s.restarts,
            last_error: s.last_error,
            next_retry: s.next_retry.as_ref().map(rfc3339),
            component_digest: s.component_digest,
            generation: s.generation,
            annotations: s.annotations.into_iter().collect(),
            signer: s.signer,
            spec: s.spec.and_then(|w| PluginSpec::try_from(w).ok()),
            name: s.name,
        }
    }
}

/// A spec file's specs, with every relative path made absolute against the
/// file's directory (the daemon does not share our working directory).
pub fn read_specs(path: &Path) -> Result<Vec<PluginSpec>, ClientError> {
    let mut specs = conductor_api::load_file(path).map_err(|e| invalid(e.to_string()))?;
    let base = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned))
        .unwrap_or_else(|| PathBuf::from("/"));
    for s in &mut specs {
        s.resolve_paths(&base);
    }
    Ok(specs)
}

/// `KEY=VALUE` pairs.
pub fn parse_annotations(pairs: &[String]) -> Result<BTreeMap<String, String>, ClientError> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| invalid(format!("annotation {p:?} is not KEY=VALUE")))
        })
        .collect()
}

pub struct Client {
    inner: ConductorClient<Channel>,
    output: Output,
}

impl Client {
    pub async fn connect(socket: &Path, output: Output) -> Result<Self, ClientError> {
        Ok(Self {
            inner: v1::connect(socket).await?,
            output,
        })
    }

    pub async fn load(
        &mut self,
        file: &Path,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), ClientError> {
        let specs = read_specs(file)?;
        let mut loaded = Vec::new();
        for spec in specs {
            let status = self
                .inner
                .load(v1::LoadRequest {
                    spec: Some(v1::PluginSpec::from(&spec)),
                    annotations: annotations.clone().into_iter().collect(),
                })
                .await?
                .into_inner()
                .status
                .unwrap_or_default();
            if self.output == Output::Table {
                println!("loaded {} ({})", status.name, status.component_digest);
            }
            loaded.push(StatusView::from(status));
        }
        self.print_statuses(loaded, false)
    }

    pub async fn update(
        &mut self,
        file: &Path,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), ClientError> {
        let specs = read_specs(file)?;
        let mut updated = Vec::new();
        for spec in specs {
            let status = self
                .inner
                .update(v1::UpdateRequest {
                    spec: Some(v1::PluginSpec::from(&spec)),
                    annotations: annotations.clone().into_iter().collect(),
                })
                .await?
                .into_inner()
                .status
                .unwrap_or_default();
            if self.output == Output::Table {
                println!(
                    "updated {} to generation {} ({})",
                    status.name, status.generation, status.component_digest
                );
            }
            updated.push(StatusView::from(status));
        }
        self.print_statuses(updated, false)
    }

    pub async fn unload(&mut self, names: &[String]) -> Result<(), ClientError> {
        for name in names {
            self.inner
                .unload(v1::UnloadRequest { name: name.clone() })
                .await?;
            println!("unloaded {name}");
        }
        Ok(())
    }

    pub async fn list(&mut self) -> Result<(), ClientError> {
        let plugins = self
            .inner
            .list(v1::ListRequest {})
            .await?
            .into_inner()
            .plugins;
        self.print_statuses(plugins.into_iter().map(StatusView::from).collect(), true)
    }

    pub async fn get(&mut self, name: &str) -> Result<(), ClientError> {
        let status = self
            .inner
            .get(v1::GetRequest {
                name: name.to_owned(),
            })
            .await?
            .into_inner()
            .status
            .unwrap_or_default();
        let view = StatusView::from(status);
        match self.output {
            Output::Table => {
                print_table(std::slice::from_ref(&view));
                if !view.last_error.is_empty() {
                    println!("\nlast error: {}", view.last_error);
                }
                if let Some(t) = &view.next_retry {
                    println!("next retry: {t} (in {})", until(t));
                }
                Ok(())
            }
            _ => self.print_one(&view),
        }
    }

    pub async fn logs(&mut self, name: &str, follow: bool, tail: u32) -> Result<(), ClientError> {
        let mut stream = self
            .inner
            .logs(v1::LogsRequest {
                name: name.to_owned(),
                follow,
                tail,
            })
            .await?
            .into_inner();
        while let Some(line) = stream.message().await? {
            let view = LogView {
                time: line.time.as_ref().map(rfc3339),
                level: line.level,
                message: line.message,
                fields: line.fields.into_iter().collect(),
            };
            match self.output {
                Output::Table => {
                    let fields: String = view
                        .fields
                        .iter()
                        .filter(|(k, _)| k.as_str() != "source")
                        .map(|(k, v)| format!(" {k}={v}"))
                        .collect();
                    let source = view.fields.get("source").map_or("", String::as_str);
                    println!(
                        "{} {:5} [{source}] {}{fields}",
                        view.time.as_deref().unwrap_or("-"),
                        view.level.to_uppercase(),
                        view.message
                    );
                }
                _ => self.print_stream_item(&view)?,
            }
            let _ = std::io::stdout().flush();
        }
        Ok(())
    }

    pub async fn watch(&mut self, name: Option<&str>) -> Result<(), ClientError> {
        let mut stream = self
            .inner
            .watch(v1::WatchRequest {
                name: name.unwrap_or_default().to_owned(),
            })
            .await?
            .into_inner();
        if self.output == Output::Table {
            println!(
                "{:<24} {:<8} {:<24} {:<11} {:>8} {:>4}  ERROR",
                "TIME", "EVENT", "NAME", "PHASE", "RESTARTS", "GEN"
            );
        }
        while let Some(event) = stream.message().await? {
            let kind = match watch_event::Kind::try_from(event.kind) {
                Ok(watch_event::Kind::Initial) => "INITIAL",
                Ok(watch_event::Kind::Changed) => "CHANGED",
                Ok(watch_event::Kind::Removed) => "REMOVED",
                _ => "UNKNOWN",
            };
            let status = StatusView::from(event.status.unwrap_or_default());
            match self.output {
                Output::Table => println!(
                    "{:<24} {:<8} {:<24} {:<11} {:>8} {:>4}  {}",
                    status.phase_since.as_deref().unwrap_or("-"),
                    kind,
                    status.name,
                    status.phase,
                    status.restarts,
                    status.generation,
                    first_line(&status.last_error)
                ),
                _ => self.print_stream_item(&EventView { kind, status })?,
            }
            let _ = std::io::stdout().flush();
        }
        Ok(())
    }

    fn print_statuses(&self, views: Vec<StatusView>, table: bool) -> Result<(), ClientError> {
        match self.output {
            Output::Table if table => {
                print_table(&views);
                Ok(())
            }
            Output::Table => Ok(()),
            _ => self.print_one(&views),
        }
    }

    fn print_one<T: Serialize>(&self, value: &T) -> Result<(), ClientError> {
        print_value(self.output, value)
    }

    pub async fn node(&mut self) -> Result<(), ClientError> {
        let node = self.inner.node(v1::NodeRequest {}).await?.into_inner();
        print_node(self.output, &NodeView::from(node))
    }

    /// One item of a stream: a JSON object per line, or a YAML document.
    fn print_stream_item<T: Serialize>(&self, value: &T) -> Result<(), ClientError> {
        let text = match self.output {
            Output::Yaml => serde_yaml_ng::to_string(value)
                .map(|s| format!("---\n{s}"))
                .map_err(|e| e.to_string()),
            _ => serde_json::to_string(value)
                .map(|s| format!("{s}\n"))
                .map_err(|e| e.to_string()),
        }
        .map_err(|message| ClientError {
            exit: Exit::Error,
            message: format!("cannot format the output: {message}"),
        })?;
        print!("{text}");
        Ok(())
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// `NAME PHASE RESTARTS GEN AGE DIGEST ERROR`, as kubectl would.
fn print_table(views: &[StatusView]) {
    let rows: Vec<[String; 7]> = views
        .iter()
        .map(|v| {
            [
                v.name.clone(),
                v.phase.clone(),
                v.restarts.to_string(),
                v.generation.to_string(),
                v.loaded_at.as_deref().map_or_else(|| "-".into(), age),
                v.component_digest
                    .strip_prefix("sha256:")
                    .map_or_else(|| "-".into(), |d| d.chars().take(12).collect()),
                match &v.next_retry {
                    // A plugin waiting to restart says when, then why.
                    Some(t) => format!("retry in {}: {}", until(t), first_line(&v.last_error)),
                    None => first_line(&v.last_error).to_owned(),
                },
            ]
        })
        .collect();
    print_rows(
        ["NAME", "PHASE", "RESTARTS", "GEN", "AGE", "DIGEST", "ERROR"],
        &rows,
    );
}

/// Columns padded to their widest cell; the last column is not padded.
fn print_rows<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// The node host as `conductor status` and `conductor features` print it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub version: String,
    pub kernel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    pub capabilities: Vec<CapabilityView>,
}

/// One kernel capability of [`NodeView`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityView {
    pub kind: String,
    pub name: String,
    /// `yes`, `no` or `unknown`.
    pub supported: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl From<v1::NodeResponse> for NodeView {
    fn from(n: v1::NodeResponse) -> Self {
        use v1::kernel_capability::Support;
        Self {
            version: n.version,
            kernel: n.kernel,
            started_at: n.started_at.as_ref().map(rfc3339),
            capabilities: n
                .capabilities
                .into_iter()
                .map(|c| CapabilityView {
                    supported: match c.support() {
                        Support::Yes => "yes",
                        Support::No => "no",
                        Support::Unknown | Support::Unspecified => "unknown",
                    }
                    .to_owned(),
                    kind: c.kind,
                    name: c.name,
                    detail: c.detail,
                })
                .collect(),
        }
    }
}

/// Print a node's status: a summary and a capability table for people,
/// the whole view for `-o json|yaml`.
pub fn print_node(output: Output, view: &NodeView) -> Result<(), ClientError> {
    if output != Output::Table {
        return print_value(output, view);
    }
    println!("version: {}", view.version);
    println!("kernel:  {}", view.kernel);
    if let Some(t) = &view.started_at {
        println!("started: {t} ({} ago)", age(t));
    }
    println!();
    let rows: Vec<[String; 4]> = view
        .capabilities
        .iter()
        .map(|c| {
            [
                c.kind.clone(),
                c.name.clone(),
                c.supported.clone(),
                first_line(&c.detail).to_owned(),
            ]
        })
        .collect();
    print_rows(["KIND", "NAME", "SUPPORTED", "DETAIL"], &rows);
    Ok(())
}

/// `5s`, `3m`, `2h`, `4d` since an RFC 3339 time.
fn age(rfc3339: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(rfc3339) else {
        return "-".into();
    };
    let now = chrono::DateTime::<chrono::Utc>::from(SystemTime::now());
    short_duration((now - t.to_utc()).num_seconds())
}

/// `5s`, `3m`, ... until an RFC 3339 time (`0s` once it passed).
fn until(rfc3339: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(rfc3339) else {
        return "-".into();
    };
    let now = chrono::DateTime::<chrono::Utc>::from(SystemTime::now());
    short_duration((t.to_utc() - now).num_seconds())
}

fn short_duration(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `value` as pretty JSON or YAML.
fn print_value<T: Serialize>(output: Output, value: &T) -> Result<(), ClientError> {
    let text = match output {
        Output::Yaml => serde_yaml_ng::to_string(value).map_err(|e| e.to_string()),
        _ => serde_json::to_string_pretty(value)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| e.to_string()),
    }
    .map_err(|message| ClientError {
        exit: Exit::Error,
        message: format!("cannot format the output: {message}"),
    })?;
    print!("{text}");
    Ok(())
}
