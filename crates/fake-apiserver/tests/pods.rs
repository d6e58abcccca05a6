//! `pods/log` and the pod proxy, read by the real `kubectl` (`kubectl logs`,
//! `kubectl get --raw .../proxy/...`): what `kubectl conductor logs` and
//! `top` rely on. The pod behind the proxy is a real HTTP server (a second
//! fake API server); the log is a CRI log file written as a container
//! runtime writes it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

use conductor_test_support::kubectl_present;
use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

struct Kubectl {
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(api: &FakeApiServer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        api.write_kubeconfig(&dir.path().join("kubeconfig"));
        Self { dir }
    }
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("HOME", self.dir.path())
            .args(args);
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn pod(name: &str, ip: Option<&str>, ports: &[(&str, i32)]) -> Pod {
    let container = |n: &str, ports: Vec<ContainerPort>| Container {
        name: n.into(),
        ports: Some(ports).filter(|p| !p.is_empty()),
        ..Default::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([("app".to_string(), "x".to_string())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![
                container(
                    "host",
                    ports
                        .iter()
                        .map(|(n, p)| ContainerPort {
                            name: Some(n.to_string()),
                            container_port: *p,
                            ..Default::default()
                        })
                        .collect(),
                ),
                container("operator", Vec::new()),
            ],
            ..Default::default()
        }),
        status: ip.map(|ip| PodStatus {
            pod_ip: Some(ip.into()),
            ..Default::default()
        }),
    }
}

/// `kubectl logs`: container selection with the real errors, timestamps,
/// `--since-time`, `--tail`, and `-f` streaming records appended later until
/// the pod is deleted.
#[test]
fn kubectl_logs_reads_the_container_log() {
    if !kubectl_present() {
        return;
    }
    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    api.create(&pod("p", None, &[]));
    let file = k.dir.path().join("host.log");
    std::fs::write(
        &file,
        "2026-11-30T07:00:00.5Z stderr F first line\n\
         2026-11-30T07:00:01Z stdout P second \n\
         2026-11-30T07:00:01Z stdout F line\n\
         2026-11-30T07:00:02.123456789Z stderr F third line\n",
    )
    .unwrap();

    let out = k.run(&["logs", "p", "-c", "host"]);
    assert!(
        !out.status.success(),
        "no log yet: waiting to start: {out:?}"
    );
    assert!(text(&out.stderr).contains("is waiting to start"), "{out:?}");
    api.set_container_log("default", "p", "host", &file);

    // kubectl picks the first container itself; the server asks for one.
    let out = k.run(&["logs", "p"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains("Defaulted container \"host\""),
        "{out:?}"
    );
    let out = k.run(&["get", "--raw", "/api/v1/namespaces/default/pods/p/log"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("a container name must be specified for pod p"),
        "{out:?}"
    );
    let out = k.run(&["logs", "p", "-c", "host"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "first line\nsecond line\nthird line\n");
    let out = k.run(&["logs", "p", "-c", "host", "--timestamps", "--tail=1"]);
    assert_eq!(
        text(&out.stdout),
        "2026-11-30T07:00:02.123456789Z third line\n",
        "{out:?}"
    );
    let out = k.run(&[
        "logs",
        "p",
        "-c",
        "host",
        "--since-time=2026-11-30T07:00:01Z",
    ]);
    assert_eq!(text(&out.stdout), "second line\nthird line\n", "{out:?}");
    let out = k.run(&["logs", "p", "-c", "nope"]);
    assert!(
        text(&out.stderr).contains("container nope is not valid for pod p"),
        "{out:?}"
    );
    let out = k.run(&["logs", "nope", "-c", "host"]);
    assert!(
        text(&out.stderr).contains("pods \"nope\" not found"),
        "{out:?}"
    );

    // Follow: the records so far, then what is appended, until the pod goes.
    let mut child = k
        .command(&["logs", "-f", "p", "-c", "host", "--tail=1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "third line");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    f.write_all(b"2026-11-30T07:00:03Z stderr F appended\n")
        .unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "appended");
    assert!(api.delete::<Pod>(Some("default"), "p"));
    assert!(lines.next().is_none(), "the stream ends with the pod");
    assert!(child.wait().unwrap().success());
}

/// The pod proxy forwards to the pod's IP and port (by number, by name, or
/// the first container port) and passes the answer back; an unreachable
/// pod is a 503.
#[test]
fn kubectl_reaches_a_pod_through_the_proxy() {
    if !kubectl_present() {
        return;
    }
    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    // The "pod": a real HTTP server on this machine.
    let target = FakeApiServer::start();
    let port: i32 = target.url().rsplit(':').next().unwrap().parse().unwrap();
    api.create(&pod("web", Some("127.0.0.1"), &[("http", port)]));
    for name in [format!("web:{port}"), "web:http".into(), "web".into()] {
        let path = format!("/api/v1/namespaces/default/pods/{name}/proxy/version");
        let out = k.run(&["get", "--raw", &path]);
        assert!(out.status.success(), "{path}: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["gitVersion"], "v1.32.0-fake-apiserver", "{out:?}");
    }
    assert!(
        target
            .requests()
            .iter()
            .any(|r| r.path == "/version" && r.method == "GET"),
        "forwarded to the pod"
    );
    // A status from the pod is passed back.
    let out = k.run(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/web:http/proxy/api/v1/namespaces/default/pods/none",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("NotFound"), "{out:?}");

    drop(target);
    let out = k.run(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/web:http/proxy/version",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ServiceUnavailable")
            || text(&out.stderr).contains("error trying to reach service"),
        "{out:?}"
    );
}
