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
    /// The daemon's socket, asked which cached packages its plugins use.
    #[arg(long, value_name = "PATH", default_value = conductor_api::v1::DEFAULT_SOCKET, env = "CONDUCTOR_SOCKET", global = true)]
    pub socket: PathBuf,
}

#[derive(Subcommand)]
pub enum CacheAction {
    /// One line per cached reference: reference, kind, layer digest, size.
    List,
    /// Remove blobs no cached reference uses and leftovers of interrupted pulls.
    Prune {
        /// Remove every pulled artifact and every compiled component.
        /// Refused while the daemon runs a plugin from a cached package.
        #[arg(long)]
        all: bool,
        /// With --all: remove packages the daemon's plugins use too.
        #[arg(long, requires = "all")]
        force: bool,
    },
}

pub fn run(args: CacheArgs) -> anyhow::Result<()> {
    cache(
        args.action,
        args.cache_dir.unwrap_or_else(default_cache_dir),
        &args.socket,
    )
}

fn cache(action: CacheAction, cache_dir: PathBuf, socket: &std::path::Path) -> anyhow::Result<()> {
    let store = oci::Store::new(&cache_dir);
    match action {
        CacheAction::List => {
            for r in store.list()? {
                let kind = match r.kind {
                    oci::Kind::Component => "component",
                    oci::Kind::Bytecode => "bytecode",
                    oci::Kind::Package => "package",
                };
                println!(
                    "oci://{}\t{kind}\t{}\t{}",
                    r.reference, r.layer_digest, r.size
                );
            }
        }
        CacheAction::Prune { all, force } => {
            if all && !force {
                let in_use: Vec<String> = super::packages::views(&cache_dir, socket)?
                    .into_iter()
                    .filter_map(|v| {
                        let names = v.used_by.filter(|n| !n.is_empty())?;
                        Some(format!(
                            "oci://{} (used by {})",
                            v.reference,
                            names.join(", ")
                        ))
                    })
                    .collect();
                if !in_use.is_empty() {
                    anyhow::bail!(
                        "refusing to remove packages loaded plugins run from: {}; unload them first, or add --force",
                        in_use.join("; ")
                    );
                }
            }
            // Digests of the components still referenced, read before pruning.
            let keep: Vec<String> = if all {
                Vec::new()
            } else {
                store
                    .list()?
                    .into_iter()
                    .flat_map(|r| {
                        r.digests()
                            .into_iter()
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                    })
                    .filter_map(|d| d.strip_prefix("sha256:").map(str::to_owned))
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
