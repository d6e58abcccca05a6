//! Plugins as OCI artifacts: push, pull, a content-addressed cache.
//!
//! Components use the CNCF wasm OCI artifact format (config
//! `application/vnd.wasm.config.v0+json`, one `application/wasm` layer,
//! through `oci-wasm`), so `wkg oci push/pull` and conductor interoperate.
//! Kernel objects use bpfman's bytecode image format: one tar+gzip layer
//! holding the `.o`, with the image config labels `io.ebpf.programs` and
//! `io.ebpf.maps`.
//!
//! Cache layout under `<cache-dir>/oci/`:
//! - `blobs/sha256/<hex>`: layer contents, written to a temp file, verified
//!   against the manifest's digest and size, then renamed into place; every
//!   use hashes the file again, so a damaged blob is dropped, never trusted;
//! - `refs/<sha256 of the reference>.json`: what a reference resolved to;
//! - `bytecode/<hex>.bpf.o`: the object extracted from a bytecode layer.
//!
//! Plugin packages (one artifact: component, BPF object, default spec,
//! metadata) are in [`package`]; signatures and the trust policy, checked
//! before any layer is downloaded, in [`trust`].

pub mod package;
pub mod trust;

pub use oci_client::Reference;
pub use package::{Assembled, PackageLayer, PushedPackage};
pub use trust::{SignatureMode, SignatureStatus, SigningKey, TrustPolicy, TrustedKey};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conductor_api::{PluginSpec, PullPolicy, oci_reference};
use futures_util::StreamExt;
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_wasm::{
    ToConfig, WASM_LAYER_MEDIA_TYPE, WASM_MANIFEST_CONFIG_MEDIA_TYPE, WASM_MANIFEST_MEDIA_TYPE,
    WasmClient, WasmConfig,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use conductor_api::wit;

/// Layer media types of bpfman bytecode images (OCI and Docker flavours).
const BYTECODE_LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];
/// Image config labels of bpfman bytecode images (JSON: name -> type).
pub const PROGRAMS_LABEL: &str = "io.ebpf.programs";
pub const MAPS_LABEL: &str = "io.ebpf.maps";
/// Manifest annotation naming the WIT world a pushed component targets.
pub const WORLD_ANNOTATION: &str = "dev.ebpfconductor.wit.world";
/// Upload chunk of a pushed layer (one PATCH request each).
const PUSH_CHUNK: usize = 1 << 20;
/// Largest layer accepted; plugins are small, this only bounds a bad registry.
const MAX_LAYER_BYTES: u64 = 512 << 20;

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) reachable over plain HTTP. Loopback
    /// registries always are; every other one must speak HTTPS.
    pub insecure: Vec<String>,
    /// Basic-auth credentials; when unset, docker's `config.json` is used.
    pub username: Option<String>,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    /// Bound on one whole pull or push of a reference.
    pub timeout: Duration,
    /// Draw progress bars on a terminal.
    pub progress: bool,
    /// Signatures and allowed references, checked on every pull.
    pub trust: TrustPolicy,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            insecure: Vec::new(),
            username: None,
            password: None,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
            progress: false,
            trust: TrustPolicy::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{reference}: not a valid OCI reference: {cause}")]
    InvalidReference { reference: String, cause: String },
    #[error("{reference}: {op} failed: {cause}")]
    Registry {
        reference: String,
        op: &'static str,
        cause: String,
    },
    #[error(
        "{reference}: {op} timed out after {secs} s (registry unreachable, stalled or too slow); check the registry or raise --registry-timeout"
    )]
    Timeout {
        reference: String,
        op: &'static str,
        secs: u64,
    },
    #[error("{reference}: not a {want}: {cause}")]
    WrongArtifact {
        reference: String,
        want: &'static str,
        cause: String,
    },
    #[error("{reference}: layer {digest} failed verification ({cause}); nothing was cached")]
    Verification {
        reference: String,
        digest: String,
        cause: String,
    },
    #[error(
        "{reference}: not in the local cache {dir} and the pull policy is Never; pull it first with `conductor pull oci://{reference}`"
    )]
    NotCached { reference: String, dir: PathBuf },
    #[error("{reference}: {cause}")]
    Bytecode { reference: String, cause: String },
    #[error("OCI cache {dir}: {cause}")]
    Cache { dir: PathBuf, cause: String },
    #[error("package {what}: {cause}")]
    Package { what: String, cause: String },
    #[error("{reference}: refused by the trust policy: {cause}; nothing was cached as trusted")]
    Untrusted { reference: String, cause: String },
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a reference is expected to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    Component,
    Bytecode,
    /// A plugin package (see [`package`]).
    Package,
}

/// What a reference resolved to when it was last pulled.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefRecord {
    pub reference: String,
    pub kind: Kind,
    pub manifest_digest: String,
    pub layer_digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// bpfman labels of a bytecode image.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds since the epoch.
    pub pulled_at: u64,
    /// A package's files (`layer_digest` is its component's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<PackageLayer>,
    /// A package's config: default spec and metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<conductor_api::package::PackageManifest>,
    /// What signature verification found when it was pulled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureStatus>,
}

impl RefRecord {
    /// Every blob digest this reference uses.
    pub fn digests(&self) -> Vec<&str> {
        let mut d = vec![self.layer_digest.as_str()];
        d.extend(self.layers.iter().map(|l| l.digest.as_str()));
        d
    }

    /// Total bytes of its layers.
    pub fn total_size(&self) -> u64 {
        if self.layers.is_empty() {
            self.size
        } else {
            self.layers.iter().map(|l| l.size).sum()
        }
    }

    /// The cached file of the layer titled `title`.
    pub fn layer_path(&self, store: &Store, title: &str) -> Option<PathBuf> {
        let layer = self.layers.iter().find(|l| l.title == title)?;
        store.verified_blob(&layer.digest)
    }
}

/// A pulled artifact ready to use.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The component file, or the extracted BPF object.
    pub path: PathBuf,
    pub record: RefRecord,
    /// True if the registry was not asked (or had nothing new to send).
    pub from_cache: bool,
}

