//! `conductor:plugin/maps`: the BPF maps a plugin was granted, by name.
//! Reads need a grant, writes a read-write grant; sizes are checked by the
//! backend against the map's own.

use std::sync::Arc;

use conductor_api::Access;
use conductor_kernel::maps::{KernelMap, MapKind, MapMeta, MapOpError};
use wasmtime::component::Resource;

use super::WResult;
use crate::StoreData;
use crate::bindings::conductor::plugin::maps;

/// Keys or entries returned by one `keys`/`entries` call at most; bounds the
/// host work and guest memory of a single call.
pub const MAX_PAGE: u32 = 4096;

/// A map as a plugin reaches it: the kernel's (a [`KernelMap`]) or a fake.
pub trait MapBackend: Send + Sync {
    fn name(&self) -> &str;
    fn meta(&self) -> &MapMeta;
    fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MapOpError>;
    /// `flags`: `BPF_ANY` (0), `BPF_NOEXIST` (1) or `BPF_EXIST` (2).
    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapOpError>;
    fn delete(&self, key: &[u8]) -> Result<bool, MapOpError>;
    /// Up to `max` keys after `after` (from the start if `None`).
    fn keys(&self, after: Option<&[u8]>, max: usize) -> Result<Vec<Vec<u8>>, MapOpError>;
}

impl MapBackend for KernelMap {
    fn name(&self) -> &str {
        KernelMap::name(self)
    }
    fn meta(&self) -> &MapMeta {
        KernelMap::meta(self)
    }
    fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MapOpError> {
        KernelMap::lookup(self, key)
    }
    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapOpError> {
        KernelMap::update(self, key, value, flags)
    }
    fn delete(&self, key: &[u8]) -> Result<bool, MapOpError> {
        KernelMap::delete(self, key)
    }
    fn keys(&self, after: Option<&[u8]>, max: usize) -> Result<Vec<Vec<u8>>, MapOpError> {
        KernelMap::keys(self, after, max)
    }
}

/// A map granted to a plugin, and how.
#[derive(Clone)]
pub struct GrantedMap {
    pub map: Arc<dyn MapBackend>,
    pub access: Access,
}

/// The host side of a `bpf-map` resource.
pub struct MapResource {
    map: Arc<dyn MapBackend>,
    access: Access,
}

fn map_error(e: MapOpError) -> maps::MapError {
    match e {
        MapOpError::WrongSize {
            what,
            expected,
            actual,
        } => maps::MapError::WrongSize(maps::WrongSize {
            what: what.to_owned(),
            expected,
            actual,
        }),
        MapOpError::Unsupported(m) => maps::MapError::Unsupported(m),
        MapOpError::Kernel(e) => maps::MapError::Kernel(maps::KernelError {
            errno: e.raw_os_error().unwrap_or(0),
            message: e.to_string(),
        }),
    }
}

fn wit_kind(k: MapKind) -> maps::MapKind {
    match k {
        MapKind::Hash => maps::MapKind::Hash,
        MapKind::Array => maps::MapKind::Array,
        MapKind::PercpuHash => maps::MapKind::PercpuHash,
        MapKind::PercpuArray => maps::MapKind::PercpuArray,
        MapKind::LruHash => maps::MapKind::LruHash,
        MapKind::LruPercpuHash => maps::MapKind::LruPercpuHash,
        MapKind::LpmTrie => maps::MapKind::LpmTrie,
        MapKind::Ringbuf => maps::MapKind::Ringbuf,
        MapKind::PerfEventArray => maps::MapKind::PerfEventArray,
        MapKind::StackTrace => maps::MapKind::StackTrace,
        MapKind::Other(n) => maps::MapKind::Other(n),
    }
}

impl maps::Host for StoreData {}

impl StoreData {
    fn map(&self, r: &Resource<MapResource>) -> WResult<&MapResource> {
        Ok(self.table.get(r)?)
    }

