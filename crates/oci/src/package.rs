//! Plugin packages: assemble one from an author's directory and push it.
//!
//! The artifact (see `docs/src/oci.md`): an OCI image manifest with
//! `artifactType` [`PACKAGE_ARTIFACT_TYPE`], a typed config
//! ([`PACKAGE_CONFIG_MEDIA_TYPE`], the [`PackageManifest`] as JSON: default
//! spec and metadata, so `show` needs no layer) and one layer per file: the
//! component (`application/wasm`), the BPF object
//! ([`BPF_OBJECT_MEDIA_TYPE`]) and dashboards ([`DASHBOARD_MEDIA_TYPE`]),
//! each titled with `org.opencontainers.image.title`, the name the config's
//! spec refers to it by.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use conductor_api::package::{PACKAGE_FILE, PackageManifest};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_wasm::{WASM_LAYER_MEDIA_TYPE, WasmConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{OciError, RegistryOptions, auth, bounded, client, describe, parse_reference};

/// `artifactType` of a plugin package manifest.
pub const PACKAGE_ARTIFACT_TYPE: &str = "application/vnd.ebpfconductor.plugin.v1";
/// Media type of a package's config: its [`PackageManifest`] as JSON.
pub const PACKAGE_CONFIG_MEDIA_TYPE: &str = "application/vnd.ebpfconductor.plugin.config.v1+json";
/// Media type of a BPF ELF object layer (the raw `.o`, not a tarball).
pub const BPF_OBJECT_MEDIA_TYPE: &str = "application/vnd.ebpfconductor.bpf.object.v1";
/// Media type of a dashboard layer (e.g. Grafana JSON).
pub const DASHBOARD_MEDIA_TYPE: &str = "application/vnd.ebpfconductor.dashboard.v1+json";
/// The annotation naming a layer's file.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// Largest package config read (a spec and its docs).
pub(crate) const MAX_CONFIG_BYTES: usize = 1 << 20;