/// The content-addressed store under `<cache-dir>/oci`.
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            root: cache_dir.join("oci"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn err(&self, cause: impl std::fmt::Display) -> OciError {
        OciError::Cache {
            dir: self.root.clone(),
            cause: cause.to_string(),
        }
    }

    fn dir(&self, sub: &str) -> Result<PathBuf, OciError> {
        use std::os::unix::fs::DirBuilderExt;
        let d = self.root.join(sub);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .map_err(|e| self.err(format!("cannot create {}: {e}", d.display())))?;
        Ok(d)
    }

    fn record_path(&self, reference: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(reference.as_bytes()));
        self.root.join("refs").join(format!("{key}.json"))
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest_hex(digest)?;
        Some(self.root.join("blobs/sha256").join(hex))
    }

    /// What `reference` (without `oci://`) resolved to when last pulled.
    pub fn record(&self, reference: &str) -> Option<RefRecord> {
        let reference =
            parse_reference(reference).map_or_else(|_| reference.to_owned(), |r| r.whole());
        let text = std::fs::read(self.record_path(&reference)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn write_record(&self, rec: &RefRecord) -> Result<(), OciError> {
        let dir = self.dir("refs")?;
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| self.err(e))?;
        atomic_write(&dir, &self.record_path(&rec.reference), &bytes).map_err(|e| self.err(e))
    }

    /// The blob's path if it is present and its content still matches its
    /// digest; a damaged blob is removed.
    fn verified_blob(&self, digest: &str) -> Option<PathBuf> {
        let path = self.blob_path(digest)?;
        let mut file = std::fs::File::open(&path).ok()?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(_) => return None,
            }
        }
        if format!("sha256:{}", hex::encode(hasher.finalize())) == digest {
            Some(path)
        } else {
            tracing::warn!(blob = %path.display(), "cached blob does not match its digest; removing it");
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    /// Every reference in the cache, sorted.
    pub fn list(&self) -> Result<Vec<RefRecord>, OciError> {
        let dir = self.root.join("refs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "json")
                && let Ok(text) = std::fs::read(entry.path())
                && let Ok(rec) = serde_json::from_slice::<RefRecord>(&text)
            {
                out.push(rec);
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Remove blobs no reference points to, extracted objects of removed
    /// blobs and leftovers of interrupted pulls; with `all`, everything.
    /// Returns the removed paths.
    pub fn prune(&self, all: bool) -> Result<Vec<PathBuf>, OciError> {
        let mut removed = Vec::new();
        if all {
            if self.root.exists() {
                std::fs::remove_dir_all(&self.root).map_err(|e| self.err(e))?;
                removed.push(self.root.clone());
            }
            return Ok(removed);
        }
        let keep: std::collections::BTreeSet<String> = self
            .list()?
            .iter()
            .flat_map(|r| r.digests())
            .filter_map(|d| digest_hex(d).map(str::to_owned))
            .collect();
        for (sub, suffix) in [("blobs/sha256", ""), ("bytecode", ".bpf.o")] {
            let Ok(entries) = std::fs::read_dir(self.root.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let referenced = name
                    .strip_suffix(suffix)
                    .is_some_and(|hex| keep.contains(hex));
                if !referenced {
                    std::fs::remove_file(entry.path()).map_err(|e| self.err(e))?;
                    removed.push(entry.path());
                }
            }
        }
        // Temp files of interrupted writes in refs/.
        if let Ok(entries) = std::fs::read_dir(self.root.join("refs")) {
            for entry in entries.flatten() {
                if entry.path().extension().is_none_or(|e| e != "json") {
                    std::fs::remove_file(entry.path()).map_err(|e| self.err(e))?;
                    removed.push(entry.path());
                }
            }
        }
        Ok(removed)
    }
}

fn digest_hex(digest: &str) -> Option<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Write then rename: a crash leaves a stray temp file (removed by prune),
/// never a partial file under the final name.
fn atomic_write(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)?;
    Ok(())
}

fn parse_reference(reference: &str) -> Result<Reference, OciError> {
    reference
        .parse::<Reference>()
        .map_err(|e| OciError::InvalidReference {
            reference: reference.to_owned(),
            cause: e.to_string(),
        })
}

/// True for `localhost`, `127.0.0.0/8` and `::1`, with or without a port.
fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.split(':').next().unwrap_or(registry)
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn client(registry: &str, opts: &RegistryOptions) -> WasmClient {
    // reqwest is built without a default crypto provider; install ring once
    // (a second install is refused, which is fine).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let plain = is_loopback(registry) || opts.insecure.iter().any(|r| r == registry);
    let config = ClientConfig {
        protocol: if plain {
            ClientProtocol::HttpsExcept(vec![registry.to_owned()])
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(opts.connect_timeout),
        // A stalled transfer fails after this much silence, well before the
        // overall bound when that is long.
        read_timeout: Some(opts.timeout.min(Duration::from_secs(30))),
        ..Default::default()
    };
    WasmClient::new(Client::new(config))
}

/// Credentials for `registry`: explicit ones, else docker's `config.json`
/// (`$DOCKER_CONFIG` or `~/.docker`, credential helpers included), else none.
fn auth(registry: &str, opts: &RegistryOptions) -> RegistryAuth {
    if let (Some(u), Some(p)) = (&opts.username, &opts.password) {
        return RegistryAuth::Basic(u.clone(), p.clone());
    }
    match docker_credential::get_credential(registry) {
        Ok(docker_credential::DockerCredential::UsernamePassword(u, p)) => {
            RegistryAuth::Basic(u, p)
        }
        Ok(docker_credential::DockerCredential::IdentityToken(t)) => RegistryAuth::Bearer(t),
        Err(_) => RegistryAuth::Anonymous,
    }
}

/// True when the registry refused the credentials (or their absence).
fn is_auth_failure(e: &OciDistributionError) -> bool {
    use oci_client::errors::OciErrorCode;
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => true,
        OciDistributionError::ServerError { code, .. } => matches!(code, 401 | 403),
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|x| matches!(x.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
        _ => false,
    }
}

/// The error and its causes on one line (a refused connection hides two
/// levels below reqwest's "error sending request").
fn describe(e: &OciDistributionError) -> String {
    let mut out = if is_auth_failure(e) {
        format!(
            "not authorized (check the credentials: --username/--password, CONDUCTOR_REGISTRY_USERNAME/PASSWORD or docker config.json): {e}"
        )
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

async fn bounded<T>(
    reference: &str,
    op: &'static str,
    opts: &RegistryOptions,
    fut: impl Future<Output = Result<T, OciError>>,
) -> Result<T, OciError> {
    tokio::time::timeout(opts.timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(OciError::Timeout {
                reference: reference.to_owned(),
                op,
                secs: opts.timeout.as_secs(),
            })
        })
}

/// Pull `reference` (without `oci://`) into the cache per `policy` and
/// return the local file to use. A `Component` request also accepts a
/// plugin package (the result's `record.kind` says which it was). The
/// trust policy is checked before any layer is downloaded; a cached copy
/// is used only if it still satisfies it.
pub async fn pull(
    store: &Store,
    reference: &str,
    kind: Kind,
    policy: PullPolicy,
    opts: &RegistryOptions,
) -> Result<Pulled, OciError> {
    let parsed = parse_reference(reference)?;
    let canonical = parsed.whole();
    let trust = &opts.trust;
    let mut cached_but_untrusted = None;
    if policy != PullPolicy::Always
        && let Some(record) = store.record(&canonical)
        && (record.kind == kind || (kind == Kind::Component && record.kind == Kind::Package))
        && record
            .digests()
            .iter()
            .all(|d| store.verified_blob(d).is_some())
    {
        if !trust.allows(reference, &record.manifest_digest)
            && !trust.allows(&canonical, &record.manifest_digest)
        {
            return Err(not_allowed(reference, trust));
        }
        match (&trust.mode, &record.signature) {
            (
                trust::SignatureMode::Required,
                Some(SignatureStatus::Verified { fingerprint, .. }),
            ) if trust.keys.iter().any(|k| &k.fingerprint == fingerprint) => {}
            (trust::SignatureMode::Required, _) => {
                cached_but_untrusted = Some(());
            }
            _ => {}
        }
        if cached_but_untrusted.is_none() {
            let blob = store
                .verified_blob(&record.layer_digest)
                .ok_or_else(|| store.err("a cached blob vanished"))?;
            let path = materialize(store, reference, &record, &blob)?;
            return Ok(Pulled {
                path,
                record,
                from_cache: true,
            });
        }
    }
    if policy == PullPolicy::Never {
        if cached_but_untrusted.is_some() {
            return Err(OciError::Untrusted {
                reference: reference.to_owned(),
                cause: "the cached copy was not verified with a trusted key and the pull policy is Never".into(),
            });
        }
        return Err(OciError::NotCached {
            reference: reference.to_owned(),
            dir: store.root.clone(),
        });
    }
    trust.check().map_err(|e| OciError::Untrusted {
        reference: reference.to_owned(),
        cause: e.to_string(),
    })?;
    bounded(
        reference,
        "pull",
        opts,
        pull_remote(store, reference, &parsed, kind, opts),
    )
    .await
}

fn not_allowed(reference: &str, trust: &TrustPolicy) -> OciError {
    OciError::Untrusted {
        reference: reference.to_owned(),
        cause: format!(
            "not on the allowed list (--allowed-reference: {})",
            trust.allowed.join(", ")
        ),
    }
}

/// Check the allow list and the signature of `manifest_digest` per the
/// trust policy; downloads nothing but the signature manifest and payloads.
async fn check_trust(
    client: &Client,
    parsed: &Reference,
    auth: &RegistryAuth,
    reference: &str,
    manifest_digest: &str,
    trust: &TrustPolicy,
) -> Result<SignatureStatus, OciError> {
    if !trust.allows(reference, manifest_digest) && !trust.allows(&parsed.whole(), manifest_digest)
    {
        return Err(not_allowed(reference, trust));
    }
    let unverified = |reason: String| -> Result<SignatureStatus, OciError> {
        if trust.mode == SignatureMode::Required {
            return Err(OciError::Untrusted {
                reference: reference.to_owned(),
                cause: reason,
            });
        }
        tracing::warn!(reference, %reason, "running an artifact no trusted key signed (signature policy warn)");
        Ok(SignatureStatus::Unverified { reason })
    };
    match trust.mode {
        SignatureMode::Off => return Ok(SignatureStatus::NotChecked),
        SignatureMode::Warn if trust.keys.is_empty() => {
            return Ok(SignatureStatus::Unverified {
                reason: "no trusted key is configured".into(),
            });
        }
        _ => {}
    }
    let sig_ref = trust::signature_reference(parsed, manifest_digest);
    let sig_manifest = match client
        .pull_manifest_raw(
            &sig_ref,
            auth,
            &[oci_client::manifest::OCI_IMAGE_MEDIA_TYPE],
        )
        .await
    {
        Ok((bytes, _)) if bytes.len() <= trust::MAX_SIGNATURE_BYTES => {
            match serde_json::from_slice::<OciImageManifest>(&bytes) {
                Ok(m) => m,
                Err(e) => return unverified(format!("its signature manifest is unreadable: {e}")),
            }
        }
        Ok(_) => return unverified("its signature manifest is too large".into()),
        Err(e) => {
            return unverified(format!(
                "unsigned: no signature at tag {} ({})",
                trust::signature_tag(manifest_digest),
                describe(&e)
            ));
        }
    };
    let mut layers = Vec::new();
    for layer in sig_manifest
        .layers
        .iter()
        .filter(|l| l.media_type == trust::SIMPLE_SIGNING_MEDIA_TYPE)
    {
        let payload = package::fetch_small_blob(
            client,
            &sig_ref,
            layer,
            trust::MAX_SIGNATURE_BYTES,
            reference,
        )
        .await?;
        layers.push((layer.clone(), payload));
    }
    match trust::verify_layers(manifest_digest, &layers, &trust.keys) {
        Ok(status) => {
            if let SignatureStatus::Verified { signer, .. } = &status {
                tracing::info!(
                    reference,
                    signer,
                    digest = manifest_digest,
                    "signature verified"
                );
            }
            Ok(status)
        }
        Err(reason) => unverified(reason),
    }
}

async fn pull_remote(
    store: &Store,
    reference: &str,
    parsed: &Reference,
    kind: Kind,
    opts: &RegistryOptions,
) -> Result<Pulled, OciError> {
    let registry = parsed.resolve_registry().to_owned();
    let client = client(&registry, opts);
    let auth = auth(&registry, opts);
    client.as_ref().store_auth_if_needed(&registry, &auth).await;
    let (manifest, manifest_digest) =
        package::fetch_manifest(client.as_ref(), parsed, &auth, reference).await?;
    if let Some(want) = parsed.digest()
        && want != manifest_digest
    {
        return Err(OciError::Verification {
            reference: reference.to_owned(),
            digest: manifest_digest,
            cause: format!("the registry sent a manifest with another digest than {want}"),
        });
    }
    // Before anything else is downloaded: may this run at all?
    let signature = check_trust(
        client.as_ref(),
        parsed,
        &auth,
        reference,
        &manifest_digest,
        &opts.trust,
    )
    .await?;
    let config = package::fetch_small_blob(
        client.as_ref(),
        parsed,
        &manifest.config,
        package::MAX_CONFIG_BYTES,
        reference,
    )
    .await?;
    let config = String::from_utf8_lossy(&config).into_owned();
    if kind == Kind::Component && package::is_package(&manifest) {
        return pull_package(
            store,
            reference,
            parsed,
            &client,
            manifest,
            manifest_digest,
            &config,
            signature,
            opts,
        )
        .await;
    }
    let (layer, labels) = check_artifact(reference, kind, &manifest, &config)?;

    // Content already cached under another tag is not downloaded again.
    let (blob, from_cache) = match store.verified_blob(&layer.digest) {
        Some(p) => (p, true),
        None => (
            download(store, reference, &client, parsed, &layer, opts).await?,
            false,
        ),
    };
    if kind == Kind::Component {
        check_component_header(&blob).map_err(|cause| OciError::WrongArtifact {
            reference: reference.to_owned(),
            want: "WebAssembly component",
            cause,
        })?;
    }
    let record = RefRecord {
        reference: parsed.whole(),
        kind,
        manifest_digest,
        layer_digest: layer.digest.clone(),
        size: layer.size as u64,
        annotations: manifest.annotations.clone().unwrap_or_default(),
        labels,
        pulled_at: now(),
        layers: Vec::new(),
        package: None,
        signature: Some(signature),
    };
    let path = materialize(store, reference, &record, &blob)?;
    store.write_record(&record)?;
    Ok(Pulled {
        path,
        record,
        from_cache,
    })
}

/// Check a pulled manifest and its config before any layer is fetched: the
/// artifact is of the `kind` wanted, has one layer of a known media type and
/// a size in range. Returns that layer and the image's `io.ebpf.*` labels.
/// Pure (no I/O), so hostile manifests and configs are property-tested.
fn check_artifact(
    reference: &str,
    kind: Kind,
    manifest: &OciImageManifest,
    config: &str,
) -> Result<(OciDescriptor, BTreeMap<String, String>), OciError> {
    let wrong = |want, cause: String| OciError::WrongArtifact {
        reference: reference.to_owned(),
        want,
        cause,
    };
    let (layer, labels) = match kind {
        Kind::Package => {
            return Err(wrong(
                "plugin package",
                format!(
                    "its artifactType is {:?} and its config media type {}, expected {}",
                    manifest.artifact_type,
                    manifest.config.media_type,
                    package::PACKAGE_ARTIFACT_TYPE
                ),
            ));
        }
        Kind::Component => {
            let want = "wasm component artifact";
            if let Some(mt) = &manifest.media_type
                && mt != WASM_MANIFEST_MEDIA_TYPE
            {
                return Err(wrong(
                    want,
                    format!("manifest media type is {mt}, expected {WASM_MANIFEST_MEDIA_TYPE}"),
                ));
            }
            if manifest.config.media_type != WASM_MANIFEST_CONFIG_MEDIA_TYPE {
                return Err(wrong(
                    want,
                    format!(
                        "config media type is {}, expected {WASM_MANIFEST_CONFIG_MEDIA_TYPE} (or a plugin package, {})",
                        manifest.config.media_type,
                        package::PACKAGE_CONFIG_MEDIA_TYPE
                    ),
                ));
            }
            let [layer] = manifest.layers.as_slice() else {
                return Err(wrong(
                    want,
                    format!("it has {} layers, expected one", manifest.layers.len()),
                ));
            };
            if layer.media_type != WASM_LAYER_MEDIA_TYPE {
                return Err(wrong(
                    want,
                    format!(
                        "layer media type is {}, expected {WASM_LAYER_MEDIA_TYPE}",
                        layer.media_type
                    ),
                ));
            }
            let config = WasmConfig::try_from(config)
                .map_err(|e| wrong(want, format!("unreadable wasm config: {e:#}")))?;
            check_world(&config).map_err(|cause| wrong("component for this host", cause))?;
            (layer.clone(), BTreeMap::new())
        }
        Kind::Bytecode => {
            let want = "bpfman bytecode image";
            let [layer] = manifest.layers.as_slice() else {
                return Err(wrong(
                    want,
                    format!("it has {} layers, expected one", manifest.layers.len()),
                ));
            };
            if !BYTECODE_LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str()) {
                return Err(wrong(
                    want,
                    format!(
                        "layer media type is {}, expected one of {}",
                        layer.media_type,
                        BYTECODE_LAYER_MEDIA_TYPES.join(", ")
                    ),
                ));
            }
            (layer.clone(), bytecode_labels(config))
        }
    };
    check_layer_size(reference, &layer)?;
    Ok((layer, labels))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn check_layer_size(reference: &str, layer: &OciDescriptor) -> Result<(), OciError> {
    if layer.size < 0 || layer.size as u64 > MAX_LAYER_BYTES {
        return Err(OciError::WrongArtifact {
            reference: reference.to_owned(),
            want: "plugin artifact",
            cause: format!(
                "layer size {} is out of range 0..={MAX_LAYER_BYTES}",
                layer.size
            ),
        });
    }
    Ok(())
}

/// The rest of a package's pull, once its manifest passed the trust
/// policy: its config, then every layer, each verified; the record is
/// written only when all are in place.
#[allow(clippy::too_many_arguments)]
async fn pull_package(
    store: &Store,
    reference: &str,
    parsed: &Reference,
    client: &WasmClient,
    manifest: OciImageManifest,
    manifest_digest: String,
    config: &str,
    signature: SignatureStatus,
    opts: &RegistryOptions,
) -> Result<Pulled, OciError> {
    let wrong = |cause: String| OciError::WrongArtifact {
        reference: reference.to_owned(),
        want: "plugin package",
        cause,
    };
    let pkg = conductor_api::package::PackageManifest::from_yaml(config, "its config")
        .map_err(|e| wrong(e.to_string()))?;
    if let Some(v) = &pkg.wit_version
        && !wit::is_supported(v)
    {
        return Err(wrong(format!(
            "its component targets {}@{v}; this host supports {}",
            wit::PACKAGE,
            wit::supported_ranges()
        )));
    }
    let mut layers = Vec::new();
    let mut from_cache = true;
    for layer in &manifest.layers {
        check_layer_size(reference, layer)?;
        let title = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(package::TITLE_ANNOTATION))
            .cloned()
            .ok_or_else(|| {
                wrong(format!(
                    "layer {} has no {} annotation",
                    layer.digest,
                    package::TITLE_ANNOTATION
                ))
            })?;
        if store.verified_blob(&layer.digest).is_none() {
            download(store, reference, client, parsed, layer, opts).await?;
            from_cache = false;
        }
        layers.push(PackageLayer {
            title,
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: layer.size as u64,
        });
    }
    let find = |title: &str, media_type: &str| {
        layers
            .iter()
            .find(|l| l.title == title && l.media_type == media_type)
            .cloned()
            .ok_or_else(|| {
                wrong(format!(
                    "its spec names {title:?} but it has no {media_type} layer titled so"
                ))
            })
    };
    // The layer that runs: the component, or for an ebpf_exporter package
    // (no component) its object.
    let object = match &pkg.spec.bytecode {
        Some(b) => Some(find(&b.path, package::BPF_OBJECT_MEDIA_TYPE)?),
        None => None,
    };
    let component = match (&pkg.spec.exporter, object) {
        (Some(_), Some(object)) => object,
        (Some(_), None) => return Err(wrong("its exporter spec has no bytecode".into())),
        (None, _) => find(&pkg.spec.component, WASM_LAYER_MEDIA_TYPE)?,
    };
    let blob = store
        .verified_blob(&component.digest)
        .ok_or_else(|| store.err("a downloaded blob vanished"))?;
    if pkg.spec.exporter.is_none() {
        check_component_header(&blob).map_err(wrong)?;
    }
    let record = RefRecord {
        reference: parsed.whole(),
        kind: Kind::Package,
        manifest_digest,
        layer_digest: component.digest.clone(),
        size: component.size,
        annotations: manifest.annotations.clone().unwrap_or_default(),
        labels: BTreeMap::new(),
        pulled_at: now(),
        layers,
        package: Some(pkg),
        signature: Some(signature),
    };
    store.write_record(&record)?;
    Ok(Pulled {
        path: blob,
        record,
        from_cache,
    })
}

/// Stream a layer into a temp file, hashing as it goes; only a complete,
/// verified file is renamed into `blobs/`.
async fn download(
    store: &Store,
    reference: &str,
    client: &WasmClient,
    parsed: &Reference,
    layer: &OciDescriptor,
    opts: &RegistryOptions,
) -> Result<PathBuf, OciError> {
    let fail = |cause: String| OciError::Verification {
        reference: reference.to_owned(),
        digest: layer.digest.clone(),
        cause,
    };
    let final_path = store
        .blob_path(&layer.digest)
        .ok_or_else(|| fail("only sha256 digests are supported".into()))?;
    let dir = store.dir("blobs/sha256")?;
    let mut stream = client
        .as_ref()
        .pull_blob_stream(parsed, layer)
        .await
        .map_err(|e| OciError::Registry {
            reference: reference.to_owned(),
            op: "fetching the layer",
            cause: describe(&e),
        })?;
    let expected = layer.size as u64;
    let bar = progress_bar(opts, expected, &format!("pulling {reference}"));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(&dir)
        .map_err(|e| store.err(e))?;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| OciError::Registry {
            reference: reference.to_owned(),
            op: "downloading the layer",
            cause: format!("download failed after {got} of {expected} bytes: {e}"),
        })?;
        got += chunk.len() as u64;
        if got > expected {
            return Err(fail(format!(
                "the registry sent more than the {expected} bytes the manifest declares"
            )));
        }
        hasher.update(&chunk);
        tmp.write_all(&chunk).map_err(|e| store.err(e))?;
        bar.set_position(got);
    }
    bar.finish_and_clear();
    if got != expected {
        return Err(fail(format!(
            "truncated download: {got} of {expected} bytes"
        )));
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != layer.digest {
        return Err(fail(format!(
            "digest mismatch: the content hashes to {actual}"
        )));
    }
    tmp.as_file().sync_all().map_err(|e| store.err(e))?;
    tmp.persist(&final_path).map_err(|e| store.err(e))?;
    Ok(final_path)
}

fn progress_bar(opts: &RegistryOptions, len: u64, message: &str) -> indicatif::ProgressBar {
    if !opts.progress {
        return indicatif::ProgressBar::hidden();
    }
    // Draws only on a terminal; a log file gets no control characters.
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_owned());
    bar
}

/// The local file of a verified blob: the blob itself for a component, the
/// extracted object for bytecode.
fn materialize(
    store: &Store,
    reference: &str,
    record: &RefRecord,
    blob: &Path,
) -> Result<PathBuf, OciError> {
    match record.kind {
        Kind::Component | Kind::Package => Ok(blob.to_owned()),
        Kind::Bytecode => {
            let hex = digest_hex(&record.layer_digest).unwrap_or("invalid");
            let dir = store.dir("bytecode")?;
            let out = dir.join(format!("{hex}.bpf.o"));
            // Re-extracted on every use: cheap, and never trusts a file
            // another process could have left half-written.
            let object = extract_object(blob).map_err(|cause| OciError::Bytecode {
                reference: reference.to_owned(),
                cause,
            })?;
            atomic_write(&dir, &out, &object).map_err(|e| store.err(e))?;
            Ok(out)
        }
    }
}

/// A layer that is not a component is refused before anything refers to it
/// (prune removes the unreferenced blob).
fn check_component_header(blob: &Path) -> Result<(), String> {
    let mut head = [0u8; 8];
    let n = std::fs::File::open(blob)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| format!("cannot read the layer: {e}"))?;
    let head = &head[..n];
    if wasmparser::Parser::is_component(head) {
        Ok(())
    } else if wasmparser::Parser::is_core_wasm(head) {
        Err("its layer is a core wasm module; build plugins with `cargo build --target wasm32-wasip2`".into())
    } else {
        Err("its layer has no wasm header".into())
    }
}