    fn writable(
        &self,
        r: &Resource<MapResource>,
    ) -> WResult<Result<&dyn MapBackend, maps::MapError>> {
        let m = self.map(r)?;
        Ok(match m.access {
            Access::ReadWrite => Ok(&*m.map),
            Access::Read => Err(maps::MapError::ReadOnly),
        })
    }
}

impl maps::HostBpfMap for StoreData {
    fn open(&mut self, name: String) -> WResult<Result<Resource<MapResource>, maps::MapError>> {
        let Some(granted) = self.host.maps.get(&name) else {
            tracing::debug!(target: "plugin", plugin = %self.host.name, map = %name, "map not granted");
            return Ok(Err(maps::MapError::NotGranted(format!(
                "plugin {:?} is not granted map {name:?}; grant it under `maps` in the plugin's spec",
                self.host.name
            ))));
        };
        let r = MapResource {
            map: granted.map.clone(),
            access: granted.access,
        };
        Ok(Ok(self.table.push(r)?))
    }

    fn info(&mut self, r: Resource<MapResource>) -> WResult<maps::MapInfo> {
        let m = self.map(&r)?;
        let meta = m.map.meta();
        Ok(maps::MapInfo {
            name: m.map.name().to_owned(),
            kind: wit_kind(meta.kind),
            key_size: meta.key_size,
            value_size: meta.value_size,
            value_stride: meta.value_stride,
            max_entries: meta.max_entries,
            values_per_key: meta.values_per_key,
            access: match m.access {
                Access::Read => maps::Access::Read,
                Access::ReadWrite => maps::Access::ReadWrite,
            },
        })
    }

    fn lookup(
        &mut self,
        r: Resource<MapResource>,
        key: Vec<u8>,
    ) -> WResult<Result<Option<Vec<u8>>, maps::MapError>> {
        Ok(self.map(&r)?.map.lookup(&key).map_err(map_error))
    }

    fn update(
        &mut self,
        r: Resource<MapResource>,
        key: Vec<u8>,
        value: Vec<u8>,
        mode: maps::UpdateMode,
    ) -> WResult<Result<(), maps::MapError>> {
        let flags = match mode {
            maps::UpdateMode::Upsert => 0,  // BPF_ANY
            maps::UpdateMode::Create => 1,  // BPF_NOEXIST
            maps::UpdateMode::Replace => 2, // BPF_EXIST
        };
        Ok(self
            .writable(&r)?
            .and_then(|m| m.update(&key, &value, flags).map_err(map_error)))
    }

    fn delete(
        &mut self,
        r: Resource<MapResource>,
        key: Vec<u8>,
    ) -> WResult<Result<bool, maps::MapError>> {
        Ok(self
            .writable(&r)?
            .and_then(|m| m.delete(&key).map_err(map_error)))
    }

    fn keys(
        &mut self,
        r: Resource<MapResource>,
        after: Option<Vec<u8>>,
        max: u32,
    ) -> WResult<Result<Vec<Vec<u8>>, maps::MapError>> {
        let m = self.map(&r)?;
        Ok(m.map
            .keys(after.as_deref(), max.min(MAX_PAGE) as usize)
            .map_err(map_error))
    }

    fn entries(
        &mut self,
        r: Resource<MapResource>,
        after: Option<Vec<u8>>,
        max: u32,
    ) -> WResult<Result<Vec<maps::Entry>, maps::MapError>> {
        let m = &self.map(&r)?.map;
        let page = || -> Result<Vec<maps::Entry>, MapOpError> {
            let keys = m.keys(after.as_deref(), max.min(MAX_PAGE) as usize)?;
            let mut entries = Vec::with_capacity(keys.len());
            for key in keys {
                // A key deleted between listing and lookup is simply skipped.
                if let Some(value) = m.lookup(&key)? {
                    entries.push(maps::Entry { key, value });
                }
            }
            Ok(entries)
        };
        Ok(page().map_err(map_error))
    }

    fn drop(&mut self, r: Resource<MapResource>) -> WResult<()> {
        self.table.delete(r)?;
        Ok(())
    }
}
