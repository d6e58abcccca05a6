//! Two pod subresources, served as the real API server serves them: what
//! `kubectl logs` and `kubectl get --raw .../pods/<name>:<port>/proxy/...`
//! (and `kubectl conductor logs` / `top`) read.
//!
//! - `GET /api/v1/namespaces/<ns>/pods/<name>/log`: a container's log as the
//!   kubelet serves it from the container runtime's log file. The file is
//!   in the CRI log format (`<RFC 3339 time> <stream> <F|P> <text>`, one
//!   record a line, as under `/var/log/pods`), registered by the test with
//!   [`FakeApiServer::set_container_log`](crate::FakeApiServer::set_container_log)
//!   (the role of the container runtime). Parameters: `container` (required
//!   when the pod has several, with the real error message),
//!   `timestamps`, `sinceTime`, `sinceSeconds`, `tailLines`, `limitBytes`,
//!   `follow`, `previous` (the previous instance's log when the test
//!   registered one, else the real "not found" answer). A
//!   follow streams new records as the file grows, until the client goes
//!   away or the pod is deleted (the real kubelet ends it when the
//!   container stops).
//! - `/api/v1/namespaces/<ns>/pods/<name>[:<port>]/proxy/<path>`: the
//!   request forwarded over HTTP to the pod's `status.podIP` and the port
//!   (a number, a container port's name, or the first container port),
//!   the answer passed back with its status, content type and body; a pod
//!   that cannot be reached is `503` with the real "error trying to reach
//!   service" message. HTTPS to the pod (`https:<name>:<port>`) is not
//!   supported.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{ApiError, Request, Shared, decode, error_response};

const PODS: &str = "api/v1/pods";

/// The pod subresource a path names, if any.
pub(super) enum Subresource {
    Log {
        namespace: String,
        pod: String,
    },
    Proxy {
        namespace: String,
        /// `<name>`, `<name>:<port>` or `<scheme>:<name>:<port>`.
        target: String,
        /// The path on the pod, with its leading `/` (or empty).
        rest: String,
    },
}

impl Subresource {
    pub(super) fn parse(path: &str) -> Option<Self> {
        let tail = path.strip_prefix("/api/v1/namespaces/")?;
        let (namespace, tail) = tail.split_once('/')?;
        let tail = tail.strip_prefix("pods/")?;
        let (pod, sub) = tail.split_once('/')?;
        if sub == "log" {
            return Some(Self::Log {
                namespace: decode(namespace),
                pod: decode(pod),
            });
        }
        let rest = sub.strip_prefix("proxy")?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        Some(Self::Proxy {
            namespace: decode(namespace),
            target: decode(pod),
            rest: rest.to_owned(),
        })
    }
}

/// Serve a pod subresource (after the request was recorded).
pub(super) async fn serve(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    sub: Subresource,
) -> Response {
    {
        let mut store = shared.lock();
        store.requests.push(Request {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or_default().to_owned(),
            accept: headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        });
    }
    let query = uri.query().unwrap_or_default().to_owned();
    let result = match sub {
        Subresource::Log { namespace, pod } if method == Method::GET => {
            log(shared, &namespace, &pod, &query).await
        }
        Subresource::Log { .. } => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on pods/log"),
        )),
        Subresource::Proxy {
            namespace,
            target,
            rest,
        } => {
            proxy(
                &shared, method, &namespace, &target, &rest, &query, &headers, body,
            )
            .await
        }
    };
    result.unwrap_or_else(|e| error_response(&e))
}

fn pod_of(shared: &Shared, namespace: &str, name: &str) -> Result<Value, ApiError> {
    shared
        .lock()
        .objects
        .get(&(PODS.to_owned(), namespace.to_owned(), name.to_owned()))
        .cloned()
        .ok_or_else(|| ApiError::not_found(PODS, name))
}

fn bad(message: String) -> ApiError {
    ApiError::new(400, "BadRequest", message)
}

/// The query of a `pods/log` request.
#[derive(Default)]
struct LogQuery {
    container: Option<String>,
    follow: bool,
    timestamps: bool,
    previous: bool,
    since: Option<jiff::Timestamp>,
    tail: Option<usize>,
    limit_bytes: Option<usize>,
}

