//! A fake Kubernetes API server for tests: the real HTTP interface that
//! kube-rs talks to, backed by an in-memory object store.
//!
//! No API server can run on the machines the tests run on, so tests of the
//! host's metadata cache and of the operator drive their real kube-rs
//! clients against this instead. It serves what those clients use, the way
//! the real server does:
//!
//! - list, with `labelSelector` and `fieldSelector` (equality and
//!   inequality on any field path; set-based label selectors), answering
//!   the collection's current `resourceVersion`;
//! - watch from a `resourceVersion`, replaying what happened since, then
//!   live events; `allowWatchBookmarks`; `sendInitialEvents` (streaming
//!   lists); `timeoutSeconds`; a version older than the kept history gets
//!   `410 Gone` as an `ERROR` event, as from a real server after compaction;
//! - get, create (`409 AlreadyExists`, `generateName`), replace (`409
//!   Conflict` on a stale `resourceVersion`), patch (JSON merge patch;
//!   strategic merge and server-side apply are applied as merge patches,
//!   which is what the clients under test rely on; JSON patch), delete
//!   (finalizers: the object gets a `deletionTimestamp` and goes away when
//!   the last finalizer is removed);
//! - the `/status` subresource: writes to it change only `.status`, writes
//!   to the object leave `.status` alone; `metadata.generation` counts spec
//!   changes;
//! - errors as `Status` objects with the real reasons and codes;
//! - what the real `kubectl` (1.32) reads besides objects ([`kubectl`]
//!   module): aggregated discovery (`apidiscovery.k8s.io/v2`
//!   `APIGroupDiscoveryList` from `/api` and `/apis`, which kubectl asks for
//!   first) and legacy discovery (`/api`, `/apis`, each group version's
//!   resources), both including every stored CRD's resources with short
//!   names and categories, OpenAPI v3 (index and per-group-version documents with the
//!   CRDs' schemas and operations that accept `fieldValidation`), `Table`
//!   responses with a CRD's printer columns, and `fieldValidation=Strict`
//!   on creates and replaces of custom resources (unknown fields are
//!   refused with the real server's "strict decoding error" message), and
//!   `SelfSubjectAccessReview`s (`kubectl auth can-i`, with `--as`)
//!   decided by the stored RBAC objects. A CRD is `Established` as soon as
//!   it is created.
//!
//! Faithful at the HTTP boundary means: requests and responses have the
//! real paths, verbs, content types, status codes and JSON shapes, so the
//! real clients (kube-rs, kubectl) run unmodified against it. It is not a
//! reimplementation of the API machinery behind that boundary: no
//! `apidiscovery.k8s.io/v2beta1` (only v2, as servers since 1.30 prefer),
//! no OpenAPI v2 and no schemas for built-in kinds, no
//! validation of built-in kinds, no `deletecollection`, field managers and
//! apply conflicts, admission, authorization of requests (every request is
//! allowed; RBAC is only evaluated for access reviews), or
//! pagination (`limit`/`continue` return everything at once, which a
//! client must accept anyway); tables for built-in kinds have the default
//! `Name`/`Created At` columns, not the real server's per-kind printers.
//!
//! Tests change the store directly, as another actor (the kubelet, a user)
//! would, and inject faults: cut watch streams, compact history, make the
//! server unavailable, fail one request with a given status.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;

mod kubectl;
mod pods;

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The `Accept` header (empty when none was sent).
    pub accept: String,
}

impl Request {
    /// A `GET` of a collection that is not a watch.
    pub fn is_list(&self) -> bool {
        self.method == "GET"
            && !self.is_watch()
            && parse_path(&self.path).is_some_and(|t| t.name.is_none())
    }
    pub fn is_watch(&self) -> bool {
        self.method == "GET"
            && self
                .query
                .split('&')
                .any(|kv| kv == "watch=true" || kv == "watch=1")
    }
}

