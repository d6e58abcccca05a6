//! A real OCI registry (Debian's `docker-registry`, CNCF distribution 2.8)
//! on a loopback port, a TCP proxy that breaks connections on purpose, and
//! `conductor` CLI runs.

use super::free_port;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Option<Child>,
    /// `127.0.0.1:<port>`
    pub addr: String,
    pub storage: tempfile::TempDir,
    _config: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Self {
        Self::spawn(None)
    }

    /// A registry that requires HTTP basic auth with these credentials.
    pub fn start_with_user(user: &str, password: &str) -> Self {
        let hash = bcrypt::hash(password, 5).unwrap();
        Self::spawn(Some(format!("{user}:{hash}\n")))
    }

    fn spawn(htpasswd: Option<String>) -> Self {
        let bin = "docker-registry";
        assert!(
            Command::new(bin)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "the OCI tests need Debian's docker-registry: apt-get install docker-registry (or run `cargo xtask test`)"
        );
        let storage = tempfile::tempdir().unwrap();
        let config_dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let auth = match htpasswd {
            Some(text) => {
                let path = config_dir.path().join("htpasswd");
                std::fs::write(&path, text).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: conductor-test\n    path: {}\n",
                    path.display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
            storage.path().display()
        );
        let config_path = config_dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut registry = Self {
            child: Some(child),
            addr,
            storage,
            _config: config_dir,
        };
        registry.wait_ready();
        registry
    }

    /// Wait until `/v2/` answers (200, or 401 with auth).
    fn wait_ready(&mut self) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("http://{}/v2/", self.addr);
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(resp) = agent.get(&url).call()
                && [200, 401].contains(&resp.status().as_u16())
            {
                return;
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait().unwrap()
            {
                panic!("docker-registry exited at start: {status}");
            }
            assert!(
                Instant::now() < until,
                "docker-registry did not answer on {url}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The file the registry serves blob `digest` from.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .path()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// GET a manifest as JSON.
    pub fn manifest(&self, repo: &str, tag: &str) -> serde_json::Value {
        let mut resp = ureq::get(&format!("http://{}/v2/{repo}/manifests/{tag}", self.addr))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .call()
            .unwrap();
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// GET a blob.
    pub fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let mut resp = ureq::get(&format!("http://{}/v2/{repo}/blobs/{digest}", self.addr))
            .call()
            .unwrap();
        resp.body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nothing listens on (bound, then released).
/// What the proxy does once a connection has sent `after` bytes to the client.
#[derive(Clone, Copy)]
pub enum Fault {
    /// Close both sides: the client sees a truncated response.
    Cut,
    /// Stop forwarding but keep the connection open: the registry "went
    /// away" without the client being told.
    Stall,
}

/// A TCP proxy to `upstream` that injects `fault` after `after` bytes of
/// responses on one connection (manifests are small; the blob is not).
pub struct Proxy {
    pub addr: String,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: &str, after: usize, fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_owned();
        let flag = stop.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(c2, s2, usize::MAX, Fault::Cut));
                let flag = flag.clone();
                std::thread::spawn(move || {
                    pipe(server, client.try_clone().unwrap(), after, fault);
                    if matches!(fault, Fault::Stall) {
                        // Hold the client's connection open until the test ends.
                        while !flag.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                    let _ = client.shutdown(Shutdown::Both);
                });
            }
        });
        Self { addr, stop }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, limit: usize, fault: Fault) {
    let mut sent = 0usize;
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = n.min(limit - sent);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
        if sent >= limit {
            if matches!(fault, Fault::Cut) {
                let _ = from.shutdown(Shutdown::Both);
            }
            return;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// `conductor push --package DIR oci://<registry>/<repo_tag>`: panics with
/// the CLI's error if the push fails; returns the reference pushed and the
/// manifest digest the CLI printed.
pub fn push_package(registry: &Registry, dir: &Path, repo_tag: &str) -> (String, String) {
    let reference = format!("oci://{}/{repo_tag}", registry.addr);
    let dir = dir.to_str().expect("a UTF-8 package directory");
    let out = conductor(&["push", "--package", dir, &reference], &[]);
    assert!(
        out.status.success(),
        "push of {dir} failed: {}",
        stderr(&out)
    );
    let text = stdout(&out);
    let digest = text
        .lines()
        .find_map(|l| l.strip_prefix("digest "))
        .unwrap_or_else(|| panic!("no digest printed:\n{text}"))
        .to_owned();
    (reference, digest)
}

/// Run the `conductor` CLI with an isolated docker config (no credentials
/// from the machine) and a quiet log.
pub fn conductor(args: &[&str], env: &[(&str, &str)]) -> Output {
    let docker = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(crate::conductor_bin());
    cmd.args(args)
        .env("DOCKER_CONFIG", docker.path())
        .env("CONDUCTOR_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    drop(docker);
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Files under `<cache>/oci/blobs/sha256` (temp files included).
pub fn cached_blobs(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache.join("oci/blobs/sha256"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A bpfman bytecode image of `object`: one tar+gzip layer holding the
/// `.o`, labels `io.ebpf.programs` / `io.ebpf.maps` in the image config,
/// pushed with oci-client (as bpfman's image build does with docker).
pub fn push_bytecode_image(reference: &str, object: &Path, programs: &str, maps: &str) {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let bytes = std::fs::read(object).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "bpf_x86_bpfel.o", bytes.as_slice())
        .unwrap();
    let layer = tar.into_inner().unwrap().finish().unwrap();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"io.ebpf.programs": programs, "io.ebpf.maps": maps}},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let reference: oci_client::Reference = reference.parse().unwrap();
    let registry = reference.resolve_registry().to_owned();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![registry]),
        ..Default::default()
    });
    let layers = vec![ImageLayer::new(
        layer,
        "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        None,
    )];
    let config = Config::new(
        serde_json::to_vec(&config).unwrap(),
        "application/vnd.oci.image.config.v1+json".into(),
        None,
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(client.push(
            &reference,
            &layers,
            config,
            &oci_client::secrets::RegistryAuth::Anonymous,
            None,
        ))
        .unwrap();
}

/// Push a wasm-artifact-shaped manifest whose `application/wasm` layer holds
/// `layer` (which need not be a component).
pub fn push_raw_wasm_artifact(reference: &str, layer: Vec<u8>) {
    use oci_client::client::{ClientConfig, ClientProtocol, ImageLayer};
    let reference: oci_client::Reference = reference.parse().unwrap();
    let registry = reference.resolve_registry().to_owned();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = oci_wasm::WasmClient::new(oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![registry]),
        ..Default::default()
    }));
    let config = oci_wasm::WasmConfig {
        created: chrono::Utc::now(),
        author: None,
        architecture: "wasm".into(),
        os: "wasip2".into(),
        layer_digests: vec![],
        component: Some(oci_wasm::Component {
            exports: vec![],
            imports: vec![],
            target: None,
        }),
    };
    let layer = ImageLayer::new(layer, "application/wasm".into(), None);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(client.push(
            &reference,
            &oci_client::secrets::RegistryAuth::Anonymous,
            layer,
            config,
            None,
        ))
        .unwrap();
}
