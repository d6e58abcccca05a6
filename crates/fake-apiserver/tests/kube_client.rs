//! The fake, driven by the real kube-rs client and watcher: what the host's
//! metadata cache and the operator rely on must behave as on a real server.

use std::collections::BTreeMap;
use std::time::Duration;

use fake_apiserver::FakeApiServer;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, PodSpec, PodStatus};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

fn pod(ns: &str, name: &str, node: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some(BTreeMap::from([("app".into(), name.into())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn client(api: &FakeApiServer) -> Client {
    Client::try_from(api.kube_config()).expect("a client for the fake")
}

fn api_code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error status, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_selectors_conflicts_and_errors() {
    let fake = FakeApiServer::start();
    fake.create(&pod("default", "a", "node-1"));
    fake.create(&pod("kube-system", "b", "node-2"));
    let pods: Api<Pod> = Api::all(client(&fake));

    let on_node1 = pods
        .list(&ListParams::default().fields("spec.nodeName=node-1"))
        .await
        .unwrap();
    let names: Vec<_> = on_node1
        .items
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["a"]);
    let by_label = pods
        .list(&ListParams::default().labels("app in (b,c)"))
        .await
        .unwrap();
    assert_eq!(by_label.items.len(), 1);
    assert_eq!(by_label.metadata.resource_version.as_deref(), Some("2"));

    let ns: Api<Pod> = Api::namespaced(client(&fake), "default");
    let mut a = ns.get("a").await.unwrap();
    assert_eq!(a.metadata.generation, Some(1));
    assert!(a.metadata.uid.is_some());
    assert_eq!(api_code(ns.get("missing").await.unwrap_err()), 404);
    assert_eq!(
        api_code(
            ns.create(&PostParams::default(), &pod("default", "a", "x"))
                .await
                .unwrap_err()
        ),
        409
    );

    // A write with the current version succeeds and bumps generation (the
    // spec changed); one with the old version is a conflict.
    let stale = a.clone();
    a.spec.as_mut().unwrap().node_name = Some("node-3".into());
    let a2 = ns.replace("a", &PostParams::default(), &a).await.unwrap();
    assert_eq!(a2.metadata.generation, Some(2));
    assert_eq!(
        api_code(
            ns.replace("a", &PostParams::default(), &stale)
                .await
                .unwrap_err()
        ),
        409
    );

    // Status goes through its subresource only.
    let status = serde_json::json!({"status": {"phase": "Running", "podIP": "10.0.0.7"}});
    ns.patch_status("a", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let spec_patch =
        serde_json::json!({"metadata": {"labels": {"tier": "web"}}, "status": {"phase": "Failed"}});
    let a3 = ns
        .patch("a", &PatchParams::default(), &Patch::Merge(&spec_patch))
        .await
        .unwrap();
    assert_eq!(
        a3.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
    assert_eq!(a3.metadata.labels.unwrap()["tier"], "web");
    assert_eq!(a3.metadata.generation, Some(2), "labels are not spec");

    fake.fail_next("GET", "/pods/a", 500);
    assert_eq!(api_code(ns.get("a").await.unwrap_err()), 500);
    ns.get("a").await.expect("only one request fails");

    fake.fail_next("GET", "/pods/a", 409);
    assert_eq!(api_code(ns.get("a").await.unwrap_err()), 409);

    fake.set_unavailable(true);
    match ns.get("a").await {
        Err(kube::Error::Api(s)) => panic!("an unreachable server answered: {s:?}"),
        Err(_) => {}
        Ok(_) => panic!("an unreachable server answered"),
    }
    assert!(
        Api::<Pod>::namespaced(client(&fake), "default")
            .get("a")
            .await
            .is_err(),
        "a new connection is refused too"
    );
    fake.set_unavailable(false);
    ns.get("a").await.expect("the server is back");

    ns.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(fake.get::<Pod>(Some("default"), "a").is_none());
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let fake = FakeApiServer::start();
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("held".into());
    cm.metadata.namespace = Some("default".into());
    cm.metadata.finalizers = Some(vec!["example.com/cleanup".into()]);
    fake.create(&cm);
    let cms: Api<ConfigMap> = Api::namespaced(client(&fake), "default");

    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let held = cms.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());

    let rm = serde_json::json!({"metadata": {"finalizers": null}});
    cms.patch("held", &PatchParams::default(), &Patch::Merge(&rm))
        .await
        .unwrap();
    assert_eq!(api_code(cms.get("held").await.unwrap_err()), 404);
}

/// The watcher's view, reduced to (event, name) pairs.
async fn next_names(
    stream: &mut (impl futures_util::Stream<Item = Result<Event<Pod>, watcher::Error>> + Unpin),
    count: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < count {
        let ev = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("the watcher produced nothing for 20 s")
            .expect("the watcher stream ended");
        match ev {
            Ok(Event::Init) => out.push("init".into()),
            Ok(Event::InitApply(p)) => out.push(format!("init:{}", p.metadata.name.unwrap())),
            Ok(Event::InitDone) => out.push("done".into()),
            Ok(Event::Apply(p)) => out.push(format!("apply:{}", p.metadata.name.unwrap())),
            Ok(Event::Delete(p)) => out.push(format!("delete:{}", p.metadata.name.unwrap())),
            Err(_) => out.push("error".into()),
        }
    }
    out
}

#[tokio::test]
async fn watcher_follows_changes_resumes_and_relists_after_410() {
    let fake = FakeApiServer::start();
    fake.create(&pod("default", "a", "node-1"));
    fake.create(&pod("default", "other-node", "node-2"));
    let pods: Api<Pod> = Api::all(client(&fake));
    let config = watcher::Config::default().fields("spec.nodeName=node-1");
    let mut stream = watcher::watcher(pods, config).boxed();

    assert_eq!(next_names(&mut stream, 3).await, ["init", "init:a", "done"]);

    fake.create(&pod("default", "b", "node-1"));
    fake.create(&pod("default", "elsewhere", "node-2"));
    let mut b = fake.get::<Pod>(Some("default"), "b").unwrap();
    b.status = Some(PodStatus {
        phase: Some("Running".into()),
        ..Default::default()
    });
    fake.replace(&b);
    fake.delete::<Pod>(Some("default"), "a");
    assert_eq!(
        next_names(&mut stream, 3).await,
        ["apply:b", "apply:b", "delete:a"]
    );

    // A cut connection: the watcher resumes from its last version and
    // misses nothing that happened meanwhile, without listing again.
    fake.send_bookmark();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lists_before = fake.requests().iter().filter(|r| r.is_list()).count();
    fake.drop_watches();
    fake.create(&pod("default", "c", "node-1"));
    let after_cut = next_names(&mut stream, 1).await;
    let after_cut = if after_cut == ["error"] {
        next_names(&mut stream, 1).await
    } else {
        after_cut
    };
    assert_eq!(after_cut, ["apply:c"]);
    assert_eq!(
        fake.requests().iter().filter(|r| r.is_list()).count(),
        lists_before
    );

    // History compacted while the watcher was away: 410 Gone, then a full
    // relist that reflects a deletion that happened in the gap.
    fake.set_unavailable(true);
    fake.delete::<Pod>(Some("default"), "b");
    fake.compact();
    fake.set_unavailable(false);
    let mut seen = Vec::new();
    while !seen.contains(&"done".to_string()) {
        seen.extend(next_names(&mut stream, 1).await);
    }
    let relisted: Vec<_> = seen
        .iter()
        .filter(|s| s.starts_with("init:"))
        .cloned()
        .collect();
    assert_eq!(relisted, ["init:c"], "{seen:?}");
    // kube's watcher lists again only after a 410 (a broken connection
    // makes it resume the watch instead), whether the 410 came on the open
    // stream or on a new watch.
    assert!(fake.requests().iter().filter(|r| r.is_list()).count() > lists_before);
}

#[tokio::test]
async fn cluster_scoped_objects_and_streaming_lists() {
    let fake = FakeApiServer::start();
    let mut node = Node::default();
    node.metadata.name = Some("node-1".into());
    node.metadata.labels = Some(BTreeMap::from([("role".into(), "worker".into())]));
    fake.create(&node);
    let nodes: Api<Node> = Api::all(client(&fake));
    assert_eq!(
        nodes.get("node-1").await.unwrap().metadata.labels.unwrap()["role"],
        "worker"
    );

    let config = watcher::Config::default().streaming_lists();
    let mut stream = watcher::watcher(nodes, config).boxed();
    let mut seen = Vec::new();
    while !seen.contains(&"done".to_string()) {
        let ev = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap()
            .unwrap();
        seen.push(match ev {
            Ok(Event::Init) => "init".to_string(),
            Ok(Event::InitApply(n)) => format!("init:{}", n.metadata.name.unwrap()),
            Ok(Event::InitDone) => "done".into(),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(seen, ["init", "init:node-1", "done"]);
    assert!(
        fake.requests().iter().all(|r| !r.is_list()),
        "a streaming list does not LIST"
    );
}
