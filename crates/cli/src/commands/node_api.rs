//! The node API's client commands (`load`, `update`, `unload`, `list`,
//! `get`, `logs`, `watch`, `status`): each is one request to the daemon's socket and
//! a printout, done by `conductor-client`; the exit code says how it went.

use std::path::PathBuf;
use std::process::ExitCode;

use conductor_client::{self as client, Client, ClientError, Exit};
use conductor_node::node::wait_for_signal;

use crate::args::ClientArgs;

#[derive(clap::Args)]
pub struct LoadArgs {
    /// The plugin spec file (one or more specs).
    pub spec: PathBuf,
    /// Annotation KEY=VALUE kept with the plugin; repeatable.
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args)]
pub struct UpdateArgs {
    /// The plugin spec file with the new versions.
    pub spec: PathBuf,
    /// Annotation KEY=VALUE; replaces the plugin's annotations if given.
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args)]
pub struct UnloadArgs {
    /// The plugins to unload.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args)]
pub struct GetArgs {
    /// The plugin.
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The plugin.
    pub name: String,
    /// Keep printing new lines until interrupted.
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N lines kept [default: all].
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub tail: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args)]
pub struct WatchArgs {
    /// Only this plugin.
    pub name: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// One client command.
pub enum Request {
    Load(LoadArgs),
    Update(UpdateArgs),
    Unload(UnloadArgs),
    List(ListArgs),
    Get(GetArgs),
    Logs(LogsArgs),
    Watch(WatchArgs),
    Status(StatusArgs),
}

impl Request {
    fn client(&self) -> &ClientArgs {
        match self {
            Self::Load(a) => &a.client,
            Self::Update(a) => &a.client,
            Self::Unload(a) => &a.client,
            Self::List(a) => &a.client,
            Self::Get(a) => &a.client,
            Self::Logs(a) => &a.client,
            Self::Watch(a) => &a.client,
            Self::Status(a) => &a.client,
        }
    }
}

pub fn run(request: Request) -> ExitCode {
    let result: Result<(), ClientError> = (|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError {
                exit: Exit::Error,
                message: format!("cannot start the async runtime: {e}"),
            })?;
        rt.block_on(async {
            let args = request.client();
            let mut c = Client::connect(&args.socket, args.output).await?;
            match &request {
                Request::Load(a) => {
                    c.load(&a.spec, &client::parse_annotations(&a.annotations)?)
                        .await
                }
                Request::Update(a) => {
                    c.update(&a.spec, &client::parse_annotations(&a.annotations)?)
                        .await
                }
                Request::Unload(a) => c.unload(&a.names).await,
                Request::List(_) => c.list().await,
                Request::Get(a) => c.get(&a.name).await,
                Request::Status(_) => c.node().await,
                Request::Logs(a) => {
                    tokio::select! {
                        r = c.logs(&a.name, a.follow, a.tail) => r,
                        _ = wait_for_signal() => Ok(()),
                    }
                }
                Request::Watch(a) => {
                    tokio::select! {
                        r = c.watch(a.name.as_deref()) => r,
                        _ = wait_for_signal() => Ok(()),
                    }
                }
            }
        })
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit as u8)
        }
    }
}