/// The server; it stops when dropped.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    app: axum::Router,
    /// The accept loop; aborted while the server is "unavailable".
    serving: Mutex<Option<tokio::task::JoinHandle<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeApiServer {
    /// Serve on a free port of 127.0.0.1 (plain HTTP), from a runtime of its
    /// own, so that it can be used from synchronous and async tests alike.
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-apiserver")
            .enable_all()
            .build()
            .expect("fake API server: cannot start a tokio runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("fake API server: cannot bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("fake API server: cannot make the listener non-blocking");
        let addr = listener
            .local_addr()
            .expect("fake API server: no local address");
        let shared = Arc::new(Shared::new());
        let app = axum::Router::new().fallback({
            let shared = shared.clone();
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let shared = shared.clone();
                async move {
                    // Pod logs and the pod proxy wait on files and pods.
                    match pods::Subresource::parse(uri.path()) {
                        Some(sub) if !shared.lock().unavailable => {
                            pods::serve(shared, method, uri, headers, body, sub).await
                        }
                        _ => shared.handle(method, uri, headers, body),
                    }
                }
            }
        });
        let serving = runtime.spawn(serve(listener, app.clone()));
        Self {
            shared,
            addr,
            app,
            serving: Mutex::new(Some(serving)),
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client configuration for this server (default namespace `default`).
    pub fn kube_config(&self) -> kube::Config {
        let url = self.url().parse().expect("a valid URL");
        let mut config = kube::Config::new(url);
        config.default_namespace = "default".into();
        config
    }

    /// Write a kubeconfig file pointing at this server, for child processes.
    pub fn write_kubeconfig(&self, path: &Path) {
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url()}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
            "current-context": "fake",
        });
        let text = serde_yaml_ng::to_string(&doc).expect("kubeconfig serializes");
        std::fs::write(path, text)
            .unwrap_or_else(|e| panic!("cannot write kubeconfig {}: {e}", path.display()));
    }

    /// Create `obj` as another actor would; returns it as stored.
    pub fn create<K: Typed>(&self, obj: &K) -> K {
        let (coll, ns) = collection_of::<K>(obj.meta().namespace.as_deref());
        let value = serde_json::to_value(obj).expect("object serializes");
        let stored = self
            .shared
            .lock()
            .create(&coll, &ns, value)
            .unwrap_or_else(|e| panic!("fake API server: create failed: {}", e.message));
        from_value(stored)
    }

    /// Replace `obj` whole (status included, whatever its resourceVersion),
    /// as another actor would; creates it if missing.
    pub fn replace<K: Typed>(&self, obj: &K) -> K {
        let (coll, ns) = collection_of::<K>(obj.meta().namespace.as_deref());
        let value = serde_json::to_value(obj).expect("object serializes");
        let stored = self.shared.lock().force_replace(&coll, &ns, value);
        from_value(stored)
    }

    pub fn get<K: Typed>(&self, namespace: Option<&str>, name: &str) -> Option<K> {
        let (coll, ns) = collection_of::<K>(namespace);
        let store = self.shared.lock();
        store
            .objects
            .get(&(coll, ns, name.to_owned()))
            .map(|v| from_value(v.clone()))
    }

    /// Every object of `K`'s kind, in all namespaces.
    pub fn list<K: Typed>(&self) -> Vec<K> {
        let (coll, _) = collection_of::<K>(None);
        let store = self.shared.lock();
        store
            .objects
            .iter()
            .filter(|((c, _, _), _)| *c == coll)
            .map(|(_, v)| from_value(v.clone()))
            .collect()
    }

    /// Delete as a user would: with finalizers the object only gets a
    /// `deletionTimestamp`. Returns false if it did not exist.
    pub fn delete<K: Typed>(&self, namespace: Option<&str>, name: &str) -> bool {
        let (coll, ns) = collection_of::<K>(namespace);
        self.shared.lock().delete(&coll, &ns, name).is_ok()
    }

    /// Cut every open watch stream (as a dropped connection would).
    pub fn drop_watches(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Forget the event history: a watch from any version before now gets
    /// `410 Gone`, and open watches are cut (so that they must resume).
    pub fn compact(&self) {
        {
            let mut store = self.shared.lock();
            store.compacted = store.rv;
            store.history.clear();
        }
        self.drop_watches();
    }

    /// While on, the server is unreachable: new connections are refused,
    /// requests on connections already open are cut before an answer, and
    /// open watches are cut. (Not a `503`: kube-rs retries those for many
    /// minutes, while a server that is gone fails fast, which is what
    /// clients must survive.)
    pub fn set_unavailable(&self, on: bool) {
        self.shared.lock().unavailable = on;
        let mut serving = self.serving.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            if let Some(task) = serving.take() {
                task.abort();
            }
            self.drop_watches();
        } else if serving.is_none() {
            let runtime = self
                .runtime
                .as_ref()
                .expect("the runtime lives as long as the server");
            // The port was just released; std sets SO_REUSEADDR, so it can
            // be bound again unless another process took it. The aborted
            // accept loop drops its listener on the runtime's threads, a
            // moment after `abort()`: retry briefly until it has.
            let until = std::time::Instant::now() + Duration::from_secs(5);
            let listener = loop {
                match std::net::TcpListener::bind(self.addr) {
                    Ok(l) => break l,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::AddrInUse
                            && std::time::Instant::now() < until =>
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        panic!("fake API server: cannot listen on {} again: {e}", self.addr)
                    }
                }
            };
            listener
                .set_nonblocking(true)
                .expect("fake API server: cannot make the listener non-blocking");
            let _guard = runtime.enter();
            *serving = Some(runtime.spawn(serve(listener, self.app.clone())));
        }
    }

    /// Answer the next request whose method is `method` and whose path
    /// contains `path_contains` with `status` (e.g. 409, 500) instead.
    pub fn fail_next(&self, method: &str, path_contains: &str, status: u16) {
        self.shared.lock().faults.push(Fault {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            status,
        });
    }

    /// Send a `BOOKMARK` with the current resourceVersion to every watch that
    /// allows bookmarks.
    pub fn send_bookmark(&self) {
        self.shared.bookmarks.send_modify(|n| *n += 1);
    }

    /// Where the kubelet reads a container's log (`pods/log`): a file in the
    /// CRI log format (`<RFC 3339 time> <stream> <F|P> <text>` a line, as the
    /// container runtime writes under `/var/log/pods`). The test plays the
    /// container runtime: it writes the file (see test-support's
    /// `ContainerLog`); the pod itself must be created as usual.
    pub fn set_container_log(&self, namespace: &str, pod: &str, container: &str, file: &Path) {
        self.shared.lock().container_logs.insert(
            (namespace.to_owned(), pod.to_owned(), container.to_owned()),
            file.to_owned(),
        );
    }

    /// The log of the container's previous instance (the one before its
    /// last restart), served for `pods/log?previous=true` as the kubelet
    /// serves it: the whole file, and a follow ends at its end (that
    /// container has terminated). Without one, `previous` gets the real
    /// "previous terminated container ... not found".
    pub fn set_previous_container_log(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        file: &Path,
    ) {
        self.shared.lock().previous_container_logs.insert(
            (namespace.to_owned(), pod.to_owned(), container.to_owned()),
            file.to_owned(),
        );
    }

    /// The requests received so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// The store's current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
}

