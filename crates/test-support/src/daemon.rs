//! A real `conductor serve` on a real Unix socket in a temporary directory,
//! driven through the generated client or the CLI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conductor_api::v1::{self, conductor_client::ConductorClient};
use tonic::transport::Channel;

use super::{scrape_url, spawn_logged_to, strip_ansi, wait_for_metric_with};

pub struct Daemon {
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    /// Holds the socket, the state directory and the cache.
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub metrics_url: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// `RLIMIT_NOFILE` of the daemon, if not inherited.
    nofile: Option<u64>,
    /// Where its stderr also goes, in the CRI log format (a container's log).
    container_log: Option<PathBuf>,
    /// A command that execs the daemon (e.g. `setpriv` with its options).
    wrapper: Vec<String>,
}

impl Daemon {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A daemon with extra `conductor serve` arguments.
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_full(args, &[], None)
    }

    /// A daemon with extra arguments and environment variables (e.g. its
    /// own `CONDUCTOR_LOG`).
    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_full(args, envs, None)
    }

    /// A daemon that may open at most `nofile` descriptors (through
    /// util-linux `prlimit`, which execs it: the pid stays the daemon's).
    pub fn start_with_nofile(args: &[&str], nofile: u64) -> Self {
        Self::start_full(args, &[], Some(nofile))
    }

    /// A daemon whose stderr is also written to `container_log` in the CRI
    /// log format, as if it ran in a container (for the fake API server's
    /// `pods/log`).
    pub fn start_in_container(args: &[&str], envs: &[(&str, &str)], container_log: &Path) -> Self {
        let mut d = Self::unstarted(args, envs, None);
        d.container_log = Some(container_log.to_owned());
        d.spawn();
        d
    }

    /// A daemon exec'd by `wrapper` (a command and its options that runs
    /// the rest of its command line in its place, e.g. util-linux `setpriv
    /// --bounding-set=...`): the pid stays the daemon's.
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> Self {
        let mut d = Self::unstarted(args, &[], None);
        d.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        d.spawn();
        d
    }

    fn start_full(args: &[&str], envs: &[(&str, &str)], nofile: Option<u64>) -> Self {
        let mut d = Self::unstarted(args, envs, nofile);
        d.spawn();
        d
    }

    fn unstarted(args: &[&str], envs: &[(&str, &str)], nofile: Option<u64>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            child: None,
            log: Arc::default(),
            socket: dir.path().join("conductor.sock"),
            state_dir: dir.path().join("state"),
            dir,
            metrics_url: String::new(),
            args: args.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            nofile,
            container_log: None,
            wrapper: Vec::new(),
        }
    }

    /// Start `conductor serve` on this daemon's socket, state and cache,
    /// waiting until it serves; returns how long that took.
    pub fn spawn(&mut self) -> Duration {
        let started = Instant::now();
        let (child, log) = self.spawn_raw();
        self.child = Some(child);
        self.log = log;
        let line = self
            .wait_for_log("metrics on http://", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("daemon did not start; log:\n{}", self.log_text()));
        self.metrics_url = line
            .split("metrics on ")
            .nth(1)
            .unwrap()
            // The end of the URL in text and in JSON log lines.
            .split(|c: char| c.is_whitespace() || c == '"')
            .next()
            .unwrap()
            .to_owned();
        self.wait_for_log("serving the node API", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("daemon did not serve; log:\n{}", self.log_text()));
        started.elapsed()
    }

    /// Start another daemon process on the same socket and state (for the
    /// single-instance checks), without waiting for it.
    pub fn spawn_raw(&self) -> (Child, Arc<Mutex<Vec<String>>>) {
        let mut cmd = match (self.nofile, self.wrapper.split_first()) {
            (Some(n), _) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg(crate::conductor_bin());
                c
            }
            (None, Some((program, options))) => {
                let mut c = Command::new(program);
                c.args(options).arg(crate::conductor_bin());
                c
            }
            (None, None) => Command::new(crate::conductor_bin()),
        };
        spawn_logged_to(
            cmd.arg("serve")
                .arg("--socket")
                .arg(&self.socket)
                .arg("--state-dir")
                .arg(&self.state_dir)
                .arg("--cache-dir")
                .arg(self.dir.path().join("cache"))
                .args(["--metrics-addr", "127.0.0.1:0"])
                .args(&self.args)
                .envs(self.envs.iter().map(|(k, v)| (k, v))),
            self.container_log.as_deref(),
        )
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("daemon is not running").id() as i32
    }

    pub async fn client(&self) -> ConductorClient<Channel> {
        v1::connect(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("{e}; log:\n{}", self.log_text()))
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The plugins the daemon runs, through the gRPC API.
    pub fn list(&self) -> Vec<v1::PluginStatus> {
        block_on(async {
            self.client()
                .await
                .list(v1::ListRequest {})
                .await
                .unwrap_or_else(|e| panic!("list: {e}; log:\n{}", self.log_text()))
                .into_inner()
                .plugins
        })
    }

    pub fn get(&self, name: &str) -> Option<v1::PluginStatus> {
        self.list().into_iter().find(|p| p.name == name)
    }

    /// Load a plugin through the API, as `conductor load` would (no
    /// annotations); paths in `yaml` must be absolute.
    pub fn load_by_hand(&self, yaml: &str) {
        block_on(async {
            self.client()
                .await
                .load(load_request(yaml))
                .await
                .unwrap_or_else(|e| panic!("load by hand: {e}; log:\n{}", self.log_text()));
        });
    }

    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return Some(l.clone());
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().unwrap().is_some());
            if Instant::now() > until || exited {
                std::thread::sleep(Duration::from_millis(100));
                return self
                    .log
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|l| l.contains(needle))
                    .cloned();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn scrape(&self) -> String {
        scrape_url(&self.metrics_url).unwrap_or_else(|e| panic!("{e}\nlog:\n{}", self.log_text()))
    }

    pub fn wait_for_metric(
        &self,
        series: &str,
        timeout: Duration,
        ok: impl Fn(f64) -> bool,
    ) -> f64 {
        wait_for_metric_with(|| self.scrape(), || self.log_text(), series, timeout, ok)
    }

    /// `kill -9`: no cleanup of any kind runs in the daemon.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon is not running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > until {
                let _ = child.kill();
                panic!(
                    "daemon did not stop within 30s of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run the CLI against this daemon: `conductor <args> --socket <socket>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli_output(
            Command::new(crate::conductor_bin())
                .args(args)
                .arg("--socket")
                .arg(&self.socket),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM first, so that it detaches what it attached.
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let until = Instant::now() + Duration::from_secs(20);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run `f` to completion on a runtime of its own.
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

pub fn cli_output(cmd: &mut Command) -> Output {
    let mut out = cmd
        .env("NO_COLOR", "1")
        .env("CONDUCTOR_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    out.stderr = strip_ansi(&String::from_utf8_lossy(&out.stderr)).into_bytes();
    out
}

/// A wire spec from YAML (paths must be absolute).
pub fn wire_spec(yaml: &str) -> v1::PluginSpec {
    let spec = conductor_api::PluginSpec::from_yaml(yaml)
        .unwrap_or_else(|e| panic!("bad test spec: {e}\n{yaml}"));
    v1::PluginSpec::from(&spec)
}

pub fn load_request(yaml: &str) -> v1::LoadRequest {
    v1::LoadRequest {
        spec: Some(wire_spec(yaml)),
        annotations: Default::default(),
    }
}

/// A plugin without kernel side: the `steady` test component, which logs
/// `steady started: <greeting>` at `init` and counts ticks.
pub fn steady_spec(name: &str, greeting: &str) -> String {
    format!(
        "name: {name}\ncomponent: {}\nconfig: {{greeting: {greeting:?}}}\n",
        super::path_str(&super::artifact("testing_steady.wasm"))
    )
}

pub fn phase(status: &v1::PluginStatus) -> v1::Phase {
    v1::Phase::try_from(status.phase).unwrap_or(v1::Phase::Unspecified)
}

/// Poll `Get` until the plugin is in `want` (panics after `timeout`).
pub async fn wait_for_phase(
    client: &mut ConductorClient<Channel>,
    name: &str,
    want: v1::Phase,
    timeout: Duration,
) -> v1::PluginStatus {
    let until = Instant::now() + timeout;
    loop {
        let got = client
            .get(v1::GetRequest { name: name.into() })
            .await
            .map(|r| r.into_inner().status.unwrap());
        if let Ok(s) = &got
            && phase(s) == want
        {
            return s.clone();
        }
        assert!(
            Instant::now() < until,
            "plugin {name} never reached {want:?}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ids of the BPF programs a process holds open (its program and link
/// descriptors, from `/proc/<pid>/fdinfo`).
pub fn held_program_ids(pid: i32) -> Vec<u32> {
    let mut ids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|info| {
                    info.lines()
                        .find_map(|l| l.strip_prefix("prog_id:"))
                        .and_then(|v| v.trim().parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort_unstable();
    ids.dedup();
    ids
}
