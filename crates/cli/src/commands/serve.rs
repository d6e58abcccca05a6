//! `conductor serve`: the node daemon.

use std::path::PathBuf;
use std::time::Duration;

use conductor_daemon::DaemonConfig;

use crate::args::NodeArgs;

/// Run the node daemon: serve the conductor.v1 API on a Unix socket and
/// keep the plugins it is asked to load running, across restarts.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The Unix socket to serve on.
    #[arg(long, value_name = "PATH", default_value = conductor_api::v1::DEFAULT_SOCKET, env = "CONDUCTOR_SOCKET")]
    pub socket: PathBuf,
    /// Where the desired state (the loaded plugins) is kept.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/conductor",
        env = "CONDUCTOR_STATE_DIR"
    )]
    pub state_dir: PathBuf,
    /// Group (name or gid) of the socket file, mode 0660 [default: the daemon's group].
    #[arg(long, value_name = "GROUP", env = "CONDUCTOR_SOCKET_GROUP")]
    pub socket_group: Option<String>,
    /// Also allow clients running as this uid (root always may); repeatable.
    #[arg(long = "allow-uid", value_name = "UID", value_delimiter = ',')]
    pub allow_uids: Vec<u32>,
    /// Allow clients in this group (name or gid); repeatable. [default: the socket's group]
    #[arg(long = "allow-gid", value_name = "GROUP", value_delimiter = ',')]
    pub allow_gids: Vec<String>,
    /// Plugins compiling and attaching at the same time; more wait as Pending.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub max_parallel_loads: u64,
    /// Log lines kept per plugin for `conductor logs`.
    #[arg(long, value_name = "N", default_value_t = conductor_node::logs::DEFAULT_LINES as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub log_lines: u64,
    /// Seconds between HTTP/2 pings to each API client; a client that does
    /// not answer within --api-keepalive-timeout-secs is disconnected.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub api_keepalive_secs: u64,
    #[arg(long, value_name = "SECONDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub api_keepalive_timeout_secs: u64,
    /// Close an API connection after this many seconds without a byte in
    /// either direction (peers that connect and send nothing or half a
    /// request; live clients answer the pings). Must exceed
    /// --api-keepalive-secs.
    #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub api_idle_timeout_secs: u64,
    #[command(flatten)]
    pub node: NodeArgs,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let socket_group = args.socket_group.as_deref().map(gid).transpose()?;
    let allow_gids = if args.allow_gids.is_empty() {
        None
    } else {
        Some(
            args.allow_gids
                .iter()
                .map(|g| gid(g))
                .collect::<anyhow::Result<_>>()?,
        )
    };
    if args.api_idle_timeout_secs <= args.api_keepalive_secs {
        anyhow::bail!(
            "--api-idle-timeout-secs ({}) must exceed --api-keepalive-secs ({}), or live clients that only answer pings would be cut off",
            args.api_idle_timeout_secs,
            args.api_keepalive_secs
        );
    }
    let (mut node, registry) = args.node.config()?;
    if socket_group.is_some() {
        // Giving the socket to a group the host is not in takes CAP_CHOWN,
        // after start-up (the socket is made once the node runs).
        node.keep_capabilities = node
            .keep_capabilities
            .with(conductor_node::privileges::Capability::CAP_CHOWN);
    }
    conductor_daemon::serve(DaemonConfig {
        socket: args.socket,
        state_dir: args.state_dir,
        socket_group,
        allow_uids: args.allow_uids,
        allow_gids,
        registry,
        max_parallel_loads: args.max_parallel_loads as usize,
        log_lines: args.log_lines as usize,
        connections: conductor_daemon::ConnectionTimeouts {
            keepalive: Duration::from_secs(args.api_keepalive_secs),
            keepalive_timeout: Duration::from_secs(args.api_keepalive_timeout_secs),
            idle: Duration::from_secs(args.api_idle_timeout_secs),
        },
        node,
    })
}

/// A group name or number.
fn gid(group: &str) -> anyhow::Result<u32> {
    if let Ok(n) = group.parse() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => anyhow::bail!("there is no group {group:?} (give a group name or a gid)"),
        Err(e) => anyhow::bail!("cannot look up group {group:?}: {e}"),
    }
}
