//! The test harness every crate's tests share: artifacts, root checks, a
//! real `conductor` process with its log captured, `/metrics` scraped over
//! real HTTP, a real daemon ([`daemon`]), a real registry ([`registry`]).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod bpfman;
pub mod clients;
pub mod daemon;
pub mod registry;

/// Where `cargo xtask build` puts the BPF objects and wasm components.
pub fn artifacts() -> PathBuf {
    let dir = std::env::var_os("CONDUCTOR_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins"));
    assert!(
        dir.join("exec_counter.wasm").exists(),
        "test artifacts are missing in {}: build them with `cargo xtask build` (or run the suite with `cargo xtask test`)",
        dir.display()
    );
    dir.canonicalize().unwrap_or(dir)
}

/// Poll `f` until it gives a value, panicking after `timeout` with `what`
/// and `context()` (logs).
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > until {
            panic!("timed out waiting for {what}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn artifact(name: &str) -> PathBuf {
    let p = artifacts().join(name);
    assert!(p.exists(), "missing artifact {}", p.display());
    p
}

/// The `conductor` binary: `CONDUCTOR_BIN` as `cargo xtask test` sets it,
/// else the one in the test's own target directory (cargo builds it for
/// `conductor-cli`'s tests; others build it first).
pub fn conductor_bin() -> PathBuf {
    let path = std::env::var_os("CONDUCTOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // target/debug/deps/<test> -> target/debug/conductor
            let exe = std::env::current_exe().expect("the test binary's path");
            exe.parent()
                .and_then(Path::parent)
                .expect("a test binary lives in target/<profile>/deps")
                .join("conductor")
        });
    assert!(
        path.is_file(),
        "the conductor binary is missing at {}: build it with `cargo build -p conductor-cli` (`cargo xtask test` does, and sets CONDUCTOR_BIN)",
        path.display()
    );
    path
}

/// Tests that load BPF need root. Under CI a missing privilege is a failure,
/// never a silent skip; on a developer machine the test says why it skips.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("this test loads BPF programs and must run as root (CI=true forbids skipping)");
    }
    eprintln!("SKIPPED: not root; BPF tests need root (they fail instead under CI=true)");
    false
}

/// A copy of /bin/true under a unique name, so exec events for it can be
/// told apart from everything else running on the machine.
pub struct UniqueBinary {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub comm: String,
}

impl UniqueBinary {
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let suffix = (std::process::id() << 8) ^ nanos ^ (n << 20);
        let comm = format!("{prefix}{:06x}", suffix & 0xff_ffff);
        assert!(
            comm.len() <= 15,
            "comm {comm} is longer than the kernel keeps"
        );
        let path = dir.path().join(&comm);
        std::fs::copy("/bin/true", &path).unwrap();
        Self {
            _dir: dir,
            path,
            comm,
        }
    }

    pub fn run(&self, times: usize) {
        for _ in 0..times {
            let status = Command::new(&self.path).status().unwrap();
            assert!(status.success());
        }
    }
}

/// A `conductor run` process.
pub struct Host {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    pub metrics_url: String,
    _dir: tempfile::TempDir,
    pub cache_dir: PathBuf,
}

impl Host {
    /// The host process's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Write `spec` (YAML, possibly several documents) and run it.
    pub fn start(spec: &str) -> Self {
        Self::start_with_cache(spec, None)
    }

    pub fn start_with_cache(spec: &str, cache: Option<&Path>) -> Self {
        Self::start_with(spec, cache, &[], &[])
    }

    /// Run `spec` with extra `conductor run` arguments and environment.
    pub fn start_with(
        spec: &str,
        cache: Option<&Path>,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        Self::start_wrapped(spec, cache, args, envs, &|_| {})
    }