impl LogQuery {
    fn parse(query: &str) -> Result<Self, ApiError> {
        let mut q = Self::default();
        let truthy = |v: &str| v == "true" || v == "1";
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = decode(v);
            let number = |v: &str| {
                v.parse::<i64>()
                    .map_err(|_| bad(format!("invalid value {v:?} for {k}")))
            };
            match k {
                "container" if !v.is_empty() => q.container = Some(v),
                "follow" => q.follow = truthy(&v),
                "timestamps" => q.timestamps = truthy(&v),
                "previous" => q.previous = truthy(&v),
                "sinceTime" => {
                    q.since = Some(v.parse().map_err(|_| {
                        bad(format!(
                            "parsing time {v:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse"
                        ))
                    })?)
                }
                "sinceSeconds" => {
                    let s = number(&v)?;
                    if s < 1 {
                        return Err(ApiError::new(
                            422,
                            "Invalid",
                            "PodLogOptions \"\" is invalid: sinceSeconds: Invalid value: must be greater than 0",
                        ));
                    }
                    q.since = Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(s));
                }
                "tailLines" => q.tail = Some(number(&v)?.max(0) as usize),
                "limitBytes" => q.limit_bytes = Some(number(&v)?.max(1) as usize),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// One record of a CRI log file.
struct Record<'a> {
    time: &'a str,
    at: Option<jiff::Timestamp>,
    /// `P`: a partial line, continued by the next record.
    partial: bool,
    text: &'a str,
}

fn record(line: &str) -> Option<Record<'_>> {
    let (time, rest) = line.split_once(' ')?;
    let (_stream, rest) = rest.split_once(' ')?;
    let (tag, text) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Record {
        time,
        at: time.parse().ok(),
        partial: tag.split(':').next() == Some("P"),
        text,
    })
}

impl LogQuery {
    /// What the client gets for one record, or `None` if it is filtered out.
    fn render(&self, r: &Record<'_>) -> Option<String> {
        if let (Some(since), Some(at)) = (self.since, r.at)
            && at < since
        {
            return None;
        }
        let mut out = String::new();
        if self.timestamps {
            out.push_str(r.time);
            out.push(' ');
        }
        out.push_str(r.text);
        if !r.partial {
            out.push('\n');
        }
        Some(out)
    }
}