/// One file of a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageLayer {
    /// The file's name (the layer's title).
    pub title: String,
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// A package assembled in memory, ready to push. `conductor build` is to
/// produce the same from compiled sources.
#[derive(Debug, Clone)]
pub struct Assembled {
    /// The manifest with files named by layer title and the WIT version filled in.
    pub manifest: PackageManifest,
    /// Files in layer order: title, media type, content.
    pub files: Vec<(String, &'static str, Vec<u8>)>,
    pub annotations: BTreeMap<String, String>,
}

impl Assembled {
    /// Read `dir/package.yaml` and the files it names, check the component
    /// is a plugin component, and name each file by its base name.
    pub fn from_dir(dir: &Path) -> Result<Self, OciError> {
        let file = dir.join(PACKAGE_FILE);
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| OciError::ReadFile {
                path: path.to_owned(),
                source,
            })
        };
        let text = String::from_utf8_lossy(&read(&file)?).into_owned();
        let what = file.display().to_string();
        let mut manifest = PackageManifest::from_yaml(&text, &what).map_err(|e| bad(&what, e))?;
        let mut files: Vec<(String, &'static str, Vec<u8>)> = Vec::new();
        let mut add = |rel: &mut String, media_type: &'static str| -> Result<(), OciError> {
            let path: PathBuf = dir.join(&*rel);
            let title = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| bad(&what, format!("{rel:?} does not name a file")))?;
            if files.iter().any(|(t, _, _)| *t == title) {
                return Err(bad(
                    &what,
                    format!(
                        "two files are named {title:?}; each file of a package needs its own name"
                    ),
                ));
            }
            files.push((title.clone(), media_type, read(&path)?));
            *rel = title;
            Ok(())
        };
        // An ebpf_exporter package: its configuration is in the spec, its
        // object the only file that runs (no component, no WIT world).
        let exporter = manifest.spec.exporter.is_some();
        if !exporter {
            add(&mut manifest.spec.component, WASM_LAYER_MEDIA_TYPE)?;
        }
        if let Some(b) = &mut manifest.spec.bytecode {
            add(&mut b.path, BPF_OBJECT_MEDIA_TYPE)?;
        }
        for d in &mut manifest.dashboards {
            add(d, DASHBOARD_MEDIA_TYPE)?;
        }
        if exporter {
            return Self::exporter(manifest, files);
        }
        let component = &files[0].2;
        if !wasmparser::Parser::is_component(component) {
            return Err(bad(
                &what,
                format!(
                    "{} is not a WebAssembly component; build plugins with `cargo build --target wasm32-wasip2`",
                    manifest.spec.component
                ),
            ));
        }
        let (config, _) = WasmConfig::from_raw_component(component.clone(), None)
            .map_err(|e| bad(&what, format!("{}: {e:#}", manifest.spec.component)))?;
        let wit = config
            .component
            .as_ref()
            .and_then(crate::plugin_package_version)
            .ok_or_else(|| {
                bad(
                    &what,
                    format!(
                        "{} does not use the plugin world of {}; build it with conductor-sdk",
                        manifest.spec.component,
                        conductor_api::wit::PACKAGE
                    ),
                )
            })?;
        if let Some(b) = &manifest.spec.bytecode {
            let object = &files[1].2;
            if !object.starts_with(b"\x7fELF") {
                return Err(bad(&what, format!("{} is not an ELF object", b.path)));
            }
        }
        manifest.wit_version = Some(wit.clone());
        let world = format!("{}/plugin@{wit}", conductor_api::wit::PACKAGE);
        let annotations = annotations(&manifest, Some(world));
        Ok(Self {
            manifest,
            files,
            annotations,
        })
    }

    /// An ebpf_exporter package (`spec.exporter`, the object first).
    fn exporter(
        manifest: PackageManifest,
        files: Vec<(String, &'static str, Vec<u8>)>,
    ) -> Result<Self, OciError> {
        // `PackageManifest::from_yaml` checked the spec: an exporter has
        // bytecode, so its object is the first file.
        let what = PACKAGE_FILE;
        if let Some(b) = &manifest.spec.bytecode
            && !files
                .first()
                .is_some_and(|(_, _, o)| o.starts_with(b"\x7fELF"))
        {
            return Err(bad(what, format!("{} is not an ELF object", b.path)));
        }
        let annotations = annotations(&manifest, None);
        Ok(Self {
            manifest,
            files,
            annotations,
        })
    }

    /// The config blob and the OCI manifest (as pushed) of this package.
    pub fn oci_manifest(&self) -> Result<(Vec<u8>, OciImageManifest), OciError> {
        let config = serde_json::to_vec(&self.manifest).map_err(|e| OciError::Cache {
            dir: PathBuf::new(),
            cause: format!("cannot encode the package config: {e}"),
        })?;
        let layers = self
            .files
            .iter()
            .map(|(title, media_type, bytes)| OciDescriptor {
                media_type: (*media_type).to_owned(),
                digest: sha256(bytes),
                size: bytes.len() as i64,
                urls: None,
                annotations: Some(BTreeMap::from([(
                    TITLE_ANNOTATION.to_owned(),
                    title.clone(),
                )])),
                artifact_type: None,
            })
            .collect();
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
            config: OciDescriptor {
                media_type: PACKAGE_CONFIG_MEDIA_TYPE.to_owned(),
                digest: sha256(&config),
                size: config.len() as i64,
                urls: None,
                annotations: None,
                artifact_type: None,
            },
            layers,
            subject: None,
            artifact_type: Some(PACKAGE_ARTIFACT_TYPE.to_owned()),
            annotations: Some(self.annotations.clone()),
        };
        Ok((config, manifest))
    }
}

