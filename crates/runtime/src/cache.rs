//! Compiled components cached on disk, keyed by the component's digest and
//! the engine's compatibility hash, so a second start (or a restart of the
//! host) skips Cranelift entirely.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

pub struct CompileCache {
    dir: Option<PathBuf>,
}

impl CompileCache {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// The compiled component for `bytes`, its sha256 digest, and whether it
    /// came from the cache.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, String, bool)> {
        let digest = hex::encode(Sha256::digest(bytes));
        let Some(dir) = &self.dir else {
            return Ok((Component::new(engine, bytes)?, digest, false));
        };
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let path = dir.join(format!("{digest}-{:016x}.cwasm", h.finish()));

        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash, into a directory only
            // the host writes (mode 0700), and renamed into place only once
            // complete. wasmtime still checks its header and version.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, digest, true)),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    "discarding unusable compiled component: {e:#}"
                ),
            }
        }

        let component = Component::new(engine, bytes)?;
        if let Err(e) = store(dir, &path, &component) {
            // The cache is an optimisation: a read-only or full disk must not
            // stop a plugin from running.
            tracing::warn!(dir = %dir.display(), "cannot cache compiled component: {e:#}");
        }
        Ok((component, digest, false))
    }
}

fn store(dir: &std::path::Path, path: &std::path::Path, c: &Component) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let bytes = c.serialize().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    // Write then rename: a crash leaves a stray temp file, never a
    // truncated `.cwasm` that a later start would trust.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)?;
    Ok(())
}
