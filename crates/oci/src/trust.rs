//! Who may publish what the host runs: cosign-compatible signatures and an
//! allow list of references, checked before any layer is downloaded (so
//! before anything is compiled or loaded).
//!
//! The signature layout is cosign's keyed one: for a manifest
//! `sha256:<hex>` in `registry/repo`, the tag `sha256-<hex>.sig` of the same
//! repository holds an OCI image manifest whose layers are each a "simple
//! signing" payload (`application/vnd.dev.cosign.simplesigning.v1+json`)
//! with the base64 signature of the payload's bytes in the annotation
//! `dev.cosignproject.cosign/signature`. The payload names the signed
//! manifest digest. `cosign sign --key` writes exactly this, so packages
//! signed with cosign verify here, and `conductor sign` writes what
//! `cosign verify --key` accepts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::Reference;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::signing_key::ecdsa::{ECDSAKeys, EllipticCurve};
use sigstore::crypto::{CosignVerificationKey, Signature, SigningScheme};

/// Media type of one cosign simple-signing payload layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation holding the base64 signature of a payload layer.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of a cosign payload.
const PAYLOAD_TYPE: &str = "cosign container image signature";
/// Largest signature payload or manifest read; cosign's are a few hundred bytes.
pub(crate) const MAX_SIGNATURE_BYTES: usize = 64 << 10;

/// How unsigned or unverifiable references are treated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SignatureMode {
    /// Refuse what no trusted key signed.
    Required,
    /// Run it, log a warning and mark it unverified.
    #[default]
    Warn,
    /// Do not look for signatures.
    Off,
}

impl std::str::FromStr for SignatureMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "required" => Ok(Self::Required),
            "warn" => Ok(Self::Warn),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "{other:?} is not a signature policy; use required, warn or off"
            )),
        }
    }
}

/// A trusted public key.
#[derive(Clone)]
pub struct TrustedKey {
    /// What the signer is called in status and errors: the key file's name.
    pub name: String,
    /// `sha256:<hex>` of the key's DER (SubjectPublicKeyInfo).
    pub fingerprint: String,
    key: CosignVerificationKey,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.fingerprint)
    }
}

impl TrustedKey {
    /// Read a PEM public key (cosign's `cosign.pub`, or any PKIX PEM key of
    /// ECDSA P-256/P-384, Ed25519 or RSA).
    pub fn from_file(path: &Path) -> Result<Self, TrustError> {
        let pem = std::fs::read(path).map_err(|e| TrustError::Key {
            path: path.to_owned(),
            cause: e.to_string(),
        })?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Self::from_pem(&name, &pem).map_err(|cause| TrustError::Key {
            path: path.to_owned(),
            cause,
        })
    }

    pub fn from_pem(name: &str, pem: &[u8]) -> Result<Self, String> {
        let key = CosignVerificationKey::try_from_pem(pem)
            .map_err(|e| format!("not a PEM public key cosign can verify with: {e}"))?;
        let der = pem_der(pem).ok_or("not PEM")?;
        Ok(Self {
            name: name.to_owned(),
            fingerprint: format!("sha256:{}", hex::encode(Sha256::digest(&der))),
            key,
        })
    }

    /// `name (sha256:<first 12 hex>)`, as status reports a signer.
    pub fn signer(&self) -> String {
        let short = self.fingerprint.get(7..19).unwrap_or(&self.fingerprint);
        format!("{} (sha256:{short})", self.name)
    }
}

fn pem_der(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----") && !l.trim().is_empty())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()
}

/// The host's trust policy: the signature mode, the trusted keys and the
/// references that may run at all.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    pub mode: SignatureMode,
    pub keys: Vec<TrustedKey>,
    /// Allowed references: prefixes of `registry/repository[:tag]` (as
    /// written, without `oci://`) or manifest digests `sha256:<hex>`.
    /// Empty: every reference is allowed.
    pub allowed: Vec<String>,
}

impl TrustPolicy {
    /// Check the policy itself: `required` needs at least one key.
    pub fn check(&self) -> Result<(), TrustError> {
        if self.mode == SignatureMode::Required && self.keys.is_empty() {
            return Err(TrustError::NoKeys);
        }
        Ok(())
    }

    /// Is `reference` (resolved to `manifest_digest`) on the allow list?
    pub fn allows(&self, reference: &str, manifest_digest: &str) -> bool {
        self.allowed.is_empty()
            || self.allowed.iter().any(|a| {
                let a = a.strip_prefix(conductor_api::spec::OCI_SCHEME).unwrap_or(a);
                a == manifest_digest || reference.starts_with(a)
            })
    }
}

