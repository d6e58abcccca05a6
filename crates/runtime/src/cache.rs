//! Compiled components cached on disk, keyed by the component's digest and
//! the engine's compatibility hash, so a second start (or a restart of the
//! host) skips Cranelift entirely.
//!
//! Components already in use are also kept in memory, by digest: a hundred
//! plugins of one component share one compiled image instead of mapping the
//! `.cwasm` file a hundred times (each mapping is resident on its own, about
//! 250 KiB per plugin for a small component), and a load skips the file.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Distinct compiled components kept in memory; the oldest is dropped past
/// this (its plugins keep their own handle to it). Its code is a mapping of
/// the `.cwasm` file, whose clean pages the kernel reclaims when unused.
const IN_MEMORY: usize = 32;

pub struct CompileCache {
    dir: Option<PathBuf>,
    /// Recently loaded components by digest, oldest first.
    live: Mutex<VecDeque<(String, Component)>>,
}

impl CompileCache {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            live: Mutex::default(),
        }
    }

    /// The compiled component for `bytes`, its sha256 digest, and whether it
    /// came from the cache.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, String, bool)> {
        let digest = digest(bytes);
        if let Some(c) = self.lookup(engine, &digest) {
            return Ok((c, digest, true));
        }
        let component = self.compile(engine, bytes, &digest)?;
        Ok((component, digest, false))
    }

    /// The compiled component of `digest` if it is in memory or on disk;
    /// never compiles.
    pub fn lookup(&self, engine: &Engine, digest: &str) -> Option<Component> {
        if let Some(c) = self.in_memory(digest) {
            return Some(c);
        }
        let path = self.path(engine, digest)?;
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `Component::serialize` of an
        // engine with the same compatibility hash, into a directory only
        // the host writes (mode 0700), and renamed into place only once
        // complete. wasmtime still checks its header and version.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => Some(self.keep(digest, c)),
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    "discarding unusable compiled component: {e:#}"
                );
                None
            }
        }
    }

    /// Compile `bytes` (whose digest is `digest`) and keep the result in
    /// memory and on disk.
    pub fn compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> wasmtime::Result<Component> {
        // Compiled without holding the lock: a slow compile (a large
        // component takes seconds) must not stall loads of other, already
        // compiled components. Two concurrent first loads of one component
        // may both compile it (the daemon's load slots bound how many); the
        // first one kept wins, so its plugins still share one image.
        let component = Component::new(engine, bytes)?;
        if let Some(path) = self.path(engine, digest)
            && let Some(dir) = &self.dir
            && let Err(e) = store(dir, &path, &component)
        {
            // The cache is an optimisation: a read-only or full disk must not
            // stop a plugin from running.
            tracing::warn!(dir = %dir.display(), "cannot cache compiled component: {e:#}");
        }
        Ok(self.keep(digest, component))
    }

    /// Keep `component` in memory, or return the one already kept for
    /// `digest`, so every plugin of a component shares one image.
    fn keep(&self, digest: &str, component: Component) -> Component {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = live.iter().find(|(d, _)| d == digest) {
            return c.clone();
        }
        if live.len() >= IN_MEMORY {
            live.pop_front();
        }
        live.push_back((digest.to_owned(), component.clone()));
        component
    }

    fn in_memory(&self, digest: &str) -> Option<Component> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.iter()
            .find(|(d, _)| d == digest)
            .map(|(_, c)| c.clone())
    }

    /// Where the compiled code of `digest` for `engine` is kept, if the
    /// cache has a directory.
    fn path(&self, engine: &Engine, digest: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Some(dir.join(format!("{digest}-{:016x}.cwasm", h.finish())))
    }
}

/// The sha256 of a component's bytes, in hex: its identity in the cache.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
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
