//! Maps one plugin exposes to others (`maps[].expose` / `maps[].from`).
//!
//! The owner's host pins an exposed map at
//! `<bpffs>/conductor/shared/<plugin>/<map>`: the owner is the directory
//! name, and only the host running that plugin writes or removes it. A
//! consumer opens the pin by reference (`from: {plugin, map}`), so it never
//! learns or hard-codes a path. Lifetimes:
//!
//! - the pin exists exactly while the owner is loaded: [`Exposed`] removes
//!   it (and the plugin's directory once empty) when dropped, so unloading
//!   in either order leaves no pin behind. A pin left by an owner's host
//!   that was killed is replaced when the owner loads again;
//! - a consumer loaded before its owner is refused with
//!   [`SharedError::NotExposed`] naming the owner and the map: it does not
//!   wait; load it again once the owner runs;
//! - a consumer keeps its own descriptor: when the owner unloads, the map
//!   stays alive (the kernel frees it with its last descriptor) with the
//!   contents it had, but the owner's programs no longer update it. A
//!   reloaded owner creates a new map that running consumers do not see
//!   until they are reloaded.

use std::io;
use std::path::{Path, PathBuf};

use crate::maps::KernelMap;

/// The bpffs mount the host pins under.
pub const BPFFS: &str = "/sys/fs/bpf";

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error(
        "plugin {owner:?} does not expose map {map:?} (no pin at {}): load {owner:?} first, with `expose: true` on its grant of {map:?}",
        path.display()
    )]
    NotExposed {
        owner: String,
        map: String,
        path: PathBuf,
    },
    #[error("cannot open map {map:?} exposed by plugin {owner:?} at {}: {source}", path.display())]
    Open {
        owner: String,
        map: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot expose map {map:?} at {}: {cause} (is bpffs mounted at {BPFFS}? the host mounts it when run as root)", path.display())]
    Pin {
        map: String,
        path: PathBuf,
        cause: String,
    },
}

/// Where plugin `owner` pins its exposed map `map` under `root` (a bpffs).
pub fn pin_path_in(root: &Path, owner: &str, map: &str) -> PathBuf {
    root.join("conductor").join("shared").join(owner).join(map)
}

/// [`pin_path_in`] under [`BPFFS`].
pub fn pin_path(owner: &str, map: &str) -> PathBuf {
    pin_path_in(Path::new(BPFFS), owner, map)
}

/// An exposed map's pin; removed when dropped.
#[derive(Debug)]
pub struct Exposed {
    path: PathBuf,
}

impl Exposed {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Exposed {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove the pin {}: {e}", self.path.display());
        }
        // The plugin's directory goes with its last pin; a directory
        // another map still uses stays (remove_dir refuses it).
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Pin `map` as plugin `owner`'s map `name` under `root`, replacing a pin
/// left there by a host that did not unload it.
pub fn expose_in(
    root: &Path,
    owner: &str,
    name: &str,
    map: &KernelMap,
) -> Result<Exposed, SharedError> {
    let path = pin_path_in(root, owner, name);
    let err = |cause: String| SharedError::Pin {
        map: name.to_owned(),
        path: path.clone(),
        cause,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("cannot create its directory: {e}")))?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::warn!(
            "replaced a stale pin at {} (left by a host of plugin {owner:?} that did not unload it)",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(format!("cannot replace the existing pin: {e}"))),
    }
    map.pin(&path).map_err(|e| err(e.to_string()))?;
    Ok(Exposed { path })
}

/// [`expose_in`] under [`BPFFS`].
pub fn expose(owner: &str, name: &str, map: &KernelMap) -> Result<Exposed, SharedError> {
    expose_in(Path::new(BPFFS), owner, name, map)
}

/// Open plugin `owner`'s exposed map `map` under `root`, as `name`.
pub fn open_in(root: &Path, owner: &str, map: &str, name: &str) -> Result<KernelMap, SharedError> {
    let path = pin_path_in(root, owner, map);
    if !path.exists() {
        return Err(SharedError::NotExposed {
            owner: owner.to_owned(),
            map: map.to_owned(),
            path,
        });
    }
    KernelMap::from_pin(name, &path).map_err(|source| SharedError::Open {
        owner: owner.to_owned(),
        map: map.to_owned(),
        path,
        source,
    })
}

/// [`open_in`] under [`BPFFS`].
pub fn open(owner: &str, map: &str, name: &str) -> Result<KernelMap, SharedError> {
    open_in(Path::new(BPFFS), owner, map, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_live_under_the_owner_plugin() {
        assert_eq!(
            pin_path("flows", "by_pod"),
            Path::new("/sys/fs/bpf/conductor/shared/flows/by_pod")
        );
    }

    #[test]
    fn a_consumer_before_its_owner_is_told_which_plugin_to_load() {
        let root = tempfile::tempdir().unwrap();
        let e = open_in(root.path(), "owner", "counts", "c")
            .expect_err("nothing is exposed yet")
            .to_string();
        assert!(
            e.contains("plugin \"owner\" does not expose map \"counts\"")
                && e.contains("load \"owner\" first"),
            "{e}"
        );
    }
}