    /// [`Host::start_with`], with `wrap` adjusting the command before it
    /// is spawned (e.g. [`bpfman::Bpfman::enter`]).
    pub fn start_wrapped(
        spec: &str,
        cache: Option<&Path>,
        args: &[&str],
        envs: &[(&str, &str)],
        wrap: &dyn Fn(&mut Command),
    ) -> Self {
        let (child, log, dir, cache_dir) = spawn(spec, cache, args, envs, wrap);
        Self::started(child, log, dir, cache_dir)
    }

    /// `conductor run oci://...` of a plugin package, with no spec file.
    pub fn start_package(reference: &str, cache: Option<&Path>, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = cache.map_or_else(|| dir.path().join("cache"), Path::to_owned);
        let (child, log) = spawn_logged(
            Command::new(crate::conductor_bin())
                .arg("run")
                .arg(reference)
                .args(["--metrics-addr", "127.0.0.1:0"])
                .arg("--cache-dir")
                .arg(&cache_dir)
                .args(args),
        );
        Self::started(child, log, dir, cache_dir)
    }

    /// `conductor run` with `args` and no spec file (e.g. only
    /// `--exporter-config DIR --names a,b`).
    pub fn start_args(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        let (child, log) = spawn_logged(
            Command::new(crate::conductor_bin())
                .arg("run")
                .args(["--metrics-addr", "127.0.0.1:0"])
                .arg("--cache-dir")
                .arg(&cache_dir)
                .args(args),
        );
        Self::started(child, log, dir, cache_dir)
    }

    fn started(
        child: Child,
        log: Arc<Mutex<Vec<String>>>,
        dir: tempfile::TempDir,
        cache_dir: PathBuf,
    ) -> Self {
        let mut host = Self {
            child,
            log,
            metrics_url: String::new(),
            _dir: dir,
            cache_dir,
        };
        let line = host
            .wait_for_log("metrics on http://", Duration::from_secs(60))
            .unwrap_or_else(|| {
                panic!(
                    "host did not start serving metrics; log:\n{}",
                    host.log_text()
                )
            });
        let url = line
            .split("metrics on ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        host.metrics_url = url;
        // Logged once every plugin is loaded and attached.
        host.wait_for_log("running; press Ctrl-C", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("plugins did not load; log:\n{}", host.log_text()));
        host
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The first log line containing `needle`, waiting up to `timeout`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return Some(l.clone());
            }
            if Instant::now() > until || self.child.try_wait().unwrap().is_some() {
                // One last look: the line may have arrived with the exit.
                std::thread::sleep(Duration::from_millis(100));
                return self
                    .log
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|l| l.contains(needle))
                    .cloned();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host's `host:port`, as a Prometheus scrape target.
    pub fn target(&self) -> String {
        self.metrics_url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_owned()
    }

    pub fn scrape(&self) -> String {
        let mut resp = ureq::get(&self.metrics_url)
            .header("accept", "application/openmetrics-text; version=1.0.0")
            .call()
            .unwrap_or_else(|e| {
                panic!(
                    "scrape {} failed: {e}\nlog:\n{}",
                    self.metrics_url,
                    self.log_text()
                )
            });
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            ct.starts_with("application/openmetrics-text"),
            "content type {ct}"
        );
        resp.body_mut().read_to_string().unwrap()
    }

    /// `/metrics` as curl and promtool get it (no `Accept`): content type and body.
    pub fn scrape_classic(&self) -> (String, String) {
        let mut resp = ureq::get(&self.metrics_url).call().unwrap();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (ct, resp.body_mut().read_to_string().unwrap())
    }

    /// Poll `/metrics` until `series` has a value satisfying `ok`.
    pub fn wait_for_metric(
        &self,
        series: &str,
        timeout: Duration,
        ok: impl Fn(f64) -> bool,
    ) -> f64 {
        wait_for_metric_with(|| self.scrape(), || self.log_text(), series, timeout, ok)
    }