/// The single `.o` file of a bpfman bytecode layer (tar+gzip).
fn extract_object(blob: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(blob).map_err(|e| format!("cannot open layer: {e}"))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut found: Option<(String, Vec<u8>)> = None;
    let entries = archive
        .entries()
        .map_err(|e| format!("the layer is not a tar+gzip archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("the layer is not a tar+gzip archive: {e}"))?;
        let name = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if !entry.header().entry_type().is_file() || !name.ends_with(".o") {
            continue;
        }
        if let Some((first, _)) = &found {
            return Err(format!(
                "the layer holds more than one BPF object ({first}, {name}); bpfman images hold one"
            ));
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {name} from the layer: {e}"))?;
        found = Some((name, bytes));
    }
    found
        .map(|(_, b)| b)
        .ok_or_else(|| "the layer holds no .o file; is this a bpfman bytecode image?".to_owned())
}

/// `io.ebpf.*` labels of an image config (`{"config": {"Labels": {...}}}`).
fn bytecode_labels(config: &str) -> BTreeMap<String, String> {
    #[derive(Deserialize)]
    struct ImageConfig {
        #[serde(default)]
        config: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default, rename = "Labels")]
        labels: Option<BTreeMap<String, String>>,
    }
    serde_json::from_str::<ImageConfig>(config)
        .ok()
        .and_then(|c| c.config)
        .and_then(|c| c.labels)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("io.ebpf."))
        .collect()
}