async fn log(
    shared: Arc<Shared>,
    namespace: &str,
    name: &str,
    query: &str,
) -> Result<Response, ApiError> {
    let pod = pod_of(&shared, namespace, name)?;
    let q = LogQuery::parse(query)?;
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let container = match (&q.container, containers.as_slice()) {
        (Some(c), _) => c.clone(),
        (None, [only]) => only.clone(),
        (None, _) => {
            return Err(bad(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    if !containers.contains(&container) {
        return Err(bad(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    let key = (namespace.to_owned(), name.to_owned(), container.clone());
    let file = if q.previous {
        shared
            .lock()
            .previous_container_logs
            .get(&key)
            .cloned()
            .ok_or_else(|| {
                bad(format!(
                    "previous terminated container \"{container}\" in pod \"{name}\" not found"
                ))
            })?
    } else {
        shared
            .lock()
            .container_logs
            .get(&key)
            .cloned()
            .ok_or_else(|| {
                bad(format!(
                    "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
                ))
            })?
    };
    let text = tokio::fs::read(&file)
        .await
        .map_err(|e| ApiError::new(500, "InternalError", format!("{}: {e}", file.display())))?;
    // Only whole records: a writer may be in the middle of one.
    let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let head = String::from_utf8_lossy(&text[..complete]).into_owned();
    let lines: Vec<&str> = head.lines().collect();
    let from = q.tail.map_or(0, |t| lines.len().saturating_sub(t));
    let mut first = String::new();
    for line in &lines[from..] {
        if let Some(out) = record(line).and_then(|r| q.render(&r)) {
            first.push_str(&out);
        }
    }
    let mut budget = q.limit_bytes;
    let first = Bytes::from(take_budget(first, &mut budget));
    // A terminated container's log has nothing more to follow.
    if !q.follow || q.previous {
        return Ok(text_response(Body::from(first)));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let key = (PODS.to_owned(), namespace.to_owned(), name.to_owned());
    tokio::spawn(follow(
        shared,
        key,
        file,
        complete as u64,
        q,
        budget,
        first,
        tx,
    ));
    Ok(text_response(Body::from_stream(super::tokio_stream_from(
        rx,
    ))))
}

fn take_budget(mut s: String, budget: &mut Option<usize>) -> String {
    if let Some(left) = budget {
        if s.len() > *left {
            let mut cut = *left;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        *left -= s.len();
    }
    s
}

/// Send what was read, then new records as the file grows.
#[allow(clippy::too_many_arguments)]
async fn follow(
    shared: Arc<Shared>,
    pod: super::Key,
    file: PathBuf,
    mut offset: u64,
    q: LogQuery,
    mut budget: Option<usize>,
    first: Bytes,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    if !first.is_empty() && tx.send(Ok(first)).await.is_err() {
        return;
    }
    let mut pending = Vec::new();
    loop {
        if budget == Some(0) || tx.is_closed() {
            return;
        }
        if !shared.lock().objects.contains_key(&pod) {
            return;
        }
        let mut chunk = Vec::new();
        if let Ok(mut f) = tokio::fs::File::open(&file).await
            && f.seek(SeekFrom::Start(offset)).await.is_ok()
            && let Ok(n) = f.read_to_end(&mut chunk).await
        {
            offset += n as u64;
        }
        pending.extend_from_slice(&chunk);
        if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
            let whole: Vec<u8> = pending.drain(..=end).collect();
            let mut out = String::new();
            for line in String::from_utf8_lossy(&whole).lines() {
                if let Some(s) = record(line).and_then(|r| q.render(&r)) {
                    out.push_str(&s);
                }
            }
            let out = take_budget(out, &mut budget);
            if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                return;
            }
            continue;
        }
        // The kubelet waits on inotify; polling is enough here.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn text_response(body: Body) -> Response {
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(body)
        .unwrap_or_else(|e| error_response(&ApiError::new(500, "InternalError", e.to_string())))
}

#[allow(clippy::too_many_arguments)]
async fn proxy(
    shared: &Shared,
    method: Method,
    namespace: &str,
    target: &str,
    rest: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let parts: Vec<&str> = target.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return Err(bad(format!("invalid pod proxy target {target:?}"))),
    };
    if !(scheme.is_empty() || scheme == "http") {
        return Err(ApiError::new(
            503,
            "ServiceUnavailable",
            format!("the fake API server proxies only http to pods, not {scheme}"),
        ));
    }
    let pod = pod_of(shared, namespace, name)?;
    let ip = pod["status"]["podIP"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("address not allowed: pod {name} has no IP"),
            )
        })?;
    let ports: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .collect();
    let port = if port.is_empty() {
        // As the real server: the first container port, else 80.
        ports
            .first()
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or(80)
    } else if let Ok(n) = port.parse::<u64>() {
        n
    } else {
        ports
            .iter()
            .find(|p| p["name"] == port)
            .and_then(|p| p["containerPort"].as_u64())
            .ok_or_else(|| {
                ApiError::new(
                    503,
                    "ServiceUnavailable",
                    format!("no endpoints available for pod \"{name}\": no port named {port:?}"),
                )
            })?
    };
    let mut url = format!("http://{ip}:{port}{rest}");
    if rest.is_empty() {
        url.push('/');
    }
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    let mut request = axum::http::Request::builder().method(method).uri(&url);
    for h in [header::ACCEPT, header::CONTENT_TYPE, header::USER_AGENT] {
        if let Some(v) = headers.get(&h) {
            request = request.header(h, v);
        }
    }
    let request = request
        .body(http_body_util::Full::new(body))
        .map_err(|e| bad(format!("cannot proxy to {url}: {e}")))?;
    let answer = client.request(request).await.map_err(|e| {
        let cause = std::error::Error::source(&e).map_or_else(String::new, |c| format!(": {c}"));
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("error trying to reach service: dial tcp {ip}:{port}{cause}"),
        )
    })?;
    let (parts, incoming) = answer.into_parts();
    let mut out = Response::builder().status(parts.status);
    for h in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
        if let Some(v) = parts.headers.get(&h) {
            out = out.header(h, v);
        }
    }
    out.body(Body::new(incoming)).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR.as_u16(),
            "InternalError",
            e.to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_records_and_filters() {
        let r = record("2026-11-30T07:47:47.123456789Z stderr F hello world").unwrap();
        assert_eq!(r.text, "hello world");
        assert!(!r.partial);
        let q = LogQuery {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            q.render(&r).as_deref(),
            Some("2026-11-30T07:47:47.123456789Z hello world\n")
        );
        let p = record("2026-11-30T07:47:47Z stdout P part").unwrap();
        assert!(p.partial);
        assert_eq!(LogQuery::default().render(&p).as_deref(), Some("part"));
        let Ok(later) = LogQuery::parse("sinceTime=2026-11-30T07%3A47%3A48Z") else {
            panic!("a valid sinceTime")
        };
        assert_eq!(later.render(&r), None);
        assert!(LogQuery::parse("sinceTime=yesterday").is_err());
    }

    #[test]
    fn paths() {
        assert!(matches!(
            Subresource::parse("/api/v1/namespaces/ns/pods/p/log"),
            Some(Subresource::Log { .. })
        ));
        match Subresource::parse("/api/v1/namespaces/ns/pods/p:9464/proxy/metrics") {
            Some(Subresource::Proxy { target, rest, .. }) => {
                assert_eq!(target, "p:9464");
                assert_eq!(rest, "/metrics");
            }
            _ => panic!("not a proxy path"),
        }
        assert!(Subresource::parse("/api/v1/namespaces/ns/pods/p/status").is_none());
        assert!(Subresource::parse("/api/v1/namespaces/ns/pods/p/proxyx").is_none());
    }
}
