//! `conductor packages` and `conductor show`: the plugin packages in the
//! local cache, and what one package holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use conductor_client::Output;
use conductor_oci::{self as oci, Kind, RefRecord};
use serde::Serialize;

use super::{block_on, strip_scheme};
use crate::args::default_cache_dir;

/// The plugin packages in the local cache: reference, digest, size,
/// signature status and the daemon's plugins using each.
#[derive(clap::Args)]
pub struct PackagesArgs {
    /// The cache directory [default: $XDG_CACHE_HOME/conductor or ~/.cache/conductor].
    #[arg(long, value_name = "DIR", env = "CONDUCTOR_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The daemon's socket, asked which plugins use each package.
    #[arg(long, value_name = "PATH", default_value = conductor_api::v1::DEFAULT_SOCKET, env = "CONDUCTOR_SOCKET")]
    pub socket: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// One cached package as `packages -o json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageView {
    pub reference: String,
    pub digest: String,
    pub size: u64,
    pub signature: Option<oci::SignatureStatus>,
    /// Plugins of the daemon using it; absent when the daemon could not be asked.
    pub used_by: Option<Vec<String>>,
    pub version: Option<String>,
    pub description: Option<String>,
}

/// The daemon's plugins by the `oci://` reference their spec runs, or
/// None when no daemon answers on `socket`.
pub fn plugins_by_reference(socket: &Path) -> Option<BTreeMap<String, Vec<String>>> {
    let list = block_on(async {
        let mut client = conductor_api::v1::connect(socket).await?;
        Ok(client
            .list(conductor_api::v1::ListRequest {})
            .await?
            .into_inner()
            .plugins)
    })
    .ok()?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in list {
        if let Some(spec) = &p.spec
            && let Some(r) = conductor_api::oci_reference(&spec.component)
        {
            let canonical = r
                .parse::<conductor_oci::Reference>()
                .map_or_else(|_| r.to_owned(), |x| x.whole());
            out.entry(canonical).or_default().push(p.name.clone());
        }
    }
    Some(out)
}

/// The package records of the cache with the plugins using each.
pub fn views(cache_dir: &Path, socket: &Path) -> anyhow::Result<Vec<PackageView>> {
    let store = oci::Store::new(cache_dir);
    let used = plugins_by_reference(socket);
    Ok(store
        .list()?
        .into_iter()
        .filter(|r| r.kind == Kind::Package)
        .map(|r| view(&r, used.as_ref()))
        .collect())
}

fn view(r: &RefRecord, used: Option<&BTreeMap<String, Vec<String>>>) -> PackageView {
    let pinned = format!(
        "{}@{}",
        r.reference
            .split(['@'])
            .next()
            .unwrap_or(&r.reference)
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .map_or(r.reference.as_str(), |(repo, _)| repo),
        r.manifest_digest
    );
    PackageView {
        reference: r.reference.clone(),
        digest: r.manifest_digest.clone(),
        size: r.total_size(),
        signature: r.signature.clone(),
        used_by: used.map(|u| {
            let mut names: Vec<String> = [r.reference.as_str(), pinned.as_str()]
                .iter()
                .filter_map(|k| u.get(*k))
                .flatten()
                .cloned()
                .collect();
            names.sort();
            names.dedup();
            names
        }),
        version: r.package.as_ref().and_then(|p| p.version.clone()),
        description: r.package.as_ref().and_then(|p| p.description.clone()),
    }
}

pub fn packages(args: PackagesArgs) -> anyhow::Result<()> {
    let views = views(
        &args.cache_dir.unwrap_or_else(default_cache_dir),
        &args.socket,
    )?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&views)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(&views)?),
        Output::Table => {
            println!("REFERENCE\tDIGEST\tSIZE\tSIGNATURE\tUSED BY");
            for v in &views {
                println!(
                    "oci://{}\t{}\t{}\t{}\t{}",
                    v.reference,
                    short(&v.digest),
                    v.size,
                    v.signature
                        .as_ref()
                        .map_or_else(|| "not checked".into(), oci::SignatureStatus::summary),
                    match &v.used_by {
                        None => "unknown (no daemon)".to_owned(),
                        Some(n) if n.is_empty() => "-".to_owned(),
                        Some(n) => n.join(","),
                    }
                );
            }
        }
    }
    Ok(())
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// What one plugin package holds: programs and attach points, maps, config
/// keys with their docs, WIT version, signer, source. Read from the cache,
/// or pulled first if it is not there.
#[derive(clap::Args)]
pub struct ShowArgs {
    /// `oci://registry/repository:tag` or `...@sha256:<digest>`.
    pub reference: String,
    /// The cache directory [default: $XDG_CACHE_HOME/conductor or ~/.cache/conductor].
    #[arg(long, value_name = "DIR", env = "CONDUCTOR_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(flatten)]
    pub registry: crate::args::RegistryArgs,
}

pub fn show(args: ShowArgs) -> anyhow::Result<()> {
    let reference = strip_scheme(&args.reference).to_owned();
    let store = oci::Store::new(&args.cache_dir.unwrap_or_else(default_cache_dir));
    let opts = args.registry.options()?;
    let record = match store.record(&reference) {
        Some(r) if r.kind == Kind::Package => r,
        _ => {
            block_on(async {
                Ok(oci::pull(
                    &store,
                    &reference,
                    Kind::Component,
                    conductor_api::PullPolicy::IfNotPresent,
                    &opts,
                )
                .await?)
            })?
            .record
        }
    };
    let (Some(json), Some(text)) = (
        oci::package::show_json(&record),
        oci::package::show_text(&record),
    ) else {
        anyhow::bail!("oci://{reference} is a component artifact, not a plugin package");
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&json)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(&json)?),
        Output::Table => print!("{text}"),
    }
    Ok(())
}
