//! `conductor run`: the plugins of a spec file, in the foreground.

use std::path::PathBuf;

use anyhow::Context;
use conductor_node::Node;
use conductor_node::node::Services;
use conductor_oci::{self as oci, RegistryOptions};

use crate::args::NodeArgs;

/// Run the plugins of a spec file in the foreground until Ctrl-C.
///
/// The file holds one or more plugin specs (YAML documents separated by
/// `---`); relative paths in it are resolved against its directory.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The plugin spec file.
    pub spec: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let (config, registry) = args.node.config()?;
    let specs = conductor_api::load_file(&args.spec)?;
    let store = oci::Store::new(&config.cache_dir);
    let base_dir = match args.spec.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let node = Node::new(config)?;
    node.run(|services| async move {
        tokio::select! {
            loaded = load_all(&services, &specs, &store, &registry, &base_dir) => loaded?,
            // Ctrl-C while loading: stop (what loaded so far is detached).
            _ = services.stopped() => return Ok(()),
        }
        services.set_ready();
        tracing::info!(plugins = specs.len(), "running; press Ctrl-C to stop");
        services.stopped().await;
        Ok(())
    })
}

/// Load every spec in order; the first failure stops the run.
async fn load_all(
    services: &Services,
    specs: &[conductor_api::PluginSpec],
    store: &oci::Store,
    registry: &RegistryOptions,
    base_dir: &std::path::Path,
) -> anyhow::Result<()> {
    for spec in specs {
        // OCI references become cached files before anything loads.
        let resolved = oci::resolve_spec(spec, store, registry)
            .await
            .with_context(|| format!("cannot load plugin {:?}", spec.name))?;
        let (manager, base) = (services.manager.clone(), base_dir.to_owned());
        // A pulled component loads from a cache path: name its reference.
        let from = conductor_api::oci_reference(&spec.component)
            .map(|_| format!(" (component {})", spec.component))
            .unwrap_or_default();
        tokio::task::spawn_blocking(move || manager.load(&resolved, &base))
            .await
            .context("loading plugin")?
            .with_context(|| format!("cannot load plugin {:?}{from}", spec.name))?;
    }
    Ok(())
}