fn bad(what: &str, e: impl std::fmt::Display) -> OciError {
    OciError::Package {
        what: what.to_owned(),
        cause: e.to_string(),
    }
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// What pushing a package stored.
#[derive(Debug, Clone)]
pub struct PushedPackage {
    /// `registry/repository@sha256:...`.
    pub pinned: String,
    pub manifest_digest: String,
    pub layers: Vec<PackageLayer>,
}

/// Push `package` to `reference` (without `oci://`): every layer, the
/// config, then the manifest; the progress bar follows the bytes.
pub async fn push(
    package: &Assembled,
    reference: &str,
    opts: &RegistryOptions,
) -> Result<PushedPackage, OciError> {
    let parsed = parse_reference(reference)?;
    let (config, manifest) = package.oci_manifest()?;
    let body = serde_json::to_vec(&manifest).map_err(|e| bad(reference, e))?;
    let manifest_digest = sha256(&body);
    let registry = parsed.resolve_registry().to_owned();
    let client = client(&registry, opts);
    let auth = auth(&registry, opts);
    let total: u64 =
        package.files.iter().map(|f| f.2.len() as u64).sum::<u64>() + config.len() as u64;
    let bar = crate::progress_bar(opts, total, &format!("pushing {reference}"));
    let registry_err = |op, e: oci_client::errors::OciDistributionError| OciError::Registry {
        reference: reference.to_owned(),
        op,
        cause: describe(&e),
    };
    let result = bounded(reference, "push", opts, async {
        let c = client.as_ref();
        c.store_auth_if_needed(&registry, &auth).await;
        // Authenticate for push: the first call needs a token with push scope.
        c.auth(&parsed, &auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| registry_err("authenticating", e))?;
        let mut done = 0u64;
        for ((_, _, bytes), layer) in package.files.iter().zip(&manifest.layers) {
            c.push_blob(&parsed, bytes.clone(), &layer.digest)
                .await
                .map_err(|e| registry_err("uploading a layer", e))?;
            done += bytes.len() as u64;
            bar.set_position(done);
        }
        c.push_blob(&parsed, config.clone(), &manifest.config.digest)
            .await
            .map_err(|e| registry_err("uploading the config", e))?;
        bar.set_position(total);
        let content_type = http_header(OCI_IMAGE_MEDIA_TYPE);
        c.push_manifest_raw(&parsed, body.clone(), content_type)
            .await
            .map_err(|e| registry_err("uploading the manifest", e))
    })
    .await;
    bar.finish_and_clear();
    result?;
    let layers = package
        .files
        .iter()
        .zip(&manifest.layers)
        .map(|((title, media_type, bytes), l)| PackageLayer {
            title: title.clone(),
            media_type: (*media_type).to_owned(),
            digest: l.digest.clone(),
            size: bytes.len() as u64,
        })
        .collect();
    Ok(PushedPackage {
        pinned: format!(
            "{}/{}@{manifest_digest}",
            parsed.registry(),
            parsed.repository()
        ),
        manifest_digest,
        layers,
    })
}

pub(crate) fn http_header(value: &str) -> reqwest::header::HeaderValue {
    reqwest::header::HeaderValue::from_str(value)
        .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("application/octet-stream"))
}

/// Fetch a manifest as bytes and its digest (hashed here, so a signature
/// over it means what it says). `want` is the digest the reference pins, if any.
pub(crate) async fn fetch_manifest(
    client: &oci_client::Client,
    parsed: &oci_client::Reference,
    auth: &RegistryAuth,
    reference: &str,
) -> Result<(OciImageManifest, String), OciError> {
    let (bytes, _) = client
        .pull_manifest_raw(
            parsed,
            auth,
            &[
                OCI_IMAGE_MEDIA_TYPE,
                "application/vnd.docker.distribution.manifest.v2+json",
            ],
        )
        .await
        .map_err(|e| OciError::Registry {
            reference: reference.to_owned(),
            op: "fetching the manifest",
            cause: describe(&e),
        })?;
    let digest = sha256(&bytes);
    if let Some(want) = parsed.digest()
        && want != digest
    {
        return Err(OciError::Verification {
            reference: reference.to_owned(),
            digest,
            cause: format!("the registry sent a manifest with another digest than {want}"),
        });
    }
    let manifest: OciImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| OciError::WrongArtifact {
            reference: reference.to_owned(),
            want: "OCI image manifest",
            cause: e.to_string(),
        })?;
    Ok((manifest, digest))
}

/// Fetch a small blob (a config or a signature payload) into memory,
/// checking its size and digest.
pub(crate) async fn fetch_small_blob(
    client: &oci_client::Client,
    parsed: &oci_client::Reference,
    desc: &OciDescriptor,
    limit: usize,
    reference: &str,
) -> Result<Vec<u8>, OciError> {
    let fail = |cause: String| OciError::Verification {
        reference: reference.to_owned(),
        digest: desc.digest.clone(),
        cause,
    };
    if desc.size < 0 || desc.size as usize > limit {
        return Err(fail(format!(
            "size {} is out of range 0..={limit}",
            desc.size
        )));
    }
    let mut out = Vec::with_capacity(desc.size as usize);
    client
        .pull_blob(parsed, desc, &mut out)
        .await
        .map_err(|e| OciError::Registry {
            reference: reference.to_owned(),
            op: "fetching a blob",
            cause: describe(&e),
        })?;
    if out.len() as i64 != desc.size || sha256(&out) != desc.digest {
        return Err(fail(format!(
            "digest mismatch: {} bytes hashing to {}",
            out.len(),
            sha256(&out)
        )));
    }
    Ok(out)
}