/// The `conductor:plugin` version a component's config names, if any.
fn plugin_package_version(component: &oci_wasm::Component) -> Option<String> {
    component
        .imports
        .iter()
        .chain(&component.exports)
        .chain(&component.target)
        .find_map(|name| wit::version_in_name(name).map(str::to_owned))
}

/// Refuse, before downloading, a component whose config says it targets
/// a version of the plugin world this host does not link. The authoritative check is
/// linking (`Runtime::prepare`), which also runs for cached components.
fn check_world(config: &WasmConfig) -> Result<(), String> {
    let Some(component) = &config.component else {
        return Err(format!(
            "its config describes a core module (os {}), not a component",
            config.os
        ));
    };
    match plugin_package_version(component) {
        Some(v) if !wit::is_supported(&v) => Err(format!(
            "it targets {}@{v}; this host supports {}",
            wit::PACKAGE,
            wit::supported_ranges()
        )),
        _ => Ok(()),
    }
}

/// Manifest annotations of a pushed component.
#[derive(Debug, Clone, Default)]
pub struct PushAnnotations {
    pub title: Option<String>,
    pub version: Option<String>,
    pub source: Option<String>,
    pub description: Option<String>,
}

/// What `push` stored.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub manifest_url: String,
    pub layer_digest: String,
    pub annotations: BTreeMap<String, String>,
}

