//! `conductor sign` and `conductor generate-key-pair`: cosign-compatible
//! keyed signatures of pushed artifacts (cosign itself is a Go binary; this
//! writes the same layout, so either tool can sign and verify).

use std::path::PathBuf;

use anyhow::Context;
use conductor_oci as oci;

use super::{block_on, strip_scheme};
use crate::args::RegistryArgs;

/// Sign a pushed package (or component, or bytecode image) with a key, as
/// `cosign sign --key` does: the signature goes to the tag
/// `sha256-<digest>.sig` of the same repository.
#[derive(clap::Args)]
pub struct SignArgs {
    /// What to sign: `oci://registry/repository:tag` or `...@sha256:<digest>`.
    pub reference: String,
    /// The private key: cosign's `cosign.key` (its password from
    /// COSIGN_PASSWORD) or an unencrypted PKCS#8 PEM key.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub fn sign(args: SignArgs) -> anyhow::Result<()> {
    let password = std::env::var("COSIGN_PASSWORD").unwrap_or_default();
    let key = oci::SigningKey::from_file(&args.key, password.as_bytes())?;
    let opts = args.registry.options()?;
    let reference = strip_scheme(&args.reference);
    let signed = block_on(async { Ok(oci::trust::sign(reference, &key, &opts).await?) })?;
    println!("signed oci://{}", signed.pinned);
    println!(
        "signature oci://{}:{}",
        reference_repository(reference),
        signed.tag
    );
    println!("signatures {}", signed.count);
    Ok(())
}

/// `registry/repo` of `registry/repo:tag` or `registry/repo@digest`.
fn reference_repository(reference: &str) -> &str {
    let name = reference.split('@').next().unwrap_or(reference);
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    }
}

/// Write a new ECDSA P-256 key pair in cosign's format: `<prefix>.key`
/// (encrypted with COSIGN_PASSWORD, empty if unset) and `<prefix>.pub`.
#[derive(clap::Args)]
pub struct GenerateKeyPairArgs {
    /// Path prefix of the two files.
    #[arg(long, value_name = "PREFIX", default_value = "cosign")]
    pub output_key_prefix: PathBuf,
}

pub fn generate_key_pair(args: GenerateKeyPairArgs) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let password = std::env::var("COSIGN_PASSWORD").unwrap_or_default();
    let key = oci::SigningKey::generate().map_err(anyhow::Error::msg)?;
    let (private, public) = key
        .to_cosign_pem(password.as_bytes())
        .map_err(anyhow::Error::msg)?;
    let key_path = args.output_key_prefix.with_extension("key");
    let pub_path = args.output_key_prefix.with_extension("pub");
    // Never overwrite a key, and keep the private one to its owner.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .and_then(|mut f| f.write_all(private.as_bytes()))
        .with_context(|| {
            format!(
                "cannot write {} (it must not exist yet)",
                key_path.display()
            )
        })?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&pub_path)
        .and_then(|mut f| f.write_all(public.as_bytes()))
        .with_context(|| {
            format!(
                "cannot write {} (it must not exist yet)",
                pub_path.display()
            )
        })?;
    println!("private key written to {}", key_path.display());
    println!("public key written to {}", pub_path.display());
    Ok(())
}
