//! `conductor push`: a component to an OCI registry.

use std::path::{Path, PathBuf};

use conductor_oci::{self as oci, RegistryOptions};

use super::{block_on, strip_scheme};
use crate::args::RegistryArgs;

/// Push a plugin component to an OCI registry (CNCF wasm artifact format),
/// or with --package a whole plugin package (component, BPF object,
/// default spec and metadata in one artifact).
#[derive(clap::Args)]
pub struct PushArgs {
    /// The component file (`.wasm`).
    #[arg(value_name = "FILE", required_unless_present = "package")]
    pub file: Option<PathBuf>,
    /// Where to push: `oci://registry/repository:tag` (`oci://` optional).
    #[arg(value_name = "REFERENCE")]
    pub reference: Option<String>,
    /// Push the plugin package described by DIR/package.yaml (the files it
    /// names are read from DIR); the title, version, source and description
    /// come from package.yaml.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["title", "version", "source", "description"])]
    pub package: Option<PathBuf>,
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
    if let Some(dir) = args.package {
        // `push --package DIR REF`: the one positional is the reference.
        let reference = match (args.file, args.reference) {
            (Some(r), None) => r.display().to_string(),
            _ => anyhow::bail!("usage: conductor push --package <DIR> <REFERENCE>"),
        };
        return push_package(&dir, &reference, args.registry.options()?);
    }
    let (Some(file), Some(reference)) = (args.file, args.reference) else {
        anyhow::bail!("usage: conductor push <FILE> <REFERENCE>");
    };
    let notes = oci::PushAnnotations {
        title: args.title,
        version: args.version,
        source: args.source,
        description: args.description,
    };
    push(file, reference, notes, args.registry.options()?)
}

/// Assemble the package of `dir` and push it; prints its digest.
pub fn push_package(dir: &Path, reference: &str, opts: RegistryOptions) -> anyhow::Result<()> {
    let reference = strip_scheme(reference);
    let package = oci::Assembled::from_dir(dir)?;
    let pushed = block_on(async { Ok(oci::package::push(&package, reference, &opts).await?) })?;
    println!("pushed oci://{reference}");
    println!("digest {}", pushed.manifest_digest);
    println!("pinned oci://{}", pushed.pinned);
    for l in &pushed.layers {
        println!("layer {} {} {} {}", l.digest, l.media_type, l.size, l.title);
    }
    Ok(())
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
