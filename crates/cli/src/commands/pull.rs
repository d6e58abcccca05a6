//! `conductor pull`: a component or bytecode image into the local cache.

use std::path::PathBuf;

use anyhow::Context;
use conductor_oci::{self as oci, RegistryOptions};

use super::{block_on, strip_scheme};
use crate::args::{RegistryArgs, default_cache_dir};

/// Pull a plugin component (or, with --bytecode, a bpfman bytecode image)
/// into the local cache, re-resolving its tag.
#[derive(clap::Args)]
pub struct PullArgs {
    /// `oci://registry/repository:tag` or `...@sha256:<digest>` (`oci://` optional).
    pub reference: String,
    /// The reference is a bpfman bytecode image, not a component.
    #[arg(long)]
    pub bytecode: bool,
    /// Also copy the artifact (the component, or the extracted BPF object) here.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The cache directory [default: $XDG_CACHE_HOME/conductor or ~/.cache/conductor].
    #[arg(long, value_name = "DIR", env = "CONDUCTOR_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub fn run(args: PullArgs) -> anyhow::Result<()> {
    pull(
        args.reference,
        args.bytecode,
        args.output,
        args.cache_dir.unwrap_or_else(default_cache_dir),
        args.registry.options()?,
    )
}

fn pull(
    reference: String,
    bytecode: bool,
    output: Option<PathBuf>,
    cache_dir: PathBuf,
    opts: RegistryOptions,
) -> anyhow::Result<()> {
    let reference = strip_scheme(&reference);
    let store = oci::Store::new(&cache_dir);
    let kind = if bytecode {
        oci::Kind::Bytecode
    } else {
        oci::Kind::Component
    };
    let pulled = block_on(async {
        Ok(oci::pull(
            &store,
            reference,
            kind,
            conductor_api::PullPolicy::Always,
            &opts,
        )
        .await?)
    })?;
    if let Some(out) = output {
        std::fs::copy(&pulled.path, &out)
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    println!("pulled oci://{}", pulled.record.reference);
    println!("manifest {}", pulled.record.manifest_digest);
    println!("layer {}", pulled.record.layer_digest);
    println!("size {}", pulled.record.size);
    println!("downloaded {}", !pulled.from_cache);
    println!("path {}", pulled.path.display());
    Ok(())
}