/// Is this manifest a plugin package?
pub fn is_package(manifest: &OciImageManifest) -> bool {
    manifest.artifact_type.as_deref() == Some(PACKAGE_ARTIFACT_TYPE)
        || manifest.config.media_type == PACKAGE_CONFIG_MEDIA_TYPE
}

/// A package as `show` presents it, shared by `conductor show` (a node's
/// cache) and `kubectl conductor show` (the same cache format on the
/// user's machine): [`show_json`] for scripts, [`show_text`] for people.
/// Both `None` when `record` is not a package (a plain component or a
/// bytecode image).
pub fn show_json(record: &crate::RefRecord) -> Option<serde_json::Value> {
    let pkg = record.package.as_ref()?;
    Some(serde_json::json!({
        "reference": record.reference,
        "digest": record.manifest_digest,
        "signature": record.signature,
        "layers": record.layers,
        "package": pkg,
    }))
}

/// What one package holds, for people: metadata, WIT version, signature,
/// programs and attach points, maps, config keys with their docs, files.
pub fn show_text(record: &crate::RefRecord) -> Option<String> {
    use std::fmt::Write;
    let pkg = record.package.as_ref()?;
    let s = &pkg.spec;
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "Reference:   oci://{}", record.reference);
    let _ = writeln!(out, "Digest:      {}", record.manifest_digest);
    let _ = writeln!(out, "Name:        {}", s.name);
    for (label, v) in [
        ("Version", &pkg.version),
        ("Description", &pkg.description),
        ("Source", &pkg.source),
        ("License", &pkg.license),
        ("WIT version", &pkg.wit_version),
    ] {
        let _ = writeln!(
            out,
            "{:<13}{}",
            format!("{label}:"),
            v.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(
        out,
        "Signature:   {}",
        record
            .signature
            .as_ref()
            .map_or_else(|| "not checked".into(), crate::SignatureStatus::summary)
    );
    let _ = writeln!(out, "Programs:");
    match &s.bytecode {
        None => {
            let _ = writeln!(out, "  (no BPF object)");
        }
        Some(b) if b.programs.is_empty() => {
            let _ = writeln!(out, "  every program of {} where its section says", b.path);
        }
        Some(b) => {
            for p in &b.programs {
                let _ = writeln!(out, "  {}\t{}", p.name, attach_point(p));
            }
        }
    }
    let _ = writeln!(out, "Maps:");
    for m in &s.maps {
        let events = if m.events.is_some() { "\tevents" } else { "" };
        let _ = writeln!(out, "  {}\t{:?}{events}", m.name, m.access);
    }
    let _ = writeln!(out, "Config keys:");
    for k in &pkg.config_keys {
        let _ = writeln!(
            out,
            "  {}\t(default {:?})\t{}",
            k.name,
            k.default.as_deref().unwrap_or(""),
            k.description
        );
    }
    let _ = writeln!(out, "Files:");
    for l in &record.layers {
        let _ = writeln!(
            out,
            "  {}\t{}\t{}\t{}",
            l.title,
            l.media_type,
            l.size,
            l.digest.get(..19).unwrap_or(&l.digest)
        );
    }
    Some(out)
}

/// `tracepoint=sched/sched_process_exec`: where a program attaches.
fn attach_point(p: &conductor_api::ProgramAttach) -> String {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(p) else {
        return String::new();
    };
    fields
        .iter()
        .filter(|(k, _)| *k != "name")
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The manifest's `org.opencontainers.image.*` annotations, and the WIT
/// world of a component package.
fn annotations(manifest: &PackageManifest, world: Option<String>) -> BTreeMap<String, String> {
    [
        (TITLE_ANNOTATION, Some(manifest.spec.name.clone())),
        ("org.opencontainers.image.version", manifest.version.clone()),
        ("org.opencontainers.image.source", manifest.source.clone()),
        (
            "org.opencontainers.image.description",
            manifest.description.clone(),
        ),
        (
            "org.opencontainers.image.licenses",
            manifest.license.clone(),
        ),
        (
            "org.opencontainers.image.created",
            Some(chrono::Utc::now().to_rfc3339()),
        ),
        (crate::WORLD_ANNOTATION, world),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key.to_owned(), value?)))
    .collect()
}