async fn serve(listener: std::net::TcpListener, app: axum::Router) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return eprintln!("fake API server: cannot register the listener: {e}"),
    };
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("fake API server stopped: {e}");
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// What the typed store methods accept: k8s-openapi objects and kube custom
/// resources.
pub trait Typed: Resource<DynamicType = ()> + Serialize + DeserializeOwned {}
impl<K: Resource<DynamicType = ()> + Serialize + DeserializeOwned> Typed for K {}

fn from_value<K: DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).expect("stored object deserializes into its type")
}

/// The collection (`api/v1/pods`, `apis/group/version/plural`) of `K` and
/// the namespace key (empty for cluster-scoped).
fn collection_of<K: Typed>(namespace: Option<&str>) -> (String, String) {
    let av = K::api_version(&());
    let prefix = if av.contains('/') {
        format!("apis/{av}")
    } else {
        format!("api/{av}")
    };
    (
        format!("{prefix}/{}", K::plural(&())),
        namespace.unwrap_or_default().to_owned(),
    )
}

type Key = (String, String, String);

#[derive(Clone)]
struct Event {
    rv: u64,
    kind: &'static str,
    collection: String,
    namespace: String,
    object: Value,
}

struct Fault {
    method: String,
    path_contains: String,
    status: u16,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// Events after `compacted`, oldest first.
    history: Vec<Event>,
    compacted: u64,
    objects: BTreeMap<Key, Value>,
    /// Kind of the objects of each collection, learnt from the objects.
    kinds: HashMap<String, String>,
    uid_seq: u64,
    unavailable: bool,
    faults: Vec<Fault>,
    requests: Vec<Request>,
    /// (namespace, pod, container) → its CRI log file.
    container_logs: HashMap<Key, std::path::PathBuf>,
    /// The same, of each container's previous instance.
    previous_container_logs: HashMap<Key, std::path::PathBuf>,
}

struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }
    fn not_found(coll: &str, name: &str) -> Self {
        let plural = coll.rsplit('/').next().unwrap_or(coll);
        Self::new(404, "NotFound", format!("{plural} \"{name}\" not found"))
    }
    fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta(obj: &Value) -> &Value {
    &obj["metadata"]
}

fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

/// Everything but metadata and status: what `metadata.generation` counts.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

