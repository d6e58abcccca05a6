//! A plugin package: one OCI artifact holding a plugin's component, its BPF
//! object, its default spec and its metadata (see `docs/src/oci.md`).
//!
//! [`PackageManifest`] is both the author's `package.yaml` (files named
//! relative to its directory) and, with the files replaced by the titles of
//! the artifact's layers, the artifact's config blob.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::{Limits, PluginSpec};

/// The file an author's package directory is described by.
pub const PACKAGE_FILE: &str = "package.yaml";

/// What a package declares besides its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PackageManifest {
    /// The plugin's default spec. `component` and `bytecode.path` name files
    /// of the package (relative to `package.yaml`; in the artifact, layer
    /// titles).
    pub spec: PluginSpec,
    /// One line saying what the plugin observes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where its source lives (a repository URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// SPDX license expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// The package's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The `conductor:plugin` WIT version the component targets; filled in
    /// from the component when the package is assembled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wit_version: Option<String>,
    /// The config keys the plugin reads, documented.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_keys: Vec<ConfigKey>,
    /// Dashboards shipped with the plugin (e.g. Grafana JSON): files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dashboards: Vec<String>,
}

/// One config key a plugin reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigKey {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Its value when neither the package's spec nor the user sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

impl PackageManifest {
    /// Parse and check a `package.yaml` (or the artifact's config JSON).
    pub fn from_yaml(text: &str, what: &str) -> Result<Self, PackageError> {
        let invalid = |message: String| PackageError::Invalid {
            what: what.to_owned(),
            message,
        };
        let m: Self = serde_yaml_ng::from_str(text).map_err(|e| invalid(e.to_string()))?;
        m.spec
            .validate()
            .map_err(|e| invalid(format!("spec: {e}")))?;
        if crate::spec::oci_reference(&m.spec.component).is_some() {
            return Err(invalid(
                "spec.component must name the component file of the package, not an oci:// reference"
                    .into(),
            ));
        }
        if m.spec.bytecode.as_ref().is_some_and(|b| b.image.is_some()) {
            return Err(invalid(
                "spec.bytecode must name the BPF object file of the package (path), not an image"
                    .into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for k in &m.config_keys {
            if !seen.insert(&k.name) {
                return Err(invalid(format!("config key {:?} is listed twice", k.name)));
            }
        }
        Ok(m)
    }

    /// The spec a user's `spec` (whose `component` names this package)
    /// runs: the package's default spec with the user's overrides. The
    /// user's name and pull policy always apply; `bytecode`, `maps`,
    /// `tickIntervalMs`, `readOnlyPaths` and `bpfmanProgram` replace the
    /// package's when set; `config` is merged
    /// key by key (documented defaults, then the package's spec, then the
    /// user's); a limit replaces the package's when it differs from the
    /// built-in default. `component` and `bytecode.path` stay as the
    /// package names them (layer titles) for the caller to resolve.
    pub fn apply_overrides(&self, user: &PluginSpec) -> PluginSpec {
        let mut out = self.spec.clone();
        out.name = user.name.clone();
        out.pull_policy = user.pull_policy;
        if user.bytecode.is_some() {
            out.bytecode = user.bytecode.clone();
        }
        if !user.maps.is_empty() {
            out.maps = user.maps.clone();
        }
        if user.tick_interval_ms.is_some() {
            out.tick_interval_ms = user.tick_interval_ms;
        }
        if !user.read_only_paths.is_empty() {
            out.read_only_paths = user.read_only_paths.clone();
        }
        if user.bpfman_program.is_some() {
            out.bpfman_program = user.bpfman_program.clone();
        }
        if user.cluster_bpf_application.is_some() {
            out.cluster_bpf_application = user.cluster_bpf_application.clone();
        }
        let mut config: BTreeMap<String, String> = self
            .config_keys
            .iter()
            .filter_map(|k| Some((k.name.clone(), k.default.clone()?)))
            .collect();
        config.extend(self.spec.config.clone());
        config.extend(user.config.clone());
        out.config = config;
        let d = Limits::default();
        if user.limits.memory_mib != d.memory_mib {
            out.limits.memory_mib = user.limits.memory_mib;
        }
        if user.limits.call_timeout_ms != d.call_timeout_ms {
            out.limits.call_timeout_ms = user.limits.call_timeout_ms;
        }
        if user.limits.max_series_per_metric != d.max_series_per_metric {
            out.limits.max_series_per_metric = user.limits.max_series_per_metric;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKG: &str = r#"
description: counts execs
configKeys:
  - {name: ignore, description: commands not counted, default: "sh"}
  - {name: other, description: no default}
spec:
  name: exec-counter
  component: exec_counter.wasm
  bytecode: {path: exec_counter.bpf.o}
  maps: [{name: events, events: {}}]
  config: {other: "1"}
  limits: {memoryMib: 32, callTimeoutMs: 500}
"#;

    #[test]
    fn overrides_merge_config_and_replace_limits_that_are_set() {
        let pkg = PackageManifest::from_yaml(PKG, "package.yaml").unwrap();
        let user = PluginSpec::from_yaml(
            "name: mine\ncomponent: oci://r.example/p:1\nconfig: {other: \"2\"}\nlimits: {memoryMib: 128}\n",
        )
        .unwrap();
        let s = pkg.apply_overrides(&user);
        assert_eq!(s.name, "mine");
        assert_eq!(s.component, "exec_counter.wasm");
        assert_eq!(s.config["ignore"], "sh");
        assert_eq!(s.config["other"], "2");
        assert_eq!(s.limits.memory_mib, 128);
        assert_eq!(s.limits.call_timeout_ms, 500);
        assert_eq!(s.maps.len(), 1);
    }

    #[test]
    fn a_package_must_name_its_own_files() {
        let bad = PKG.replace("exec_counter.wasm", "oci://r.example/p:1");
        let err = PackageManifest::from_yaml(&bad, "package.yaml").unwrap_err();
        assert!(err.to_string().contains("spec.component"), "{err}");
        let dup = PKG.replace("name: other", "name: ignore");
        let err = PackageManifest::from_yaml(&dup, "package.yaml").unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
    }
}