    /// Stop with SIGINT (Ctrl-C) and return the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!(
                    "host did not stop within 20s of SIGINT; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `scrape` until `series` has a value satisfying `ok`; on timeout,
/// panic with the last metrics and `log`.
pub fn wait_for_metric_with(
    scrape: impl Fn() -> String,
    log: impl Fn() -> String,
    series: &str,
    timeout: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let until = Instant::now() + timeout;
    let mut last = None;
    loop {
        let text = scrape();
        last = value(&text, series).or(last);
        if let Some(v) = last
            && ok(v)
        {
            return v;
        }
        if Instant::now() > until {
            panic!(
                "metric {series} never reached the expected value (last: {last:?})\nmetrics:\n{text}\nlog:\n{}",
                log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The status and body of a GET of `url` (e.g. `/readyz`), whatever the
/// status.
pub fn http_get(url: &str) -> Result<(u16, String), String> {
    let mut resp = ureq::get(url)
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .map_err(|e| format!("GET {url} failed: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("GET {url} failed: {e}"))?;
    Ok((status, body))
}

/// `/metrics` at `url` in OpenMetrics, or why not.
pub fn scrape_url(url: &str) -> Result<String, String> {
    let mut resp = ureq::get(url)
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .call()
        .map_err(|e| format!("scrape {url} failed: {e}"))?;
    resp.body_mut()
        .read_to_string()
        .map_err(|e| format!("scrape {url} failed: {e}"))
}

/// Run `conductor run` on `spec` to completion (for specs that must fail).
pub fn run_to_exit(spec: &str) -> (std::process::ExitStatus, String) {
    run_to_exit_wrapped(spec, &|_| {})
}

/// [`run_to_exit`], with `wrap` adjusting the command before it is spawned.
pub fn run_to_exit_wrapped(
    spec: &str,
    wrap: &dyn Fn(&mut Command),
) -> (std::process::ExitStatus, String) {
    let (mut child, log, _dir, _cache) = spawn(spec, None, &[], &[], wrap);
    let until = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!(
                "host kept running on a bad spec; log:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(100));
    let text = log.lock().unwrap().join("\n");
    (status, text)
}

fn spawn(
    spec: &str,
    cache: Option<&Path>,
    args: &[&str],
    envs: &[(&str, &str)],
    wrap: &dyn Fn(&mut Command),
) -> (Child, Arc<Mutex<Vec<String>>>, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("spec.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let cache_dir = cache.map_or_else(|| dir.path().join("cache"), Path::to_owned);
    let mut cmd = Command::new(crate::conductor_bin());
    cmd.arg("run")
        .arg(&spec_path)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .arg("--cache-dir")
        .arg(&cache_dir)
        .args(args)
        .envs(envs.iter().copied());
    wrap(&mut cmd);
    let (child, log) = spawn_logged(&mut cmd);
    (child, log, dir, cache_dir)
}

/// Spawn a `conductor` command with its stderr (the log) captured line by
/// line, debug logging of the host and no colours.
/// (A `CONDUCTOR_LOG` already set on `cmd` is kept.)
pub fn spawn_logged(cmd: &mut Command) -> (Child, Arc<Mutex<Vec<String>>>) {
    spawn_logged_to(cmd, None)
}

/// [`spawn_logged`], also writing each line to `container_log` in the CRI
/// log format, as a container runtime writes a container's stderr (for the
/// fake API server's `pods/log`, which the kubelet serves from such files).
pub fn spawn_logged_to(
    cmd: &mut Command,
    container_log: Option<&Path>,
) -> (Child, Arc<Mutex<Vec<String>>>) {
    if !cmd.get_envs().any(|(k, _)| k == "CONDUCTOR_LOG") {
        cmd.env(
            "CONDUCTOR_LOG",
            "info,conductor_cli=debug,conductor_node=debug,conductor_kernel=debug,\
             conductor_runtime=debug,conductor_oci=debug,conductor_daemon=debug",
        );
    }
    let mut child = cmd
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    let mut cri = container_log.map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap_or_else(|e| panic!("cannot open container log {}: {e}", p.display()))
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let line = strip_ansi(&line);
            if let Some(f) = cri.as_mut() {
                use std::io::Write;
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                // One write per record, so a reader never sees half of one.
                let _ = f.write_all(format!("{now} stderr F {line}\n").as_bytes());
            }
            sink.lock().unwrap().push(line);
        }
    });
    (child, log)
}

/// `kubectl` on PATH (the cluster tests run the machine's real kubectl);
/// under CI a missing one is a failure, not a skip.
pub fn kubectl_present() -> bool {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("kubectl is not installed (CI=true forbids skipping this test)");
        }
        eprintln!("SKIPPED: kubectl is not installed");
    }
    found
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of the first sample whose name-and-labels start with `series`
/// (e.g. `exec_counter_execs_total{plugin="exec-counter",comm="ls"}`).
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with([' ', ',', '}'].as_ref()))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Spec-file path of an artifact, as YAML-safe text.
pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Ids of the kernel's loaded BPF programs with this name.
pub fn program_ids(name: &str) -> Vec<u32> {
    conductor_kernel::object::loaded_program_ids(name)
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real Prometheus server (Debian's `prometheus`) on loopback, scraping
/// `target` every second, with its data in a temporary directory.
pub struct Prometheus {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: conductor\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start prometheus ({e}): install it with `cargo xtask deps`")
            });
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let prom = Self {
            child,
            log,
            url: format!("http://{addr}"),
            _dir: dir,
        };
        let until = Instant::now() + Duration::from_secs(60);
        while ureq::get(&format!("{}/-/ready", prom.url)).call().is_err() {
            assert!(
                Instant::now() < until,
                "prometheus did not become ready; log:\n{}",
                prom.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        prom
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// An instant query: each series' labels and value.
    pub fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let body = ureq::get(&format!("{}/api/v1/query", self.url))
            .query("query", promql)
            .call()
            .unwrap_or_else(|e| panic!("query {promql} failed: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], "success", "{body}");
        json["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let v = r["value"][1].as_str().unwrap().parse().unwrap();
                (r["metric"].clone(), v)
            })
            .collect()
    }

    /// Query until the first series' value satisfies `ok`; returns it.
    pub fn wait_for(&self, promql: &str, timeout: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let until = Instant::now() + timeout;
        loop {
            let result = self.query(promql);
            if let Some((_, v)) = result.first()
                && ok(*v)
            {
                return *v;
            }
            assert!(
                Instant::now() < until,
                "{promql} never reached the expected value (last: {result:?}); prometheus log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `promtool check metrics` on `text`: success and promtool's output.
pub fn promtool_check_metrics(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install prometheus with `cargo xtask deps`")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut msg = String::from_utf8_lossy(&out.stdout).into_owned();
    msg.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), msg)
}

/// The real exec-counter plugin (its BPF object and component) under `name`.
pub fn exec_counter_spec(name: &str) -> String {
    format!(
        r#"
name: {name}
component: {}
bytecode:
  path: {}
  programs:
    - name: handle_exec
      tracepoint: sched/sched_process_exec
maps:
  - name: events
    events: {{maxBatch: 64}}
"#,
        path_str(&artifact("exec_counter.wasm")),
        path_str(&artifact("exec_counter.bpf.o")),
    )
}

/// Check that the committed generated file at `relative` (from the
/// repository root) equals `rendered`; with `CONDUCTOR_BLESS=1` write it
/// instead. `package` names who renders it, for the message.
pub fn assert_generated_is_current(relative: &str, rendered: &str, package: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative);
    if std::env::var_os("CONDUCTOR_BLESS").is_some_and(|v| v != "0") {
        std::fs::write(&path, rendered).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != rendered {
        let line = committed
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(rendered.lines().count()));
        panic!(
            "{relative} is out of date (first difference at line {}: committed {:?}, rendered {:?}).\n\
             Regenerate it with `cargo xtask docs` \
             (or `CONDUCTOR_BLESS=1 cargo test -p {package} --test reference`) and commit it.",
            line + 1,
            committed.lines().nth(line).unwrap_or("<end of file>"),
            rendered.lines().nth(line).unwrap_or("<end of file>"),
        );
    }
}
