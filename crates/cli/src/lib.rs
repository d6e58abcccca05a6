//! `conductor`: run plugins locally, serve the node API, talk to a node,
//! push and pull plugins. One module per subcommand in [`commands`].
//!
//! A library with a thin binary (`src/main.rs` calls [`main`]), so that
//! [`reference`] can render the command tree ([`Cli`]) into the manual's
//! command-line reference, and a test can check that page is current.

pub mod args;
pub mod commands;
pub mod reference;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use commands::node_api::{self, Request};

/// The `conductor` command line.
#[derive(Parser)]
#[command(
    name = "conductor",
    version,
    about = "Runs sandboxed wasm plugins on live eBPF events"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text, env = "CONDUCTOR_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// How the log is written to stderr.
#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the plugins of a spec file, or a plugin package
    /// (`oci://registry/repository:tag`), in the foreground until Ctrl-C.
    ///
    /// The file holds one or more plugin specs (YAML documents separated by
    /// `---`); relative paths in it are resolved against its directory.
    Run(commands::run::RunArgs),
    /// Run the node daemon: serve the conductor.v1 API on a Unix socket and
    /// keep the plugins it is asked to load running, across restarts.
    Serve(commands::serve::ServeArgs),
    /// Load the plugins of a spec file into the daemon (all or nothing, each).
    ///
    /// Relative paths in the file are resolved against its directory.
    Load(node_api::LoadArgs),
    /// Replace running plugins by the versions of a spec file, without
    /// losing events when only the component or config changed.
    Update(node_api::UpdateArgs),
    /// Stop plugins and detach their programs.
    Unload(node_api::UnloadArgs),
    /// The daemon's plugins and their state.
    List(node_api::ListArgs),
    /// One plugin's state, spec and annotations.
    Get(node_api::GetArgs),
    /// A plugin's recent log lines (its log calls, stdout and stderr, and
    /// what the host said about it).
    Logs(node_api::LogsArgs),
    /// Print plugin state changes as they happen (the current state first).
    Watch(node_api::WatchArgs),
    /// The daemon's node: its version, its kernel, and what that kernel
    /// supports (probed when the daemon started).
    Status(node_api::StatusArgs),
    /// Probe this machine's kernel: the attach features, program types,
    /// map types and helpers the host uses (needs root for most probes).
    Features(commands::features::FeaturesArgs),
    /// Push a plugin component to an OCI registry (CNCF wasm artifact
    /// format), or with --package a whole plugin package.
    Push(commands::push::PushArgs),
    /// Pull a plugin component (or, with --bytecode, a bpfman bytecode image)
    /// into the local cache, re-resolving its tag.
    Pull(commands::pull::PullArgs),
    /// List or prune pulled artifacts.
    Cache(commands::cache::CacheArgs),
    /// The plugin packages in the local cache: digest, size, signature
    /// status and the daemon's plugins using each.
    Packages(commands::packages::PackagesArgs),
    /// What a plugin package holds: programs and attach points, maps,
    /// config keys with their docs, WIT version, signer, source.
    Show(commands::packages::ShowArgs),
    /// Sign a pushed artifact with a key, in cosign's layout.
    Sign(commands::sign::SignArgs),
    /// Write a new cosign-format key pair for `conductor sign`.
    GenerateKeyPair(commands::sign::GenerateKeyPairArgs),
    /// Write a new plugin project (BPF C, a component, package.yaml, a
    /// README and a test on real events) into a new directory.
    New(commands::new::NewArgs),
    /// Build the plugin project here (BPF C with clang, the component with
    /// cargo), check them against package.yaml and assemble the package
    /// `conductor push --package` takes.
    Build(commands::build::BuildArgs),
}

/// The `conductor` binary: parse the command line and run the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Client commands print their own errors and choose their exit codes.
    let local = match cli.command {
        Command::Load(a) => return node_api::run(Request::Load(a)),
        Command::Update(a) => return node_api::run(Request::Update(a)),
        Command::Unload(a) => return node_api::run(Request::Unload(a)),
        Command::List(a) => return node_api::run(Request::List(a)),
        Command::Get(a) => return node_api::run(Request::Get(a)),
        Command::Logs(a) => return node_api::run(Request::Logs(a)),
        Command::Watch(a) => return node_api::run(Request::Watch(a)),
        Command::Status(a) => return node_api::run(Request::Status(a)),
        Command::Features(a) => return commands::features::run(a),
        Command::New(a) => return report(commands::new::run(a)),
        Command::Build(a) => return report(commands::build::run(a)),
        Command::Run(a) => Local::Run(a),
        Command::Serve(a) => Local::Serve(a),
        Command::Push(a) => Local::Push(a),
        Command::Pull(a) => Local::Pull(a),
        Command::Cache(a) => Local::Cache(a),
        Command::Packages(a) => Local::Packages(a),
        Command::Show(a) => Local::Show(a),
        Command::Sign(a) => Local::Sign(a),
        Command::GenerateKeyPair(a) => Local::GenerateKeyPair(a),
    };
    init_logging(cli.log_format, matches!(local, Local::Serve(_)));
    let result = match local {
        Local::Run(a) => commands::run::run(a),
        Local::Serve(a) => commands::serve::serve(a),
        Local::Push(a) => commands::push::run(a),
        Local::Pull(a) => commands::pull::run(a),
        Local::Cache(a) => commands::cache::run(a),
        Local::Packages(a) => commands::packages::packages(a),
        Local::Show(a) => commands::packages::show(a),
        Local::Sign(a) => commands::sign::sign(a),
        Local::GenerateKeyPair(a) => commands::sign::generate_key_pair(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The exit of an author's command (`new`, `build`): they print, not log.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The commands that do their work in this process and log.
enum Local {
    Run(commands::run::RunArgs),
    Serve(commands::serve::ServeArgs),
    Push(commands::push::PushArgs),
    Pull(commands::pull::PullArgs),
    Cache(commands::cache::CacheArgs),
    Packages(commands::packages::PackagesArgs),
    Show(commands::packages::ShowArgs),
    Sign(commands::sign::SignArgs),
    GenerateKeyPair(commands::sign::GenerateKeyPairArgs),
}

/// Logs to stderr, filtered by `CONDUCTOR_LOG`; the daemon also keeps each
/// plugin's recent lines for `conductor logs` (see `conductor_node::logs`).
fn init_logging(format: LogFormat, capture_plugin_logs: bool) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        EnvFilter::try_from_env("CONDUCTOR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let console = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let capture = capture_plugin_logs.then(|| {
        conductor_node::logs::CaptureLayer.with_filter(conductor_node::logs::CaptureLayer::filter())
    });
    tracing_subscriber::registry()
        .with(console)
        .with(capture)
        .init();
}
