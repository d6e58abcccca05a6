//! `conductor push`: a component to an OCI registry.

use std::path::PathBuf;

use conductor_oci::{self as oci, RegistryOptions};

use super::{block_on, strip_scheme};
use crate::args::RegistryArgs;

/// Push a plugin component to an OCI registry (CNCF wasm artifact format).
#[derive(clap::Args)]
pub struct PushArgs {
    /// The component file (`.wasm`).
    pub file: PathBuf,
    /// Where to push: `oci://registry/repository:tag` (`oci://` optional).
    pub reference: String,
    /// Annotation org.opencontainers.image.title [default: the file name].
    #[arg(long)]
    pub title: Option<String>,
    /// Annotation org.opencontainers.image.version.
    #[arg(long)]
    pub version: Option<String>,
    /// Annotation org.opencontainers.image.source (e.g. the repository URL).
    #[arg(long)]
    pub source: Option<String>,
    /// Annotation org.opencontainers.image.description.
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub fn run(args: PushArgs) -> anyhow::Result<()> {
    let notes = oci::PushAnnotations {
        title: args.title,
        version: args.version,
        source: args.source,
        description: args.description,
    };
    push(args.file, args.reference, notes, args.registry.options())
}

fn push(
    file: PathBuf,
    reference: String,
    notes: oci::PushAnnotations,
    opts: RegistryOptions,
) -> anyhow::Result<()> {
    let reference = strip_scheme(&reference);
    let pushed = block_on(async { Ok(oci::push(&file, reference, notes, &opts).await?) })?;
    println!("pushed oci://{reference}");
    println!("manifest {}", pushed.manifest_url);
    println!("layer {}", pushed.layer_digest);
    for (k, v) in &pushed.annotations {
        println!("annotation {k}={v}");
    }
    Ok(())
}