/// Push the component `file` to `reference` (without `oci://`).
pub async fn push(
    file: &Path,
    reference: &str,
    notes: PushAnnotations,
    opts: &RegistryOptions,
) -> Result<Pushed, OciError> {
    let parsed = parse_reference(reference)?;
    let bytes = std::fs::read(file).map_err(|source| OciError::ReadFile {
        path: file.to_owned(),
        source,
    })?;
    let not_component = |cause: String| OciError::WrongArtifact {
        reference: reference.to_owned(),
        want: "component to push",
        cause: format!("{}: {cause}", file.display()),
    };
    if !wasmparser::Parser::is_component(&bytes) {
        return Err(not_component(
            "not a WebAssembly component; build plugins with `cargo build --target wasm32-wasip2`"
                .into(),
        ));
    }
    let len = bytes.len() as u64;
    let layer_digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let (config, layer) =
        WasmConfig::from_raw_component(bytes, None).map_err(|e| not_component(format!("{e:#}")))?;
    let created = config.created.to_rfc3339();
    let world = config
        .component
        .as_ref()
        .and_then(plugin_package_version)
        .map(|v| format!("{}/plugin@{v}", wit::PACKAGE))
        .ok_or_else(|| {
            not_component(format!(
                "it does not use the plugin world of {}; build it with conductor-sdk",
                wit::PACKAGE
            ))
        })?;
    let mut annotations = BTreeMap::new();
    let title = notes
        .title
        .or_else(|| file.file_stem().map(|s| s.to_string_lossy().into_owned()));
    for (key, value) in [
        ("org.opencontainers.image.title", title),
        ("org.opencontainers.image.version", notes.version),
        ("org.opencontainers.image.source", notes.source),
        ("org.opencontainers.image.description", notes.description),
        ("org.opencontainers.image.created", Some(created)),
        (WORLD_ANNOTATION, Some(world)),
    ] {
        if let Some(v) = value {
            annotations.insert(key.to_owned(), v);
        }
    }
    let registry = parsed.resolve_registry().to_owned();
    let client = client(&registry, opts);
    let auth = auth(&registry, opts);
    let bar = progress_bar(opts, len, &format!("pushing {reference}"));
    let registry_err = |op, e: OciDistributionError| OciError::Registry {
        reference: reference.to_owned(),
        op,
        cause: describe(&e),
    };
    let result = bounded(reference, "push", opts, async {
        let config = config.to_config().map_err(|e| OciError::WrongArtifact {
            reference: reference.to_owned(),
            want: "component to push",
            cause: format!("cannot encode its wasm config: {e:#}"),
        })?;
        // What oci-wasm's `WasmClient::push` writes, with the layer streamed
        // in chunks so the progress bar follows the upload.
        let mut manifest = OciImageManifest::build(
            std::slice::from_ref(&layer),
            &config,
            Some(annotations.clone()),
        );
        manifest.media_type = Some(WASM_MANIFEST_MEDIA_TYPE.to_owned());
        let client = client.as_ref();
        client.store_auth_if_needed(&registry, &auth).await;
        let data = layer.data.clone();
        let chunks = futures_util::stream::iter((0..data.len()).step_by(PUSH_CHUNK).map(|at| {
            let end = (at + PUSH_CHUNK).min(data.len());
            bar.set_position(end as u64);
            Ok(data.slice(at..end))
        }));
        client
            .push_blob_stream(&parsed, chunks, &layer_digest)
            .await
            .map_err(|e| registry_err("uploading the layer", e))?;
        // The layer is in place: this uploads the config and the manifest.
        client
            .push(&parsed, &[], config, &auth, Some(manifest))
            .await
            .map_err(|e| registry_err("push", e))
    })
    .await;
    bar.finish_and_clear();
    let response = result?;
    Ok(Pushed {
        manifest_url: response.manifest_url,
        layer_digest,
        annotations,
    })
}