/// What verification found for one manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum SignatureStatus {
    /// A trusted key signed this manifest digest.
    Verified { signer: String, fingerprint: String },
    /// Not checked (policy `off`).
    NotChecked,
    /// No trusted signature; run under policy `warn` only.
    Unverified { reason: String },
}

impl SignatureStatus {
    pub fn is_verified(&self) -> bool {
        matches!(self, Self::Verified { .. })
    }

    /// One word and the signer, for tables.
    pub fn summary(&self) -> String {
        match self {
            Self::Verified { signer, .. } => format!("verified: {signer}"),
            Self::NotChecked => "not checked".into(),
            Self::Unverified { .. } => "unverified".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("trusted key {path}: {cause}")]
    Key { path: PathBuf, cause: String },
    #[error(
        "signature policy is required but no trusted key is configured; add one with --trusted-key <cosign.pub>"
    )]
    NoKeys,
    #[error("signing key {path}: {cause}")]
    SigningKey { path: PathBuf, cause: String },
}

/// cosign's simple-signing payload.
#[derive(Debug, Serialize, Deserialize)]
pub struct Payload {
    pub critical: Critical,
    #[serde(default)]
    pub optional: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Critical {
    pub identity: Identity,
    pub image: Image,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Identity {
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Image {
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// The payload cosign signs for `repository` (`registry/repo`) at `digest`.
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    let p = Payload {
        critical: Critical {
            identity: Identity {
                docker_reference: repository.to_owned(),
            },
            image: Image {
                docker_manifest_digest: digest.to_owned(),
            },
            kind: PAYLOAD_TYPE.to_owned(),
        },
        optional: None,
    };
    // Serialising these plain strings cannot fail.
    serde_json::to_vec(&p).unwrap_or_default()
}

/// The tag of the signatures of `digest` (`sha256:<hex>` → `sha256-<hex>.sig`).
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// The reference of the signature manifest of `digest` in `parsed`'s repository.
pub fn signature_reference(parsed: &Reference, digest: &str) -> Reference {
    Reference::with_tag(
        parsed.registry().to_owned(),
        parsed.repository().to_owned(),
        signature_tag(digest),
    )
}

/// Check the layers of a signature manifest (`layers` with their fetched
/// payloads) against the trusted keys: the first payload that names
/// `digest` and carries a signature a trusted key verifies wins. The error
/// says why none did.
pub fn verify_layers(
    digest: &str,
    layers: &[(OciDescriptor, Vec<u8>)],
    keys: &[TrustedKey],
) -> Result<SignatureStatus, String> {
    let mut reasons = Vec::new();
    for (layer, payload) in layers {
        if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE {
            continue;
        }
        let Some(sig) = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        else {
            reasons.push("a payload has no signature annotation".to_owned());
            continue;
        };
        let parsed: Payload = match serde_json::from_slice(payload) {
            Ok(p) => p,
            Err(e) => {
                reasons.push(format!(
                    "a payload is not cosign's simple signing JSON: {e}"
                ));
                continue;
            }
        };
        if parsed.critical.image.docker_manifest_digest != digest {
            reasons.push(format!(
                "a signature is for another manifest ({})",
                parsed.critical.image.docker_manifest_digest
            ));
            continue;
        }
        for key in keys {
            if key
                .key
                .verify_signature(Signature::Base64Encoded(sig.as_bytes()), payload)
                .is_ok()
            {
                return Ok(SignatureStatus::Verified {
                    signer: key.signer(),
                    fingerprint: key.fingerprint.clone(),
                });
            }
        }
        reasons.push("a signature is not by any trusted key".to_owned());
    }
    if reasons.is_empty() {
        Err("the signature manifest holds no cosign signature".to_owned())
    } else {
        reasons.dedup();
        Err(reasons.join("; "))
    }
}

/// A signing key: cosign's encrypted `cosign.key` (password from
/// `password`) or an unencrypted PKCS#8 PEM key.
pub struct SigningKey {
    pair: SigStoreKeyPair,
    scheme: SigningScheme,
}

impl SigningKey {
    pub fn from_file(path: &Path, password: &[u8]) -> Result<Self, TrustError> {
        let fail = |cause: String| TrustError::SigningKey {
            path: path.to_owned(),
            cause,
        };
        let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let text = String::from_utf8_lossy(&pem);
        let pair = if text.contains("ENCRYPTED") {
            SigStoreKeyPair::from_encrypted_pem(&pem, password).map_err(|e| {
                fail(format!(
                    "cannot decrypt it (is COSIGN_PASSWORD the key's password?): {e}"
                ))
            })?
        } else {
            SigStoreKeyPair::from_pem(&pem)
                .map_err(|e| fail(format!("not a PKCS#8 PEM private key: {e}")))?
        };
        let scheme = match &pair {
            SigStoreKeyPair::ECDSA(ECDSAKeys::P256(_)) => SigningScheme::ECDSA_P256_SHA256_ASN1,
            SigStoreKeyPair::ECDSA(ECDSAKeys::P384(_)) => SigningScheme::ECDSA_P384_SHA384_ASN1,
            SigStoreKeyPair::ED25519(_) => SigningScheme::ED25519,
            SigStoreKeyPair::RSA(_) => {
                return Err(fail(
                    "RSA keys are not supported for signing; use an ECDSA P-256 key (cosign's default)"
                        .into(),
                ));
            }
        };
        Ok(Self { pair, scheme })
    }

    /// A new ECDSA P-256 key pair (cosign's default kind).
    pub fn generate() -> Result<Self, String> {
        let keys = ECDSAKeys::new(EllipticCurve::P256).map_err(|e| e.to_string())?;
        Ok(Self {
            pair: SigStoreKeyPair::ECDSA(keys),
            scheme: SigningScheme::ECDSA_P256_SHA256_ASN1,
        })
    }

    /// cosign's `cosign.key` (encrypted with `password`) and `cosign.pub`.
    pub fn to_cosign_pem(&self, password: &[u8]) -> Result<(String, String), String> {
        let private = self
            .pair
            .private_key_to_encrypted_pem(password)
            .map_err(|e| e.to_string())?;
        let public = self.pair.public_key_to_pem().map_err(|e| e.to_string())?;
        Ok((private.to_string(), public))
    }

    /// The base64 signature of `payload`.
    pub fn sign(&self, payload: &[u8]) -> Result<String, String> {
        let signer = self
            .pair
            .to_sigstore_signer(&self.scheme)
            .map_err(|e| e.to_string())?;
        let sig = signer.sign(payload).map_err(|e| e.to_string())?;
        Ok(base64::engine::general_purpose::STANDARD.encode(sig))
    }
}

/// The signature manifest for `layers` (cosign's layout: an image config
/// and one payload layer per signature).
pub fn signature_manifest(layers: Vec<OciDescriptor>, config: OciDescriptor) -> OciImageManifest {
    OciImageManifest {
        schema_version: 2,
        media_type: Some(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.to_owned()),
        config,
        layers,
        subject: None,
        artifact_type: None,
        annotations: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(payload: &[u8], sig: &str) -> (OciDescriptor, Vec<u8>) {
        let d = OciDescriptor {
            media_type: SIMPLE_SIGNING_MEDIA_TYPE.into(),
            digest: format!("sha256:{}", hex::encode(Sha256::digest(payload))),
            size: payload.len() as i64,
            urls: None,
            annotations: Some(BTreeMap::from([(
                SIGNATURE_ANNOTATION.to_owned(),
                sig.to_owned(),
            )])),
            artifact_type: None,
        };
        (d, payload.to_vec())
    }

    #[test]
    fn signatures_verify_only_with_the_right_key_and_digest() {
        let key = SigningKey::generate().unwrap();
        let (private, public) = key.to_cosign_pem(b"pw").unwrap();
        assert!(
            private.contains("ENCRYPTED SIGSTORE PRIVATE KEY"),
            "{private}"
        );
        let trusted = TrustedKey::from_pem("cosign.pub", public.as_bytes()).unwrap();
        let other = SigningKey::generate()
            .unwrap()
            .to_cosign_pem(b"")
            .unwrap()
            .1;
        let untrusted = TrustedKey::from_pem("other.pub", other.as_bytes()).unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        let p = payload("127.0.0.1:5000/pkg", &digest);
        let sig = key.sign(&p).unwrap();

        let ok =
            verify_layers(&digest, &[layer(&p, &sig)], std::slice::from_ref(&trusted)).unwrap();
        assert!(ok.is_verified());
        let err = verify_layers(&digest, &[layer(&p, &sig)], &[untrusted]).unwrap_err();
        assert!(err.contains("not by any trusted key"), "{err}");
        let other_digest = format!("sha256:{}", "b".repeat(64));
        let err = verify_layers(
            &other_digest,
            &[layer(&p, &sig)],
            std::slice::from_ref(&trusted),
        )
        .unwrap_err();
        assert!(err.contains("another manifest"), "{err}");
        let mut tampered = p.clone();
        tampered.push(b' ');
        let err = verify_layers(&digest, &[layer(&tampered, &sig)], &[trusted]).unwrap_err();
        assert!(err.contains("not by any trusted key"), "{err}");
    }

    #[test]
    fn allow_list_takes_prefixes_and_digests() {
        let mut p = TrustPolicy::default();
        assert!(p.allows("r/x:1", "sha256:1"));
        p.allowed = vec!["oci://r/good/".into(), "sha256:2".into()];
        assert!(p.allows("r/good/x:1", "sha256:1"));
        assert!(p.allows("r/bad/x:1", "sha256:2"));
        assert!(!p.allows("r/bad/x:1", "sha256:1"));
    }
}

/// What `sign` stored.
#[derive(Debug, Clone)]
pub struct Signed {
    /// `registry/repository@sha256:...`: what was signed.
    pub pinned: String,
    /// The tag the signature manifest is under.
    pub tag: String,
    /// Signatures now under that tag (cosign appends, so do we).
    pub count: usize,
}

/// Sign the manifest `reference` (without `oci://`) resolves to with `key`
/// and store the signature as cosign does: a simple-signing payload layer
/// appended to the manifest under tag `sha256-<hex>.sig`.
pub async fn sign(
    reference: &str,
    key: &SigningKey,
    opts: &crate::RegistryOptions,
) -> Result<Signed, crate::OciError> {
    use crate::{OciError, describe, package};
    let parsed = crate::parse_reference(reference)?;
    let registry = parsed.resolve_registry().to_owned();
    let client = crate::client(&registry, opts);
    let auth = crate::auth(&registry, opts);
    let registry_err = |op, e: oci_client::errors::OciDistributionError| OciError::Registry {
        reference: reference.to_owned(),
        op,
        cause: describe(&e),
    };
    crate::bounded(reference, "sign", opts, async {
        let c = client.as_ref();
        c.auth(&parsed, &auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| registry_err("authenticating", e))?;
        let (_, digest) = package::fetch_manifest(c, &parsed, &auth, reference).await?;
        let repository = format!("{}/{}", parsed.registry(), parsed.repository());
        let body = payload(&repository, &digest);
        let sig = key.sign(&body).map_err(|cause| OciError::Registry {
            reference: reference.to_owned(),
            op: "signing",
            cause,
        })?;
        let sig_ref = signature_reference(&parsed, &digest);
        // Keep the signatures already there (other keys), as cosign does.
        let mut layers: Vec<OciDescriptor> = match c
            .pull_manifest_raw(&sig_ref, &auth, &[oci_client::manifest::OCI_IMAGE_MEDIA_TYPE])
            .await
        {
            Ok((bytes, _)) => serde_json::from_slice::<OciImageManifest>(&bytes)
                .map(|m| m.layers)
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let layer = OciDescriptor {
            media_type: SIMPLE_SIGNING_MEDIA_TYPE.to_owned(),
            digest: package::sha256(&body),
            size: body.len() as i64,
            urls: None,
            annotations: Some(BTreeMap::from([(SIGNATURE_ANNOTATION.to_owned(), sig)])),
            artifact_type: None,
        };
        layers.retain(|l| l.annotations != layer.annotations);
        layers.push(layer.clone());
        c.push_blob(&sig_ref, body, &layer.digest)
            .await
            .map_err(|e| registry_err("uploading the signature payload", e))?;
        // cosign's config: an image config listing the payload layers.
        let config = serde_json::json!({
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()},
        });
        let config = serde_json::to_vec(&config).unwrap_or_default();
        let config_desc = OciDescriptor {
            media_type: oci_client::manifest::IMAGE_CONFIG_MEDIA_TYPE.to_owned(),
            digest: package::sha256(&config),
            size: config.len() as i64,
            urls: None,
            annotations: None,
            artifact_type: None,
        };
        c.push_blob(&sig_ref, config, &config_desc.digest)
            .await
            .map_err(|e| registry_err("uploading the signature config", e))?;
        let count = layers.len();
        let manifest = signature_manifest(layers, config_desc);
        let body = serde_json::to_vec(&manifest).map_err(|e| OciError::Registry {
            reference: reference.to_owned(),
            op: "signing",
            cause: e.to_string(),
        })?;
        c.push_manifest_raw(
            &sig_ref,
            body,
            package::http_header(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE),
        )
        .await
        .map_err(|e| registry_err("uploading the signature manifest", e))?;
        Ok(Signed {
            pinned: format!("{repository}@{digest}"),
            tag: signature_tag(&digest),
            count,
        })
    })
    .await
}
