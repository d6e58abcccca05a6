//! The daemon's desired state on disk: which plugins should run, with their
//! specs, annotations and generations, so that a restarted daemon (even
//! after `kill -9` or a power cut) brings the same plugins back.
//!
//! One JSON file, `<state-dir>/plugins.json`, replaced atomically: the new
//! content goes to a temporary file in the same directory, is fsynced, then
//! renamed over the old one, and the directory is fsynced; a reader sees
//! the old file or the new one, never a mix. The state directory is also
//! locked (`<state-dir>/lock`, `flock`) by the daemon that owns it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use conductor_api::PluginSpec;
use serde::{Deserialize, Serialize};

const FILE: &str = "plugins.json";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the state file {} is damaged ({cause}); move it away to start without the plugins it lists",
        path.display()
    )]
    Damaged { path: PathBuf, cause: String },
    #[error(
        "the state file {} has version {found}, this conductor reads version {VERSION}",
        path.display()
    )]
    Version { path: PathBuf, found: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistedPlugin {
    pub spec: PluginSpec,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub generation: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    plugins: Vec<PersistedPlugin>,
}

/// The state directory.
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Create the directory if needed (mode 0700: specs and annotations may
    /// be private).
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StateError::Io {
                what: "create the state directory",
                path: dir.to_owned(),
                source,
            })?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The persisted plugins; none if the file does not exist yet.
    pub fn load(&self) -> Result<Vec<PersistedPlugin>, StateError> {
        let path = self.file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StateError::Io {
                    what: "read",
                    path,
                    source,
                });
            }
        };
        let state: StateFile = serde_json::from_str(&text).map_err(|e| StateError::Damaged {
            path: path.clone(),
            cause: e.to_string(),
        })?;
        if state.version != VERSION {
            return Err(StateError::Version {
                path,
                found: state.version,
            });
        }
        Ok(state.plugins)
    }

    /// Replace the persisted plugins, atomically and durably.
    pub fn save(&self, plugins: Vec<PersistedPlugin>) -> Result<(), StateError> {
        let path = self.file();
        let io = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Io { what, path, source }
        };
        let text = serde_json::to_vec_pretty(&StateFile {
            version: VERSION,
            plugins,
        })
        .map_err(|e| StateError::Damaged {
            path: path.clone(),
            cause: e.to_string(),
        })?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".plugins.json.")
            .tempfile_in(&self.dir)
            .map_err(io("create a file in", &self.dir))?;
        tmp.write_all(&text).map_err(io("write", tmp.path()))?;
        tmp.as_file().sync_all().map_err(io("sync", tmp.path()))?;
        tmp.persist(&path)
            .map_err(|e| io("replace", &path)(e.error))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", &self.dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(name: &str, generation: u64) -> PersistedPlugin {
        PersistedPlugin {
            spec: PluginSpec::from_yaml(&format!("name: {name}\ncomponent: /opt/{name}.wasm\n"))
                .unwrap(),
            annotations: BTreeMap::from([("owner".into(), "operator".into())]),
            generation,
        }
    }

    #[test]
    fn round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        assert!(state.load().unwrap().is_empty());
        state.save(vec![plugin("a", 1), plugin("b", 3)]).unwrap();
        assert_eq!(state.load().unwrap(), vec![plugin("a", 1), plugin("b", 3)]);
        state.save(vec![plugin("b", 4)]).unwrap();
        assert_eq!(state.load().unwrap(), vec![plugin("b", 4)]);
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(state.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["plugins.json"]);
    }

    #[test]
    fn a_damaged_file_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        std::fs::write(dir.path().join(FILE), "{\"version\": 1, \"plugins\": [").unwrap();
        let err = state.load().unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
        std::fs::write(dir.path().join(FILE), "{\"version\": 9, \"plugins\": []}").unwrap();
        let err = state.load().unwrap_err().to_string();
        assert!(err.contains("version 9"), "{err}");
    }
}