impl Store {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, kind: &'static str, coll: &str, ns: &str, object: Value) {
        let rv = self.rv;
        self.history.push(Event {
            rv,
            kind,
            collection: coll.to_owned(),
            namespace: ns.to_owned(),
            object,
        });
    }

    fn learn_kind(&mut self, coll: &str, obj: &Value) {
        if let Some(k) = obj["kind"].as_str() {
            self.kinds.insert(coll.to_owned(), k.to_owned());
        }
    }

    fn create(&mut self, coll: &str, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the body is not an object",
            ));
        }
        let mut name = meta(&obj)["name"].as_str().unwrap_or_default().to_owned();
        if name.is_empty() {
            let Some(prefix) = meta(&obj)["generateName"].as_str() else {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "metadata.name or metadata.generateName is required",
                ));
            };
            self.uid_seq += 1;
            name = format!("{prefix}{:05x}", self.uid_seq);
        }
        let key = (coll.to_owned(), ns.to_owned(), name.clone());
        if self.objects.contains_key(&key) {
            let plural = coll.rsplit('/').next().unwrap_or(coll);
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{plural} \"{name}\" already exists"),
            ));
        }
        self.uid_seq += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uid_seq);
        let rv = self.next_rv();
        let m = meta_mut(&mut obj);
        m.insert("name".into(), json!(name));
        if !ns.is_empty() {
            m.insert("namespace".into(), json!(ns));
        }
        m.insert("uid".into(), json!(uid));
        m.insert("resourceVersion".into(), json!(rv.to_string()));
        m.insert("generation".into(), json!(1));
        m.insert("creationTimestamp".into(), json!(now()));
        m.remove("deletionTimestamp");
        if coll == "apis/apiextensions.k8s.io/v1/customresourcedefinitions" {
            // Served at once (the real server takes a moment to get there).
            obj["status"] = json!({
                "acceptedNames": obj["spec"]["names"].clone(),
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "lastTransitionTime": now()},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "lastTransitionTime": now()},
                ],
                "storedVersions": obj["spec"]["versions"].as_array().into_iter().flatten()
                    .filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>(),
            });
        }
        self.learn_kind(coll, &obj);
        self.objects.insert(key, obj.clone());
        self.record("ADDED", coll, ns, obj.clone());
        Ok(obj)
    }

    /// Store `new` in place of the existing object `key` (which must exist),
    /// keeping identity fields, and emit the events it causes.
    fn update(&mut self, key: &Key, mut new: Value) -> Value {
        let old = self.objects.get(key).cloned().unwrap_or(Value::Null);
        let (coll, ns, name) = key;
        for field in ["uid", "creationTimestamp", "deletionTimestamp"] {
            match meta(&old).get(field) {
                Some(v) if !v.is_null() => {
                    meta_mut(&mut new).insert(field.into(), v.clone());
                }
                _ => {}
            }
        }
        let generation = meta(&old)["generation"].as_i64().unwrap_or(1);
        let generation = if spec_part(&old) != spec_part(&new) {
            generation + 1
        } else {
            generation
        };
        let rv = self.next_rv();
        let m = meta_mut(&mut new);
        m.insert("name".into(), json!(name));
        if !ns.is_empty() {
            m.insert("namespace".into(), json!(ns));
        }
        m.insert("generation".into(), json!(generation));
        m.insert("resourceVersion".into(), json!(rv.to_string()));
        if spec_part(&old) == spec_part(&new)
            && old["status"] == new["status"]
            && meta_equal_but_rv(&old, &new)
        {
            // A no-op write: the real server neither bumps the version nor
            // notifies watchers.
            self.rv -= 1;
            return old;
        }
        let finalized = meta(&new)["deletionTimestamp"].is_string()
            && meta(&new)["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty());
        if finalized {
            self.objects.remove(key);
            self.record("DELETED", coll, ns, new.clone());
        } else {
            self.learn_kind(coll, &new);
            self.objects.insert(key.clone(), new.clone());
            self.record("MODIFIED", coll, ns, new.clone());
        }
        new
    }

    fn force_replace(&mut self, coll: &str, ns: &str, obj: Value) -> Value {
        let name = meta(&obj)["name"].as_str().unwrap_or_default().to_owned();
        let key = (coll.to_owned(), ns.to_owned(), name);
        if self.objects.contains_key(&key) {
            self.update(&key, obj)
        } else {
            self.create(coll, ns, obj)
                .unwrap_or_else(|e| panic!("fake API server: replace failed: {}", e.message))
        }
    }

    fn get(&self, key: &Key) -> Result<Value, ApiError> {
        self.objects
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&key.0, &key.2))
    }

    fn check_rv(current: &Value, body: &Value) -> Result<(), ApiError> {
        match meta(body)["resourceVersion"].as_str() {
            Some(rv) if !rv.is_empty() && Some(rv) != meta(current)["resourceVersion"].as_str() => {
                Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                        current["kind"].as_str().unwrap_or("object"),
                        meta(current)["name"].as_str().unwrap_or_default()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// PUT: the whole object, or only its status for `/status`.
    fn put(&mut self, key: &Key, body: Value, status_only: bool) -> Result<Value, ApiError> {
        let current = self.get(key)?;
        Self::check_rv(&current, &body)?;
        let new = merge_write(&current, body, status_only);
        Ok(self.update(key, new))
    }

    fn patch(
        &mut self,
        key: &Key,
        content_type: &str,
        body: &[u8],
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let bad = |e: &dyn std::fmt::Display| ApiError::new(400, "BadRequest", e.to_string());
        let current = match self.get(key) {
            Ok(c) => c,
            // Server-side apply creates what does not exist.
            Err(_) if content_type.starts_with("application/apply-patch") && !status_only => {
                let obj: Value = serde_json::from_slice(body).map_err(|e| bad(&e))?;
                return self.create(&key.0, &key.1, obj);
            }
            Err(e) => return Err(e),
        };
        let mut patched = current.clone();
        if content_type.starts_with("application/json-patch+json") {
            let p: json_patch::Patch = serde_json::from_slice(body).map_err(|e| bad(&e))?;
            json_patch::patch(&mut patched, &p)
                .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
        } else if content_type.starts_with("application/merge-patch+json")
            || content_type.starts_with("application/strategic-merge-patch+json")
            || content_type.starts_with("application/apply-patch")
        {
            let p: Value = serde_json::from_slice(body).map_err(|e| bad(&e))?;
            Self::check_rv(&current, &p)?;
            json_patch::merge(&mut patched, &p);
        } else {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the patch content type {content_type:?} is not supported"),
            ));
        }
        let new = merge_write(&current, patched, status_only);
        Ok(self.update(key, new))
    }

    fn delete(&mut self, coll: &str, ns: &str, name: &str) -> Result<Value, ApiError> {
        let key = (coll.to_owned(), ns.to_owned(), name.to_owned());
        let current = self.get(&key)?;
        let has_finalizers = meta(&current)["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if meta(&current)["deletionTimestamp"].is_string() {
                return Ok(current);
            }
            let mut new = current;
            meta_mut(&mut new).insert("deletionTimestamp".into(), json!(now()));
            // `update` keeps the old (absent) deletionTimestamp; set it here.
            let rv = self.next_rv();
            meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
            self.objects.insert(key, new.clone());
            self.record("MODIFIED", coll, ns, new.clone());
            return Ok(new);
        }
        let mut gone = self.objects.remove(&key).unwrap_or(current);
        let rv = self.next_rv();
        meta_mut(&mut gone).insert("resourceVersion".into(), json!(rv.to_string()));
        self.record("DELETED", coll, ns, gone.clone());
        Ok(gone)
    }
}

