//! Feeding the pod cache from the API server with a kube-rs watcher.
//!
//! One `watcher` over `pods` with `fieldSelector=spec.nodeName=<node>`
//! (so the node's agent never lists the whole cluster). The initial list is
//! buffered and swapped in at once (`InitDone`), so readers never see half
//! a list and pods deleted while the cache was not looking disappear. Watch
//! streams that end are resumed from their resourceVersion by kube-rs, and
//! bookmarks keep that version fresh. Any error (410 Gone, the API server
//! unreachable or failing) marks the cache stale, keeps serving the last
//! state, and after a backoff starts over with a fresh list; the cache is
//! fresh again once that list is complete.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher::{self, Event};

use super::pods::{AnnotationFilter, Counts, PodInfo, PodStore};
use crate::metrics::K8sMetrics;

/// First and longest wait before starting over after an error.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

pub struct PodWatch {
    pub store: Arc<PodStore>,
    pub metrics: K8sMetrics,
    pub annotations: AnnotationFilter,
    /// Set to true after each complete list.
    pub synced: tokio::sync::watch::Sender<bool>,
}

impl PodWatch {
    fn counts(&self, c: Counts) {
        self.metrics.pods.set(c.pods as i64);
        self.metrics.containers.set(c.containers as i64);
    }

    fn info(&self, pod: &Pod) -> Option<PodInfo> {
        PodInfo::from_pod(pod, &self.annotations)
    }

    /// Run until the task is dropped.
    pub async fn run(self, client: kube::Client, node: String) {
        let api: Api<Pod> = Api::all(client);
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let mut backoff = BACKOFF_MIN;
        loop {
            let stream = watcher::watcher(api.clone(), config.clone());
            let mut stream = std::pin::pin!(stream);
            let mut listing: Option<Vec<PodInfo>> = None;
            let error = loop {
                match stream.next().await {
                    Some(Ok(Event::Init)) => listing = Some(Vec::new()),
                    Some(Ok(Event::InitApply(pod))) => {
                        if let (Some(list), Some(info)) = (listing.as_mut(), self.info(&pod)) {
                            list.push(info);
                        }
                    }
                    Some(Ok(Event::InitDone)) => {
                        let pods = listing.take().unwrap_or_default();
                        let n = pods.len();
                        self.counts(self.store.replace_all(pods));
                        self.metrics.lists.inc();
                        if self.metrics.stale.set(0) != 0 {
                            tracing::info!(pods = n, "pod cache resynced with the API server");
                        } else {
                            tracing::debug!(pods = n, %node, "pod cache listed");
                        }
                        self.synced.send_replace(true);
                        backoff = BACKOFF_MIN;
                    }
                    Some(Ok(Event::Apply(pod))) => {
                        if let Some(info) = self.info(&pod) {
                            tracing::trace!(pod = %info.name, namespace = %info.namespace, "pod applied");
                            self.counts(self.store.apply(info));
                        }
                    }
                    Some(Ok(Event::Delete(pod))) => {
                        if let Some(uid) = pod.metadata.uid.as_deref() {
                            self.counts(self.store.delete(uid));
                        }
                    }
                    Some(Err(e)) => break e.to_string(),
                    None => break "the watch stream ended".to_owned(),
                }
            };
            self.metrics.watch_errors.inc();
            if self.metrics.stale.set(1) == 0 {
                tracing::warn!(
                    "pod watch failed ({error}); serving the last known pods and retrying with backoff"
                );
            } else {
                tracing::debug!("pod watch failed again ({error}); retrying in {backoff:?}");
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// `d` plus up to a quarter more, so many nodes do not retry in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
}
