//! `conductor run`: the plugins of a spec file, in the foreground.

use std::path::PathBuf;

use anyhow::Context;
use conductor_node::Node;
use conductor_node::node::Services;
use conductor_oci::{self as oci, RegistryOptions};

use crate::args::NodeArgs;

mod exporter;

/// Run the plugins of a spec file, or a plugin package, in the foreground
/// until Ctrl-C.
///
/// The file holds one or more plugin specs (YAML documents separated by
/// `---`); relative paths in it are resolved against its directory. An
/// `oci://` reference to a plugin package runs the package's default spec.
/// With `--exporter-config`, cloudflare/ebpf_exporter configurations run
/// too (or alone), their metrics named as ebpf_exporter names them.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The plugin spec file, `oci://registry/repository:tag` of a plugin
    /// package, or a package directory (holding package.yaml, as
    /// `conductor build` writes one).
    #[arg(required_unless_present = "exporter_config")]
    pub spec: Option<PathBuf>,
    /// A directory of ebpf_exporter configurations: `<name>.yaml` beside
    /// `<name>.bpf.o` for each of `--names`; programs attach from their
    /// section names.
    #[arg(long, value_name = "DIR", requires = "names")]
    pub exporter_config: Option<PathBuf>,
    /// The ebpf_exporter configurations to run from `--exporter-config`.
    #[arg(
        long,
        value_name = "NAME,...",
        value_delimiter = ',',
        requires = "exporter_config"
    )]
    pub names: Vec<String>,
    /// With a package reference: the plugin's name [default: the last
    /// segment of the repository; for a directory, the package's].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub node: NodeArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let (config, registry) = args.node.config()?;
    let package_dir = args
        .spec
        .as_deref()
        .filter(|s| s.is_dir())
        .map(PathBuf::from);
    let specs = match args.spec.as_deref() {
        None => Vec::new(),
        Some(spec) => match spec.to_str().and_then(conductor_api::oci_reference) {
            Some(reference) => vec![package_spec(reference, args.name.as_deref())?],
            None if package_dir.is_some() => vec![local_package_spec(spec, args.name.clone())?],
            None => conductor_api::load_file(spec)?,
        },
    };
    // Configs are checked, and kernel symbols read (that needs CAP_SYSLOG,
    // which the node drops), before the node starts.
    let exporters = match &args.exporter_config {
        Some(dir) => Some(exporter::Prepared::new(dir, &args.names)?),
        None => None,
    };
    let store = oci::Store::new(&config.cache_dir);
    let base_dir = match args.spec.as_deref().and_then(std::path::Path::parent) {
        _ if package_dir.is_some() => package_dir.clone().unwrap_or_default(),
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let node = Node::new(config)?;
    node.run(|services| async move {
        let mut running = None;
        tokio::select! {
            loaded = async {
                load_all(&services, &specs, &store, &registry, &base_dir).await?;
                if let Some(prepared) = exporters {
                    let manager = services.manager.clone();
                    running = Some(
                        tokio::task::spawn_blocking(move || prepared.start(&manager))
                            .await
                            .context("loading ebpf_exporter configs")??,
                    );
                }
                anyhow::Ok(())
            } => loaded?,
            // Ctrl-C while loading: stop (what loaded so far is detached).
            _ = services.stopped() => return Ok(()),
        }
        services.set_ready();
        tracing::info!(plugins = specs.len(), "running; press Ctrl-C to stop");
        services.stopped().await;
        if let Some(r) = running {
            r.stop(&services.manager);
        }
        Ok(())
    })
}

/// The spec that runs package `reference` with its defaults.
fn package_spec(reference: &str, name: Option<&str>) -> anyhow::Result<conductor_api::PluginSpec> {
    let name = match name {
        Some(n) => n.to_owned(),
        None => {
            let repo = reference.split(['@']).next().unwrap_or(reference);
            let last = repo.rsplit('/').next().unwrap_or(repo);
            let last = last.split(':').next().unwrap_or(last);
            last.to_ascii_lowercase().replace(['_', '.'], "-")
        }
    };
    let text = serde_json::json!({"name": name, "component": format!("oci://{reference}")});
    conductor_api::PluginSpec::from_yaml(&text.to_string())
        .with_context(|| format!("cannot run oci://{reference} (name it with --name if its repository name is not a valid plugin name)"))
}

/// The default spec of the package in `dir` (files relative to `dir`),
/// with its documented config defaults.
fn local_package_spec(
    dir: &std::path::Path,
    name: Option<String>,
) -> anyhow::Result<conductor_api::PluginSpec> {
    let file = dir.join(conductor_api::package::PACKAGE_FILE);
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "{} is a directory without {}: give a spec file, a package directory or an oci:// reference",
            dir.display(),
            conductor_api::package::PACKAGE_FILE
        )
    })?;
    let manifest =
        conductor_api::package::PackageManifest::from_yaml(&text, &file.display().to_string())?;
    let mut user = manifest.spec.clone();
    if let Some(name) = name {
        user.name = name;
    }
    Ok(manifest.apply_overrides(&user))
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