/// Replace the OCI references of `spec` by the cached files they resolve
/// to, pulling per the spec's pull policy; the result loads like a spec of
/// local paths.
pub async fn resolve_spec(
    spec: &PluginSpec,
    store: &Store,
    opts: &RegistryOptions,
) -> Result<PluginSpec, OciError> {
    let mut out = spec.clone();
    if let Some(reference) = oci_reference(&spec.component) {
        let pulled = pull(
            store,
            reference,
            Kind::Component,
            spec.effective_pull_policy(reference),
            opts,
        )
        .await?;
        if let Some(pkg) = &pulled.record.package {
            // A package: its default spec with this spec's overrides, its
            // files replaced by their cached blobs.
            out = pkg.apply_overrides(spec);
            if spec.bytecode.is_none()
                && let Some(b) = &mut out.bytecode
            {
                let path = pulled.record.layer_path(store, &b.path).ok_or_else(|| {
                    store.err(format!(
                        "the object {} of {reference} is not cached",
                        b.path
                    ))
                })?;
                b.path = path.display().to_string();
            }
            out.validate().map_err(|e| OciError::Package {
                what: reference.to_owned(),
                cause: format!(
                    "its spec with the overrides of plugin {:?} is invalid: {e}",
                    spec.name
                ),
            })?;
            tracing::info!(
                plugin = %spec.name,
                reference,
                digest = %pulled.record.manifest_digest,
                signature = %pulled.record.signature.as_ref().map_or_else(|| "not checked".into(), SignatureStatus::summary),
                from_cache = pulled.from_cache,
                "package resolved"
            );
        } else {
            tracing::info!(
                plugin = %spec.name,
                reference,
                digest = %pulled.record.layer_digest,
                from_cache = pulled.from_cache,
                "component resolved"
            );
        }
        // An ebpf_exporter package runs no component.
        out.component = match &out.exporter {
            Some(_) => String::new(),
            None => pulled.path.display().to_string(),
        };
    }
    if let Some(bytecode) = &mut out.bytecode
        && let Some(image) = bytecode.image.as_deref().and_then(oci_reference)
    {
        let pulled = pull(
            store,
            image,
            Kind::Bytecode,
            spec.effective_pull_policy(image),
            opts,
        )
        .await?;
        check_programs(image, &pulled.record, bytecode)?;
        tracing::info!(
            plugin = %spec.name,
            reference = image,
            digest = %pulled.record.layer_digest,
            from_cache = pulled.from_cache,
            "bytecode resolved"
        );
        bytecode.path = pulled.path.display().to_string();
        bytecode.image = None;
    }
    Ok(out)
}

