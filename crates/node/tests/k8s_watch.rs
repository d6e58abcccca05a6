//! The pod cache against a faithful fake API server (real HTTP, real
//! kube-rs client and watcher, real `k8s-openapi` objects): initial list,
//! changes, bookmarks, dropped watches, 410 Gone, an unavailable API server.
//! No root needed: the cgroup half points at an empty directory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_node::k8s::{Identity, K8sConfig, Workloads};
use conductor_node::metrics::Metrics;
use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::Pod;

const NODE: &str = "node-a";

fn hex_id(n: u32) -> String {
    format!("{:064x}", 0x00c0_ffee_0000_u64 + u64::from(n))
}

fn pod(ns: &str, name: &str, node: &str, n: u32) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns,
            "labels": {"app": name, "pod-template-hash": "5d8f7c9b4"},
            "annotations": {"team.example.com/owner": "payments", "other": "dropped"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("{name}-5d8f7c9b4"), "uid": "rs-uid", "controller": true}]
        },
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": format!("registry.example/{name}:1")}]},
        "status": {
            "podIP": format!("10.1.0.{n}"), "podIPs": [{"ip": format!("10.1.0.{n}")}],
            "containerStatuses": [{"name": "app", "containerID": format!("containerd://{}", hex_id(n)),
                "image": format!("registry.example/{name}:1"), "imageID": "", "ready": true, "restartCount": 0}]
        }
    }))
    .expect("a valid pod")
}

struct Cache {
    workloads: Arc<Workloads>,
    metrics: Metrics,
    _cgroups: tempfile::TempDir,
}

