//! The node's `conductor serve` daemon, driven over its Unix socket with the
//! `conductor.v1` API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use conductor_api::PluginSpec;
use conductor_api::v1::{
    self, GetRequest, ListRequest, LoadRequest, PluginStatus, UnloadRequest, UpdateRequest,
    conductor_client::ConductorClient,
};
use tokio::sync::Mutex;
use tonic::transport::Channel;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The daemon cannot be reached (not running, restarting, socket
    /// missing or not permitted); try again later.
    #[error("{0}")]
    Unavailable(String),
    /// Another load, update or unload of the plugin is under way: retry.
    #[error("the conductor daemon is busy with this plugin: {0}")]
    Busy(String),
    /// The daemon refused the request (bad spec, load or update failure,
    /// name taken); the message says why.
    #[error("{message}")]
    Rejected { code: Code, message: String },
}

impl HostError {
    fn from_status(socket: &Path, s: Status) -> Self {
        match s.code() {
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
                HostError::Unavailable(format!(
                    "the conductor daemon at {} did not answer: {}",
                    socket.display(),
                    s.message()
                ))
            }
            Code::Aborted => HostError::Busy(s.message().to_string()),
            code => HostError::Rejected {
                code,
                message: s.message().to_string(),
            },
        }
    }
}

/// A connection to the daemon, opened on first use and reopened after the
/// daemon went away.
pub struct Host {
    socket: PathBuf,
    client: Mutex<Option<ConductorClient<Channel>>>,
}

impl Host {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            client: Mutex::new(None),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn client(&self) -> Result<ConductorClient<Channel>, HostError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = v1::connect(&self.socket)
            .await
            .map_err(|e| HostError::Unavailable(e.to_string()))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Forget the connection after a transport failure, so that the next call
    /// dials the socket again (a restarted daemon has a new one).
    async fn check<T>(&self, r: Result<T, Status>) -> Result<T, HostError> {
        match r {
            Ok(v) => Ok(v),
            Err(s) => {
                let e = HostError::from_status(&self.socket, s);
                if matches!(e, HostError::Unavailable(_)) {
                    *self.client.lock().await = None;
                }
                Err(e)
            }
        }
    }

    /// The plugin's status, `None` if the host has no plugin of that name.
    pub async fn get(&self, name: &str) -> Result<Option<PluginStatus>, HostError> {
        let mut c = self.client().await?;
        let r = c
            .get(GetRequest {
                name: name.to_string(),
            })
            .await;
        match r {
            Err(s) if s.code() == Code::NotFound => Ok(None),
            r => Ok(self.check(r).await?.into_inner().status),
        }
    }

    pub async fn list(&self) -> Result<Vec<PluginStatus>, HostError> {
        let mut c = self.client().await?;
        let r = c.list(ListRequest {}).await;
        Ok(self.check(r).await?.into_inner().plugins)
    }

    pub async fn load(
        &self,
        spec: &PluginSpec,
        annotations: HashMap<String, String>,
    ) -> Result<Option<PluginStatus>, HostError> {
        let mut c = self.client().await?;
        let r = c
            .load(LoadRequest {
                spec: Some(spec.into()),
                annotations,
            })
            .await;
        Ok(self.check(r).await?.into_inner().status)
    }

    pub async fn update(
        &self,
        spec: &PluginSpec,
        annotations: HashMap<String, String>,
    ) -> Result<Option<PluginStatus>, HostError> {
        let mut c = self.client().await?;
        let r = c
            .update(UpdateRequest {
                spec: Some(spec.into()),
                annotations,
            })
            .await;
        Ok(self.check(r).await?.into_inner().status)
    }

    /// Unload; a plugin that is already gone is not an error.
    pub async fn unload(&self, name: &str) -> Result<(), HostError> {
        let mut c = self.client().await?;
        let r = c
            .unload(UnloadRequest {
                name: name.to_string(),
            })
            .await;
        match r {
            Err(s) if s.code() == Code::NotFound => Ok(()),
            r => self.check(r).await.map(|_| ()),
        }
    }

    /// A stream of the daemon's plugin status changes (starting with the
    /// state of every plugin).
    pub async fn watch(&self) -> Result<tonic::Streaming<v1::WatchEvent>, HostError> {
        let mut c = self.client().await?;
        let r = c
            .watch(v1::WatchRequest {
                name: String::new(),
            })
            .await;
        Ok(self.check(r).await?.into_inner())
    }
}