/// Programs the spec attaches must be among those the image's
/// `io.ebpf.programs` label declares (when it has one).
fn check_programs(
    reference: &str,
    record: &RefRecord,
    bytecode: &conductor_api::Bytecode,
) -> Result<(), OciError> {
    let Some(label) = record.labels.get(PROGRAMS_LABEL) else {
        return Ok(());
    };
    let declared: BTreeMap<String, String> =
        serde_json::from_str(label).map_err(|e| OciError::Bytecode {
            reference: reference.to_owned(),
            cause: format!("label {PROGRAMS_LABEL} is not a JSON object of name to type: {e}"),
        })?;
    for p in &bytecode.programs {
        if !declared.contains_key(&p.name) {
            return Err(OciError::Bytecode {
                reference: reference.to_owned(),
                cause: format!(
                    "program {:?} is not declared in its {PROGRAMS_LABEL} label; it declares: {}",
                    p.name,
                    declared.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_recognised() {
        for r in [
            "127.0.0.1:5000",
            "localhost",
            "localhost:80",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "ghcr.io",
            "10.0.0.1:5000",
            "[2001:db8::1]:443",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn bytecode_labels_are_read_from_the_image_config() {
        let config = r#"{"architecture":"amd64","config":{"Labels":{
            "io.ebpf.programs":"{\"handle_exec\":\"tracepoint\"}",
            "io.ebpf.maps":"{\"events\":\"ringbuf\"}",
            "maintainer":"x"}}}"#;
        let labels = bytecode_labels(config);
        assert_eq!(labels.len(), 2);
        assert_eq!(labels[PROGRAMS_LABEL], r#"{"handle_exec":"tracepoint"}"#);
        assert!(bytecode_labels("not json").is_empty());
    }

    #[test]
    fn world_check_names_supported_versions() {
        let mut config = WasmConfig {
            created: chrono::Utc::now(),
            author: None,
            architecture: "wasm".into(),
            os: "wasip2".into(),
            layer_digests: vec![],
            component: Some(oci_wasm::Component {
                exports: vec!["on-events".into()],
                imports: vec!["conductor:plugin/metrics@0.99.0".into()],
                target: None,
            }),
        };
        let err = check_world(&config).unwrap_err();
        assert!(err.contains("conductor:plugin@0.99.0"), "{err}");
        assert!(err.contains(&wit::supported_ranges()), "{err}");
        let (major_minor, _) = wit::CURRENT.rsplit_once('.').unwrap();
        let compatible = format!("conductor:plugin/maps@{major_minor}.3");
        config.component.as_mut().unwrap().imports = vec![compatible];
        check_world(&config).unwrap();
        for v in wit::SUPPORTED {
            let name = format!("{}/log@{v}", wit::PACKAGE);
            config.component.as_mut().unwrap().imports = vec![name];
            check_world(&config).unwrap();
        }
        config.component = None;
        assert!(check_world(&config).unwrap_err().contains("core module"));
    }
}

/// Hostile manifests, configs and layers (issue 19, fuzzing): every input
/// is accepted with its invariants holding or refused with a typed error
/// that names the reference; nothing panics. A longer run:
/// `PROPTEST_CASES=100000 cargo test -p conductor-oci --lib properties`.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const DIGEST: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn component_manifest() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{WASM_MANIFEST_MEDIA_TYPE}","config":{{"mediaType":"{WASM_MANIFEST_CONFIG_MEDIA_TYPE}","digest":"{DIGEST}","size":200}},"layers":[{{"mediaType":"{WASM_LAYER_MEDIA_TYPE}","digest":"{DIGEST}","size":1000}}]}}"#
        )
    }

    fn component_config() -> String {
        format!(
            r#"{{"created":"2026-01-01T00:00:00Z","architecture":"wasm","os":"wasip2","layerDigests":["{DIGEST}"],"component":{{"exports":["{}/plugin@0.2.0"],"imports":[],"target":null}}}}"#,
            wit::PACKAGE
        )
    }

    fn bytecode_manifest() -> String {
        format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{DIGEST}","size":200}},"layers":[{{"mediaType":"{}","digest":"{DIGEST}","size":1000}}]}}"#,
            BYTECODE_LAYER_MEDIA_TYPES[0]
        )
    }

    fn bytecode_config() -> String {
        r#"{"config":{"Labels":{"io.ebpf.programs":"{\"handle_exec\":\"tracepoint\"}","io.ebpf.maps":"{\"events\":\"ringbuf\"}","other":"x"}}}"#.to_owned()
    }

    fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        for &(at, op, byte) in edits {
            if bytes.is_empty() {
                bytes.push(byte);
                continue;
            }
            let at = at % bytes.len();
            match op % 3 {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => {
                    bytes.remove(at);
                }
            }
        }
        bytes
    }

    /// Accepted: one layer of an allowed type and size; labels only
    /// `io.ebpf.*`. Refused: a typed error naming the reference.
    fn check(kind: Kind, manifest: &[u8], config: &[u8]) {
        let Ok(manifest) = serde_json::from_slice::<OciImageManifest>(manifest) else {
            return; // oci-client refuses it before we see it
        };
        let config = String::from_utf8_lossy(config);
        match check_artifact("oci://r.test/p:1", kind, &manifest, &config) {
            Ok((layer, labels)) => {
                assert_eq!(manifest.layers.len(), 1);
                assert!((0..=MAX_LAYER_BYTES as i64).contains(&layer.size));
                match kind {
                    Kind::Component => {
                        assert_eq!(layer.media_type, WASM_LAYER_MEDIA_TYPE);
                        assert!(labels.is_empty());
                    }
                    Kind::Bytecode => {
                        assert!(BYTECODE_LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str()));
                        assert!(labels.keys().all(|k| k.starts_with("io.ebpf.")));
                    }
                    Kind::Package => panic!("a package is never accepted as one layer"),
                }
            }
            Err(e) => {
                assert!(
                    matches!(e, OciError::WrongArtifact { .. }),
                    "unexpected error kind: {e:?}"
                );
                assert!(e.to_string().contains("r.test/p:1"), "{e}");
            }
        }
    }

    fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
        proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6)
    }

    #[test]
    fn the_seeds_are_accepted() {
        let m: OciImageManifest = serde_json::from_str(&component_manifest()).unwrap();
        check_artifact("r", Kind::Component, &m, &component_config()).unwrap();
        let m: OciImageManifest = serde_json::from_str(&bytecode_manifest()).unwrap();
        let (_, labels) = check_artifact("r", Kind::Bytecode, &m, &bytecode_config()).unwrap();
        assert_eq!(labels.len(), 2, "{labels:?}");
    }

    proptest! {
        #[test]
        fn mutated_manifests_and_configs(
            kind in prop_oneof![Just(Kind::Component), Just(Kind::Bytecode)],
            cross in any::<bool>(),
            manifest_edits in edits(),
            config_edits in edits(),
        ) {
            // `cross`: the other kind's manifest, e.g. a bytecode image
            // named as a component.
            let (m, c) = match (kind, cross) {
                (Kind::Component, false) | (Kind::Bytecode, true) => (component_manifest(), component_config()),
                _ => (bytecode_manifest(), bytecode_config()),
            };
            check(kind, &mutate(m.into_bytes(), &manifest_edits), &mutate(c.into_bytes(), &config_edits));
        }

        #[test]
        fn manifests_with_arbitrary_layers(
            kind in prop_oneof![Just(Kind::Component), Just(Kind::Bytecode)],
            layers in proptest::collection::vec(("\\PC{0,50}", any::<i64>()), 0..3),
            config in "\\PC{0,200}",
        ) {
            let layers: Vec<_> = layers
                .into_iter()
                .map(|(media_type, size)| serde_json::json!({"mediaType": media_type, "digest": DIGEST, "size": size}))
                .collect();
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": WASM_MANIFEST_MEDIA_TYPE,
                "config": {"mediaType": WASM_MANIFEST_CONFIG_MEDIA_TYPE, "digest": DIGEST, "size": 1},
                "layers": layers,
            });
            check(kind, manifest.to_string().as_bytes(), config.as_bytes());
        }

        /// Bytecode labels from an arbitrary config: only `io.ebpf.*`.
        #[test]
        fn labels_of_arbitrary_configs(edits in edits(), text in "\\PC{0,100}") {
            let config = String::from_utf8_lossy(&mutate(bytecode_config().into_bytes(), &edits)).into_owned();
            for c in [config.as_str(), text.as_str()] {
                prop_assert!(bytecode_labels(c).keys().all(|k| k.starts_with("io.ebpf.")));
            }
        }

        /// A layer of arbitrary bytes, or a valid gzip of arbitrary bytes, is
        /// an object or an error that says what is wrong.
        #[test]
        fn arbitrary_layers_extract_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..2048), gzip in any::<bool>()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("layer");
            let data = if gzip {
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&bytes).unwrap();
                enc.finish().unwrap()
            } else {
                bytes
            };
            std::fs::write(&path, data).unwrap();
            if let Err(e) = extract_object(&path) {
                prop_assert!(!e.is_empty());
            }
        }

        /// References: parsed or refused with the reason, never a panic.
        #[test]
        fn arbitrary_references(text in "\\PC{0,80}") {
            if let Err(e) = parse_reference(&text) {
                prop_assert!(matches!(e, OciError::InvalidReference { .. }), "{e:?}");
            }
        }
    }
}
