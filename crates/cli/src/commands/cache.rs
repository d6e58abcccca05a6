//! `conductor cache`: list or prune pulled artifacts and compiled components.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use conductor_oci as oci;

use crate::args::default_cache_dir;

/// List or prune pulled artifacts.
#[derive(clap::Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub action: CacheAction,
    /// The cache directory [default: $XDG_CACHE_HOME/conductor or ~/.cache/conductor].
    #[arg(long, value_name = "DIR", env = "CONDUCTOR_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum CacheAction {
    /// One line per cached reference: reference, kind, layer digest, size.
    List,
    /// Remove blobs no cached reference uses and leftovers of interrupted pulls.
    Prune {
        /// Remove every pulled artifact and every compiled component.
        #[arg(long)]
        all: bool,
    },
}

pub fn run(args: CacheArgs) -> anyhow::Result<()> {
    cache(
        args.action,
        args.cache_dir.unwrap_or_else(default_cache_dir),
    )
}

fn cache(action: CacheAction, cache_dir: PathBuf) -> anyhow::Result<()> {
    let store = oci::Store::new(&cache_dir);
    match action {
        CacheAction::List => {
            for r in store.list()? {
                let kind = match r.kind {
                    oci::Kind::Component => "component",
                    oci::Kind::Bytecode => "bytecode",
                };
                println!(
                    "oci://{}\t{kind}\t{}\t{}",
                    r.reference, r.layer_digest, r.size
                );
            }
        }
        CacheAction::Prune { all } => {
            // Digests of the components still referenced, read before pruning.
            let keep: Vec<String> = if all {
                Vec::new()
            } else {
                store
                    .list()?
                    .into_iter()
                    .filter_map(|r| r.layer_digest.strip_prefix("sha256:").map(str::to_owned))
                    .collect()
            };
            let mut removed = store.prune(all)?;
            // Compiled components live beside the OCI store, named
            // `<sha256 of the component>-<engine hash>.cwasm`: drop those whose
            // component is no longer cached (a local file's is recompiled on
            // its next start).
            if let Ok(entries) = std::fs::read_dir(&cache_dir) {
                for e in entries.flatten() {
                    let path = e.path();
                    if path.extension().is_none_or(|x| x != "cwasm") {
                        continue;
                    }
                    let name = e.file_name().to_string_lossy().into_owned();
                    let digest = name.split('-').next().unwrap_or_default();
                    if !keep.iter().any(|k| k == digest) {
                        std::fs::remove_file(&path)
                            .with_context(|| format!("cannot remove {}", path.display()))?;
                        removed.push(path);
                    }
                }
            }
            for p in &removed {
                println!("removed {}", p.display());
            }
            println!("{} removed", removed.len());
        }
    }
    Ok(())
}