fn meta_equal_but_rv(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut m = meta(v).clone();
        if let Some(o) = m.as_object_mut() {
            o.remove("resourceVersion");
            o.remove("generation");
            o.remove("managedFields");
        }
        m
    };
    strip(a) == strip(b)
}

/// What a write through the API changes: `/status` writes only the status;
/// writes to the object leave the status as it was (as for every resource
/// with a status subresource).
fn merge_write(current: &Value, mut body: Value, status_only: bool) -> Value {
    if status_only {
        let mut new = current.clone();
        new["status"] = body.get("status").cloned().unwrap_or(Value::Null);
        return new;
    }
    match current.get("status") {
        Some(s) if body.is_object() => {
            body["status"] = s.clone();
        }
        _ => {
            if let Some(o) = body.as_object_mut() {
                o.remove("status");
            }
        }
    }
    body
}

/// The path of a request, taken apart.
struct Target {
    collection: String,
    namespace: String,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (format!("api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("apis/{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] => (ns.to_string(), {
            let mut r = vec![*plural];
            r.extend_from_slice(tail);
            r
        }),
        other => (String::new(), other.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(*sub)),
        _ => return None,
    };
    match sub {
        None | Some("status") => {}
        Some(_) => return None,
    }
    Some(Target {
        collection: format!("{prefix}/{plural}"),
        namespace,
        name,
        status: sub == Some("status"),
    })
}

/// The query parameters of a list or watch.
#[derive(Default)]
struct ListParams {
    watch: bool,
    resource_version: Option<u64>,
    bookmarks: bool,
    send_initial_events: bool,
    timeout: Option<Duration>,
    labels: Vec<LabelReq>,
    fields: Vec<(String, bool, String)>,
}

enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Split a selector at top-level commas (not those inside `in (a,b)`).
fn split_selector(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, ApiError> {
    let bad = || {
        ApiError::new(
            400,
            "BadRequest",
            format!("unable to parse label selector {s:?}"),
        )
    };
    let set = |v: &str| -> Vec<String> {
        v.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(|x| x.trim().to_owned())
            .collect()
    };
    split_selector(s)
        .into_iter()
        .map(|p| {
            if let Some((k, v)) = p.split_once("!=") {
                Ok(LabelReq::Ne(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                Ok(LabelReq::Eq(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = p.split_once(" notin ") {
                Ok(LabelReq::NotIn(k.trim().into(), set(v)))
            } else if let Some((k, v)) = p.split_once(" in ") {
                Ok(LabelReq::In(k.trim().into(), set(v)))
            } else if let Some(k) = p.strip_prefix('!') {
                Ok(LabelReq::NotExists(k.trim().into()))
            } else if p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Ok(LabelReq::Exists(p))
            } else {
                Err(bad())
            }
        })
        .collect()
}

fn parse_params(query: &str) -> Result<ListParams, ApiError> {
    let mut p = ListParams::default();
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = decode(v);
        match k {
            "watch" => p.watch = v == "true" || v == "1",
            "resourceVersion" if !v.is_empty() => {
                p.resource_version = Some(v.parse().map_err(|_| {
                    ApiError::new(400, "BadRequest", format!("invalid resourceVersion {v:?}"))
                })?)
            }
            "allowWatchBookmarks" => p.bookmarks = v == "true",
            "sendInitialEvents" => p.send_initial_events = v == "true",
            "timeoutSeconds" => p.timeout = v.parse().ok().map(Duration::from_secs),
            "labelSelector" => p.labels = parse_label_selector(&v)?,
            "fieldSelector" => {
                for part in split_selector(&v) {
                    let (field, eq, value) = if let Some((f, x)) = part.split_once("!=") {
                        (f, false, x)
                    } else if let Some((f, x)) =
                        part.split_once("==").or_else(|| part.split_once('='))
                    {
                        (f, true, x)
                    } else {
                        return Err(ApiError::new(
                            400,
                            "BadRequest",
                            format!("invalid field selector {part:?}"),
                        ));
                    };
                    p.fields
                        .push((field.trim().into(), eq, value.trim().into()));
                }
            }
            _ => {}
        }
    }
    Ok(p)
}

impl ListParams {
    fn matches(&self, obj: &Value) -> bool {
        let labels = &meta(obj)["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        let fields_ok = self.fields.iter().all(|(path, eq, want)| {
            let mut v = obj;
            for seg in path.split('.') {
                v = &v[seg];
            }
            let have = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (have == *want) == *eq
        });
        labels_ok && fields_ok
    }
}

struct Shared {
    store: Mutex<Store>,
    /// The latest resourceVersion, for watches waiting for events.
    changes: watch::Sender<u64>,
    cuts: watch::Sender<u64>,
    bookmarks: watch::Sender<u64>,
}

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status())
}

impl Shared {
    fn new() -> Self {
        Self {
            store: Mutex::default(),
            changes: watch::channel(0).0,
            cuts: watch::channel(0).0,
            bookmarks: watch::channel(0).0,
        }
    }

    fn lock(&self) -> StoreGuard<'_> {
        StoreGuard {
            guard: self.store.lock().unwrap_or_else(|e| e.into_inner()),
            changes: &self.changes,
        }
    }

    fn handle(
        self: &Arc<Self>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let path = uri.path().to_owned();
        let query = uri.query().unwrap_or_default().to_owned();
        let mut store = self.lock();
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        store.requests.push(Request {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            accept: accept.clone(),
        });
        if store.unavailable {
            // Cut the connection instead of answering.
            let cut = futures_util::stream::once(async {
                Err::<Bytes, _>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "server unavailable",
                ))
            });
            return Response::builder()
                .status(200)
                .body(Body::from_stream(cut))
                .unwrap_or_else(|e| {
                    error_response(&ApiError::new(500, "InternalError", e.to_string()))
                });
        }
        if let Some(i) = store.faults.iter().position(|f| {
            f.method.eq_ignore_ascii_case(method.as_str()) && path.contains(&f.path_contains)
        }) {
            let f = store.faults.remove(i);
            return error_response(&ApiError::new(
                f.status,
                reason_for(f.status),
                format!("injected failure {} for {method} {path}", f.status),
            ));
        }
        if method == Method::GET {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if let Some(list) = kubectl::wants_aggregated(&accept)
                .then(|| store.aggregated_discovery(&path))
                .flatten()
            {
                return (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, kubectl::AGGREGATED_V2)],
                    list.to_string(),
                )
                    .into_response();
            }
            if let Some(answer) = store.discovery(&path, host) {
                return match answer {
                    Ok(v) => json_response(200, &v),
                    Err(e) => error_response(&e),
                };
            }
        }
        if method == Method::POST
            && path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        {
            let subject = kubectl::Subject::from_headers(&headers);
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json");
            return match kubectl::decode_review(content_type, &body) {
                Ok(review) => json_response(201, &store.access_review(subject.as_ref(), review)),
                Err(e) => error_response(&ApiError::new(400, "BadRequest", e)),
            };
        }
        let Some(target) = parse_path(&path) else {
            return error_response(&ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            ));
        };
        let body_json = || -> Result<Value, ApiError> {
            serde_json::from_slice(&body).map_err(|e| {
                ApiError::new(
                    400,
                    "BadRequest",
                    format!("the request body is not JSON: {e}"),
                )
            })
        };
        let coll = target.collection.clone();
        let ns = target.namespace.clone();
        // kubectl asks for tables (`as=Table;g=meta.k8s.io;v=v1`) to print.
        let as_table = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("as=Table"));
        let strict = query.split('&').any(|kv| kv == "fieldValidation=Strict");
        let body_json = || -> Result<Value, ApiError> {
            let v = body_json()?;
            if strict && !target.status {
                store.check_fields(&coll, &v)?;
            }
            Ok(v)
        };
        let result = match (&method, &target.name) {
            (&Method::GET, None) => {
                let params = match parse_params(&query) {
                    Ok(p) => p,
                    Err(e) => return error_response(&e),
                };
                if params.watch {
                    drop(store);
                    return self.watch(target, params);
                }
                store
                    .list(&coll, &ns, &params)
                    .map(|l| if as_table { store.table(&coll, &l) } else { l })
            }
            (&Method::GET, Some(name)) => store
                .get(&(coll.clone(), ns, name.clone()))
                .map(|o| if as_table { store.table(&coll, &o) } else { o }),
            (&Method::POST, None) => {
                let body = body_json();
                body.and_then(|b| store.create(&coll, &ns, b))
            }
            (&Method::PUT, Some(name)) => {
                let body = body_json();
                body.and_then(|b| store.put(&(coll, ns, name.clone()), b, target.status))
            }
            (&Method::PATCH, Some(name)) => {
                let ct = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/merge-patch+json")
                    .to_owned();
                store.patch(&(coll, ns, name.clone()), &ct, &body, target.status)
            }
            (&Method::DELETE, Some(name)) => store.delete(&coll, &ns, name),
            _ => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("{method} is not supported on {path}"),
            )),
        };
        match result {
            Ok(v) => json_response(if method == Method::POST { 201 } else { 200 }, &v),
            Err(e) => error_response(&e),
        }
    }

    /// A watch stream: history after the requested version, then live
    /// events, as newline-delimited JSON.
    fn watch(self: &Arc<Self>, target: Target, params: ListParams) -> Response {
        let shared = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
        tokio::spawn(async move {
            let mut changes = shared.changes.subscribe();
            let mut cuts = shared.cuts.subscribe();
            let mut bookmarks = shared.bookmarks.subscribe();
            cuts.mark_unchanged();
            bookmarks.mark_unchanged();
            let deadline = params.timeout.map(|t| tokio::time::Instant::now() + t);
            let line = |v: Value| Ok::<_, std::io::Error>(Bytes::from(format!("{v}\n")));

            // Where the stream starts. Without a version (or "0") the real
            // server first sends the current objects as ADDED, as it does
            // for `sendInitialEvents` (which ends them with a bookmark).
            let start = shared.lock().watch_start(&target, &params);
            let mut sent = match start {
                Start::Gone(rv) => {
                    let gone =
                        ApiError::new(410, "Expired", format!("too old resource version: {rv}"));
                    let _ = tx
                        .send(line(json!({"type": "ERROR", "object": gone.status()})))
                        .await;
                    return;
                }
                Start::From(rv) => rv,
                Start::Initial { objects, rv, kind } => {
                    for o in objects {
                        if tx
                            .send(line(json!({"type": "ADDED", "object": o})))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    if params.send_initial_events {
                        let end = json!({"type": "BOOKMARK", "object": {
                            "kind": kind,
                            "apiVersion": api_version_of(&target.collection),
                            "metadata": {"resourceVersion": rv.to_string(),
                                "annotations": {"k8s.io/initial-events-end": "true"}}}});
                        if tx.send(line(end)).await.is_err() {
                            return;
                        }
                    }
                    rv
                }
            };
            loop {
                // Everything after `sent` that this watch selects.
                let pending: Result<Vec<Event>, u64> = {
                    let store = shared.lock();
                    if sent < store.compacted {
                        Err(sent)
                    } else {
                        Ok(store
                            .history
                            .iter()
                            .filter(|e| e.rv > sent)
                            .cloned()
                            .collect())
                    }
                };
                match pending {
                    Err(rv) => {
                        let gone = ApiError::new(
                            410,
                            "Expired",
                            format!("too old resource version: {rv}"),
                        );
                        let _ = tx
                            .send(line(json!({"type": "ERROR", "object": gone.status()})))
                            .await;
                        return;
                    }
                    Ok(events) => {
                        for e in events {
                            sent = e.rv;
                            if e.collection != target.collection
                                || (!target.namespace.is_empty() && e.namespace != target.namespace)
                                || !params.matches(&e.object)
                            {
                                continue;
                            }
                            if tx
                                .send(line(json!({"type": e.kind, "object": e.object})))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
                let timeout = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    _ = cuts.changed() => {
                        // A cut connection: the client sees the body end
                        // with an error, not a clean end of stream.
                        let _ = tx.send(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "watch cut by the test"))).await;
                        return;
                    }
                    _ = bookmarks.changed() => {
                        if params.bookmarks {
                            let (rv, kind) = {
                                let store = shared.lock();
                                (store.rv, store.kinds.get(&target.collection).cloned())
                            };
                            let b = json!({"type": "BOOKMARK", "object": {
                                "kind": kind.unwrap_or_default(),
                                "apiVersion": api_version_of(&target.collection),
                                "metadata": {"resourceVersion": rv.to_string()}}});
                            // Events up to `rv` are sent before the bookmark
                            // on the next round; the bookmark must not jump
                            // ahead of them.
                            let pending_before = shared.lock().history.iter().any(|e| e.rv > sent);
                            if !pending_before {
                                sent = rv;
                                if tx.send(line(b)).await.is_err() { return; }
                            }
                        }
                    }
                    _ = timeout => return,
                }
            }
        });
        let stream = tokio_stream_from(rx);
        Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(stream))
            .unwrap_or_else(|e| error_response(&ApiError::new(500, "InternalError", e.to_string())))
    }
}

fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

fn api_version_of(collection: &str) -> String {
    let parts: Vec<&str> = collection.split('/').collect();
    match parts.as_slice() {
        ["api", v, _] => (*v).to_owned(),
        ["apis", g, v, _] => format!("{g}/{v}"),
        _ => String::new(),
    }
}

/// The store, locked; announces a new resourceVersion to watches when
/// released.
struct StoreGuard<'a> {
    guard: MutexGuard<'a, Store>,
    changes: &'a watch::Sender<u64>,
}

impl std::ops::Deref for StoreGuard<'_> {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.guard
    }
}
impl std::ops::DerefMut for StoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut Store {
        &mut self.guard
    }
}
impl Drop for StoreGuard<'_> {
    fn drop(&mut self) {
        let rv = self.guard.rv;
        self.changes.send_if_modified(|cur| {
            if *cur != rv {
                *cur = rv;
                true
            } else {
                false
            }
        });
    }
}

/// Where a watch starts.
enum Start {
    /// Send these objects as ADDED first (no version, "0", or
    /// `sendInitialEvents`), then events after `rv`.
    Initial {
        objects: Vec<Value>,
        rv: u64,
        kind: String,
    },
    From(u64),
    /// The version is older than the kept history.
    Gone(u64),
}

impl Store {
    /// Without a version (or "0") the real server first sends the current
    /// objects as ADDED, as it does for `sendInitialEvents` (which ends them
    /// with a bookmark).
    fn watch_start(&self, target: &Target, params: &ListParams) -> Start {
        match params.resource_version {
            None | Some(0) => {}
            Some(_) if params.send_initial_events => {}
            Some(rv) if rv < self.compacted => return Start::Gone(rv),
            Some(rv) => return Start::From(rv),
        }
        let objects = self
            .objects
            .iter()
            .filter(|((c, n, _), o)| {
                *c == target.collection
                    && (target.namespace.is_empty() || *n == target.namespace)
                    && params.matches(o)
            })
            .map(|(_, o)| o.clone())
            .collect();
        Start::Initial {
            objects,
            rv: self.rv,
            kind: self
                .kinds
                .get(&target.collection)
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn list(&self, coll: &str, ns: &str, params: &ListParams) -> Result<Value, ApiError> {
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((c, n, _), o)| c == coll && (ns.is_empty() || n == ns) && params.matches(o))
            .map(|(_, o)| o.clone())
            .collect();
        let kind = self
            .kinds
            .get(coll)
            .map(|k| format!("{k}List"))
            .unwrap_or_else(|| "List".into());
        Ok(json!({
            "kind": kind,
            "apiVersion": api_version_of(coll),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        }))
    }
}
