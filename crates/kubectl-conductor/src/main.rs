//! `kubectl conductor`: eBPFConductor plugins in a cluster, for people who
//! use `kubectl`. A kubectl plugin: kubectl finds this binary on PATH by its
//! name (`kubectl-conductor`) and passes the environment (`KUBECONFIG`)
//! through, so it talks to the same cluster as kubectl.
//!
//! - [`run`]: create or update an `EbpfPlugin`, wait until it runs on the
//!   chosen nodes, or roll back and say why.
//! - [`list`]: every plugin with its per-node phase; `delete`; `clear` (the
//!   plugins of some packages, of a label selector, or all of them).
//! - [`logs`]: a plugin's log lines from the hosts (through `pods/log`).
//! - [`top`]: the busiest pods for a plugin metric (through the pod proxy).
//! - [`packages`]: the packages the cluster runs; `show` a plugin or package.
//!
//! Exit codes (documented in docs/src/deploy.md): see [`Exit`].

mod list;
mod logs;
mod packages;
mod run;
mod top;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// The exit codes, for scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done: running on every chosen node / deleted / listed.
    Ok = 0,
    /// An error: invalid spec, no cluster, not found, forbidden. Nothing
    /// was changed (or, during `run`'s wait, the change was rolled back).
    Error = 1,
    // 2 is clap's: the command line is wrong.
    /// `run`: the plugin failed on a node (or no node was selected); the
    /// change was rolled back.
    Failed = 3,
    /// `run`: not running on every chosen node within `--timeout`; rolled
    /// back. `delete`, `clear`: still there after `--timeout`.
    Timeout = 4,
}

/// An error that ends the command with a specific exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(code: Exit, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

#[derive(Parser, Debug)]
#[command(
    name = "kubectl conductor",
    bin_name = "kubectl conductor",
    version,
    about = "Run, list, inspect and delete eBPFConductor plugins (EbpfPlugin resources) in a cluster.",
    after_help = "Exit codes: 0 done; 1 error (nothing changed); 2 bad command line; \
                  3 run failed on a node and was rolled back; \
                  4 timed out (run: rolled back; delete, clear: still there)."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Run(run::RunArgs),
    List(list::ListArgs),
    Logs(logs::LogsArgs),
    Top(top::TopArgs),
    Packages(packages::PackagesArgs),
    Show(packages::ShowArgs),
    Delete(list::DeleteArgs),
    Clear(list::ClearArgs),
}

/// `30s`, `2m`, `500ms` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: use e.g. 90s, 2m or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!(
            "`{s}` is not a duration: use e.g. 90s, 2m or 500ms"
        )),
    }
}

async fn client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot configure a Kubernetes client ({e}); check KUBECONFIG or `kubectl config current-context`"
        )
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = async {
        let client = client().await?;
        match cli.command {
            Command::Run(args) => run::run(client, args).await,
            Command::List(args) => list::list(client, args).await,
            Command::Logs(args) => logs::logs(client, args).await,
            Command::Top(args) => top::top(client, args).await,
            Command::Packages(args) => packages::packages(client, args).await,
            Command::Show(args) => packages::show(client, args).await,
            Command::Delete(args) => list::delete(client, args).await,
            Command::Clear(args) => list::clear(client, args).await,
        }
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e.downcast_ref::<Failure>().map_or(Exit::Error, |f| f.code);
            ExitCode::from(code as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").unwrap_err().contains("90s"));
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