async fn start(api: &FakeApiServer) -> Cache {
    let client = kube::Client::try_from(api.kube_config()).expect("client for the fake API server");
    let metrics = Metrics::new();
    let cgroups = tempfile::tempdir().unwrap();
    let config = K8sConfig {
        node_name: Some(NODE.into()),
        annotations: vec!["team.example.com/*".into()],
        cgroup_root: Some(cgroups.path().to_owned()),
        min_rescan: Duration::from_millis(100),
        sync_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let workloads = Workloads::start_with_client(
        Some((client, NODE.into())),
        config,
        metrics.host.k8s.clone(),
    )
    .await;
    Cache {
        workloads,
        metrics,
        _cgroups: cgroups,
    }
}

impl Cache {
    /// The pods the cache holds, as (namespace/name, uid) sorted.
    fn names(&self) -> Vec<String> {
        self.workloads
            .pods()
            .pods()
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect()
    }

    async fn wait_for(&self, what: &str, ok: impl Fn(&Self) -> bool) {
        let until = Instant::now() + Duration::from_secs(30);
        while !ok(self) {
            assert!(
                Instant::now() < until,
                "{what}: never happened; cache holds {:?}, stale={}",
                self.names(),
                self.stale()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stale(&self) -> i64 {
        self.metrics.host.k8s.stale.get()
    }

    fn pod_of(&self, n: u32) -> Option<String> {
        match self.workloads.by_container_id(&hex_id(n)) {
            Identity::Workload { pod, .. } => Some(pod.name.clone()),
            _ => None,
        }
    }
}

fn lists(api: &FakeApiServer) -> usize {
    api.requests()
        .iter()
        .filter(|r| {
            r.method == "GET" && r.path.ends_with("/pods") && !r.query.contains("watch=true")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_this_nodes_pods_then_follows_changes() {
    let api = FakeApiServer::start();
    api.create(&pod("shop", "web", NODE, 1));
    api.create(&pod("shop", "db", NODE, 2));
    api.create(&pod("shop", "elsewhere", "node-b", 3));
    let cache = start(&api).await;

    // The initial list is complete before start returns, and only this node's.
    assert_eq!(cache.names(), ["shop/db", "shop/web"]);
    assert_eq!(cache.metrics.host.k8s.pods.get(), 2);
    assert_eq!(cache.metrics.host.k8s.containers.get(), 2);
    assert_eq!(cache.stale(), 0);
    assert!(
        api.requests()
            .iter()
            .any(|r| r.query.contains("fieldSelector=spec.nodeName")),
        "the cache must ask only for its node's pods: {:?}",
        api.requests()
    );
    // What the plugins see.
    let Identity::Workload {
        pod: web,
        container,
    } = cache
        .workloads
        .by_container_id(&format!("containerd://{}", hex_id(1)))
    else {
        panic!("web's container is not known")
    };
    assert_eq!(
        (web.namespace.as_str(), web.name.as_str(), web.node.as_str()),
        ("shop", "web", NODE)
    );
    assert_eq!(web.owner, Some(("Deployment".into(), "web".into())));
    assert_eq!(web.label("app"), Some("web"));
    assert_eq!(
        web.annotations,
        vec![("team.example.com/owner".into(), "payments".into())]
    );
    let c = &web.containers[container.unwrap()];
    assert_eq!(
        (c.name.as_str(), c.image.as_str()),
        ("app", "registry.example/web:1")
    );
    assert!(matches!(
        cache.workloads.by_ip("10.1.0.2".parse().unwrap()),
        Identity::Workload { pod, .. } if pod.name == "db"
    ));
    assert!(matches!(
        cache.workloads.by_ip("10.1.0.3".parse().unwrap()),
        Identity::Unknown
    ));
    assert!(matches!(
        cache.workloads.by_container_id(&hex_id(3)),
        Identity::Unknown
    ));

    // Added.
    api.create(&pod("shop", "cache", NODE, 4));
    cache
        .wait_for("a new pod appears", |c| {
            c.pod_of(4).as_deref() == Some("cache")
        })
        .await;
    // Modified: a restarted container has a new id; the old one is forgotten.
    let mut web = api.get::<Pod>(Some("shop"), "web").unwrap();
    web.status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .container_id = Some(format!("containerd://{}", hex_id(5)));
    web.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("version".into(), "2".into());
    api.replace(&web);
    cache
        .wait_for("the restarted container is known", |c| {
            c.pod_of(5).as_deref() == Some("web")
        })
        .await;
    assert_eq!(cache.pod_of(1), None);
    let web = cache
        .workloads
        .pods()
        .pods()
        .into_iter()
        .find(|p| p.name == "web")
        .unwrap();
    assert_eq!(web.label("version"), Some("2"));
    // Deleted.
    api.delete::<Pod>(Some("shop"), "db");
    cache
        .wait_for("a deleted pod disappears", |c| c.pod_of(2).is_none())
        .await;
    assert_eq!(cache.names(), ["shop/cache", "shop/web"]);
    assert_eq!(cache.metrics.host.k8s.pods.get(), 2);
    assert!(matches!(
        cache.workloads.by_ip("10.1.0.2".parse().unwrap()),
        Identity::Unknown
    ));
    assert_eq!(lists(&api), 1, "no relist without a reason");
    assert_eq!(cache.stale(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_and_dropped_watches_lose_nothing() {
    let api = FakeApiServer::start();
    api.create(&pod("a", "one", NODE, 1));
    let cache = start(&api).await;
    assert_eq!(cache.names(), ["a/one"]);
    // A change seen through the watch: it is open (a bookmark goes only to
    // open watches).
    api.create(&pod("a", "zero", NODE, 30));
    cache
        .wait_for("a pod through the watch", |c| c.pod_of(30).is_some())
        .await;

    // Other nodes' pods move the resourceVersion on unseen by this node's
    // watch; a bookmark brings the watch's version up to date, so resuming
    // after compaction needs no relist.
    for n in 20..23 {
        api.create(&pod("a", &format!("other{n}"), "node-b", n));
    }
    // Bookmarks come periodically from a real server; the fake skips one
    // that would overtake events it has not sent yet, so send a few.
    for _ in 0..5 {
        api.send_bookmark();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api.compact();
    api.create(&pod("a", "two", NODE, 2));
    cache
        .wait_for("a pod after a bookmark", |c| c.pod_of(2).is_some())
        .await;
    assert_eq!(
        lists(&api),
        1,
        "the bookmark spared a relist after compaction"
    );
    assert_eq!(cache.metrics.host.k8s.watch_errors.get(), 0);

    // Cut every watch, change things while no watch is open, then more.
    for round in 0..3u32 {
        api.drop_watches();
        api.create(&pod("a", &format!("p{round}"), NODE, 10 + round));
        api.delete::<Pod>(Some("a"), "one");
        api.create(&pod("a", "one", NODE, 1));
    }
    cache
        .wait_for("every change made around dropped watches", |c| {
            (0..3).all(|r| c.pod_of(10 + r).is_some()) && c.pod_of(1).is_some()
        })
        .await;
    assert_eq!(
        cache.names(),
        ["a/one", "a/p0", "a/p1", "a/p2", "a/two", "a/zero"]
    );
    assert_eq!(cache.metrics.host.k8s.pods.get(), 6);
    assert_eq!(cache.metrics.host.k8s.containers.get(), 6);
    println!(
        "LIST requests after 3 dropped watches: {} (watch errors: {})",
        lists(&api),
        cache.metrics.host.k8s.watch_errors.get()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_relists_without_duplicates_or_leaks() {
    let api = FakeApiServer::start();
    for n in 0..5 {
        api.create(&pod("b", &format!("p{n}"), NODE, n));
    }
    let cache = start(&api).await;
    assert_eq!(cache.names().len(), 5);
    let lists_before = lists(&api);

    let errors_before = cache.metrics.host.k8s.watch_errors.get();

    // Other nodes' pods move the store's resourceVersion on without the
    // node's watch seeing any event; then history is compacted and the
    // watch cut: resuming from its old version gets 410 Gone.
    for n in 20..23 {
        api.create(&pod("b", &format!("other{n}"), "node-b", n));
    }
    api.compact();
    // Changes around the relist.
    api.delete::<Pod>(Some("b"), "p0");
    api.delete::<Pod>(Some("b"), "p1");
    api.create(&pod("b", "p9", NODE, 9));

    cache
        .wait_for("the relist after 410", |c| {
            c.pod_of(9).is_some() && c.pod_of(0).is_none() && c.pod_of(1).is_none()
        })
        .await;
    cache.wait_for("fresh again", |c| c.stale() == 0).await;
    assert_eq!(cache.names(), ["b/p2", "b/p3", "b/p4", "b/p9"]);
    assert_eq!(cache.metrics.host.k8s.pods.get(), 4);
    assert_eq!(cache.metrics.host.k8s.containers.get(), 4);
    assert!(
        lists(&api) > lists_before,
        "410 Gone must lead to a new LIST"
    );
    assert!(
        cache.metrics.host.k8s.watch_errors.get() > errors_before,
        "the 410 is an error of the watch"
    );
    assert_eq!(
        cache.metrics.host.k8s.lists.get(),
        2,
        "one list at start, one after 410"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_api_serves_last_state_marks_stale_and_recovers() {
    let api = FakeApiServer::start();
    for n in 0..3 {
        api.create(&pod("c", &format!("p{n}"), NODE, n));
    }
    let cache = start(&api).await;
    assert_eq!(cache.stale(), 0);

    api.set_unavailable(true);
    api.drop_watches();
    cache
        .wait_for("stale while the API server fails", |c| c.stale() == 1)
        .await;
    // The last state is still served.
    assert_eq!(cache.pod_of(0).as_deref(), Some("p0"));
    assert_eq!(cache.names().len(), 3);
    // Let it retry a few times against the failing server.
    let errors = cache.metrics.host.k8s.watch_errors.get();
    cache
        .wait_for("retries", |c| {
            c.metrics.host.k8s.watch_errors.get() >= errors + 2
        })
        .await;
    assert_eq!(cache.stale(), 1);

    // Changes made while the cache cannot see them (as the kubelet would).
    api.delete::<Pod>(Some("c"), "p0");
    api.create(&pod("c", "p7", NODE, 7));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        cache.pod_of(0).as_deref(),
        Some("p0"),
        "still the last state"
    );

    api.set_unavailable(false);
    cache
        .wait_for("fresh after recovery", |c| c.stale() == 0)
        .await;
    assert_eq!(cache.names(), ["c/p1", "c/p2", "c/p7"]);
    assert_eq!(
        cache.pod_of(0),
        None,
        "a pod deleted during the outage is gone"
    );
    assert_eq!(cache.metrics.host.k8s.pods.get(), 3);
    assert_eq!(cache.metrics.host.k8s.containers.get(), 3);
    println!(
        "outage: {} watch errors, {} LIST requests in all",
        cache.metrics.host.k8s.watch_errors.get(),
        lists(&api)
    );
}
