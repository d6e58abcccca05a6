//! `conductor-operator`: `crd` prints the CustomResourceDefinitions, `node`
//! runs the per-node agent beside the host, `cluster` the cluster controller.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use conductor_operator::{cluster, crd, node};

#[derive(Parser)]
#[command(
    name = "conductor-operator",
    version,
    about = "Runs EbpfPlugin resources on the nodes their selector matches"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct KubeArgs {
    /// A kubeconfig file. Default: $KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account.
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Log format on stderr. CONDUCTOR_OPERATOR_LOG sets the filter (default info).
    #[arg(long, default_value = "text", value_parser = ["text", "json"], global = true)]
    log_format: String,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (YAML), e.g. `| kubectl apply -f -`.
    Crd,
    /// The node agent: drive this node's `conductor serve` over its socket.
    Node {
        /// This node's name (set NODE_NAME from the downward API's spec.nodeName).
        #[arg(long, env = "NODE_NAME")]
        node_name: String,
        /// The host daemon's Unix socket.
        #[arg(long, env = "CONDUCTOR_SOCKET", default_value = conductor_api::v1::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Seconds between looks for host plugins and node states whose EbpfPlugin is gone.
        #[arg(long, default_value_t = 30)]
        sweep_interval_secs: u64,
        /// Seconds between checks of a settled plugin when nothing happens.
        #[arg(long, default_value_t = 300)]
        resync_secs: u64,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// The cluster controller (one replica): finalizers, nodes that left,
    /// and the EbpfPlugin status aggregated from the node states.
    Cluster {
        /// Seconds between recomputations of a settled plugin's status.
        #[arg(long, default_value_t = 300)]
        resync_secs: u64,
        #[command(flatten)]
        kube: KubeArgs,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli.command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Crd => {
            print!("{}", crd::crds_yaml());
            Ok(())
        }
        Command::Node {
            node_name,
            socket,
            sweep_interval_secs,
            resync_secs,
            kube,
        } => {
            init_logging(&kube.log_format);
            anyhow::ensure!(!node_name.is_empty(), "--node-name (NODE_NAME) is empty");
            runtime()?.block_on(async {
                let client = client(kube.kubeconfig.as_deref()).await?;
                node::run(
                    client,
                    node::NodeConfig {
                        node_name,
                        socket,
                        sweep_interval: Duration::from_secs(sweep_interval_secs.max(1)),
                        resync: Duration::from_secs(resync_secs.max(1)),
                    },
                )
                .await
            })
        }
        Command::Cluster { resync_secs, kube } => {
            init_logging(&kube.log_format);
            runtime()?.block_on(async {
                let client = client(kube.kubeconfig.as_deref()).await?;
                cluster::run(
                    client,
                    cluster::ClusterConfig {
                        resync: Duration::from_secs(resync_secs.max(1)),
                    },
                )
                .await
            })
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("invalid kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration: run in a pod with a service account, or set KUBECONFIG / --kubeconfig",
        )?,
    };
    kube::Client::try_from(config).context("cannot create the Kubernetes client")
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONDUCTOR_OPERATOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
