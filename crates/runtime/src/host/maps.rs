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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Mutex;

    use super::*;
    use crate::host::{test_host, test_store};
    use maps::HostBpfMap;

    /// A hash map of 4-byte keys and 8-byte values, checked like the kernel's.
    struct FakeMap {
        meta: MapMeta,
        entries: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    }

    impl FakeMap {
        fn new(entries: u32) -> Self {
            let map = Self {
                meta: MapMeta {
                    kind: MapKind::Hash,
                    key_size: 4,
                    value_size: 8,
                    value_stride: 8,
                    max_entries: 10_000,
                    values_per_key: 1,
                },
                entries: Mutex::default(),
            };
            for k in 0..entries {
                map.update(&k.to_be_bytes(), &u64::from(k).to_le_bytes(), 0)
                    .unwrap();
            }
            map
        }

        fn check(&self, what: &'static str, bytes: &[u8], expected: u32) -> Result<(), MapOpError> {
            if bytes.len() as u32 != expected {
                return Err(MapOpError::WrongSize {
                    what,
                    expected,
                    actual: bytes.len() as u32,
                });
            }
            Ok(())
        }
    }

    impl MapBackend for FakeMap {
        fn name(&self) -> &str {
            "flows"
        }
        fn meta(&self) -> &MapMeta {
            &self.meta
        }
        fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MapOpError> {
            self.check("key", key, 4)?;
            Ok(self.entries.lock().unwrap().get(key).cloned())
        }
        fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapOpError> {
            self.check("key", key, 4)?;
            self.check("value", value, 8)?;
            let mut entries = self.entries.lock().unwrap();
            match (flags, entries.contains_key(key)) {
                (1, true) => Err(MapOpError::Kernel(std::io::Error::from_raw_os_error(
                    17, /* EEXIST */
                ))),
                (2, false) => Err(MapOpError::Kernel(std::io::Error::from_raw_os_error(
                    2, /* ENOENT */
                ))),
                _ => {
                    entries.insert(key.to_vec(), value.to_vec());
                    Ok(())
                }
            }
        }
        fn delete(&self, key: &[u8]) -> Result<bool, MapOpError> {
            self.check("key", key, 4)?;
            Ok(self.entries.lock().unwrap().remove(key).is_some())
        }
        fn keys(&self, after: Option<&[u8]>, max: usize) -> Result<Vec<Vec<u8>>, MapOpError> {
            let entries = self.entries.lock().unwrap();
            Ok(entries
                .keys()
                .filter(|k| after.is_none_or(|a| k.as_slice() > a))
                .take(max)
                .cloned()
                .collect())
        }
    }

    /// One WIT call on a freshly opened map.
    type MapCall = dyn Fn(&mut StoreData, Resource<MapResource>) -> Result<(), maps::MapError>;

    fn store_with(map: FakeMap, access: Access) -> StoreData {
        let granted = HashMap::from([(
            "flows".to_owned(),
            GrantedMap {
                map: Arc::new(map),
                access,
            },
        )]);
        let base = test_host("p");
        let host = crate::PluginHost::new("p", BTreeMap::new(), granted, base.metrics.clone());
        test_store(host)
    }

    #[test]
    fn only_granted_maps_open_and_the_refusal_says_how_to_grant() {
        let mut store = store_with(FakeMap::new(0), Access::Read);
        let err = store.open("secrets".into()).unwrap().unwrap_err();
        let maps::MapError::NotGranted(message) = err else {
            panic!("expected not-granted, got {err:?}");
        };
        assert!(
            message.contains("\"secrets\"") && message.contains("`maps`"),
            "{message}"
        );
        let r = store.open("flows".into()).unwrap().unwrap();
        let info = store.info(r).unwrap();
        assert_eq!((info.key_size, info.value_size), (4, 8));
        assert!(matches!(info.access, maps::Access::Read));
        assert!(matches!(info.kind, maps::MapKind::Hash));
    }

    #[test]
    fn a_read_grant_reads_but_never_writes() {
        let mut store = store_with(FakeMap::new(3), Access::Read);
        let open = |s: &mut StoreData| s.open("flows".into()).unwrap().unwrap();
        let r = open(&mut store);
        assert_eq!(
            store
                .lookup(r, 2u32.to_be_bytes().to_vec())
                .unwrap()
                .unwrap(),
            Some(2u64.to_le_bytes().to_vec())
        );
        let r = open(&mut store);
        let write = store.update(r, vec![0; 4], vec![0; 8], maps::UpdateMode::Upsert);
        assert!(matches!(write.unwrap(), Err(maps::MapError::ReadOnly)));
        let r = open(&mut store);
        assert!(matches!(
            store.delete(r, vec![0; 4]).unwrap(),
            Err(maps::MapError::ReadOnly)
        ));
    }

    #[test]
    fn a_read_write_grant_writes_with_the_kernels_flags_and_sizes() {
        let mut store = store_with(FakeMap::new(1), Access::ReadWrite);
        let mut call = |f: &MapCall| {
            let r = store.open("flows".into()).unwrap().unwrap();
            f(&mut store, r)
        };
        // Create fails on an existing key (BPF_NOEXIST), replace on a missing one (BPF_EXIST).
        let create = call(&|s, r| {
            s.update(
                r,
                0u32.to_be_bytes().to_vec(),
                vec![1; 8],
                maps::UpdateMode::Create,
            )
            .unwrap()
        });
        assert!(
            matches!(create, Err(maps::MapError::Kernel(ref k)) if k.errno == 17),
            "{create:?}"
        );
        let replace = call(&|s, r| {
            s.update(
                r,
                9u32.to_be_bytes().to_vec(),
                vec![1; 8],
                maps::UpdateMode::Replace,
            )
            .unwrap()
        });
        assert!(
            matches!(replace, Err(maps::MapError::Kernel(ref k)) if k.errno == 2),
            "{replace:?}"
        );
        call(&|s, r| {
            s.update(
                r,
                9u32.to_be_bytes().to_vec(),
                vec![1; 8],
                maps::UpdateMode::Upsert,
            )
            .unwrap()
        })
        .unwrap();
        let wrong = call(&|s, r| {
            s.update(r, vec![0; 3], vec![1; 8], maps::UpdateMode::Upsert)
                .unwrap()
        });
        assert!(
            matches!(wrong, Err(maps::MapError::WrongSize(ref w)) if w.what == "key" && w.expected == 4 && w.actual == 3),
            "{wrong:?}"
        );
        call(&|s, r| {
            assert!(s.delete(r, 9u32.to_be_bytes().to_vec()).unwrap()?);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn keys_and_entries_page_at_most_max_page_per_call() {
        let mut store = store_with(FakeMap::new(MAX_PAGE + 10), Access::Read);
        let r = store.open("flows".into()).unwrap().unwrap();
        let page = store.keys(r, None, u32::MAX).unwrap().unwrap();
        assert_eq!(page.len(), MAX_PAGE as usize);
        let last = page.last().cloned();
        let r = store.open("flows".into()).unwrap().unwrap();
        let rest = store.entries(r, last, 100).unwrap().unwrap();
        assert_eq!(rest.len(), 10);
        assert_eq!(rest[0].key, MAX_PAGE.to_be_bytes());
        assert_eq!(rest[0].value, u64::from(MAX_PAGE).to_le_bytes());
    }

    /// Guest-chosen arguments (issue 19, fuzzing): keys and values of any
    /// size, any update mode, cursors that are no key at all, any page
    /// size, on read and read-write grants. Every call returns a typed
    /// result (never a trap or a panic), wrong sizes name what was wrong,
    /// pages never exceed MAX_PAGE nor `max`, a read grant never changes
    /// the map.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Call {
            Lookup(Vec<u8>),
            Update(Vec<u8>, Vec<u8>, u8),
            Delete(Vec<u8>),
            Keys(Option<Vec<u8>>, u32),
            Entries(Option<Vec<u8>>, u32),
        }

        fn bytes() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 4),
                proptest::collection::vec(any::<u8>(), 8),
                proptest::collection::vec(any::<u8>(), 0..64),
            ]
        }

        fn call() -> impl Strategy<Value = Call> {
            prop_oneof![
                bytes().prop_map(Call::Lookup),
                (bytes(), bytes(), any::<u8>()).prop_map(|(k, v, m)| Call::Update(k, v, m)),
                bytes().prop_map(Call::Delete),
                (proptest::option::of(bytes()), any::<u32>()).prop_map(|(a, m)| Call::Keys(a, m)),
                (proptest::option::of(bytes()), any::<u32>())
                    .prop_map(|(a, m)| Call::Entries(a, m)),
            ]
        }

        fn sized(e: &maps::MapError) -> bool {
            matches!(e, maps::MapError::WrongSize(w) if (w.what == "key" && w.expected == 4) || (w.what == "value" && w.expected == 8))
        }

        proptest! {
            #[test]
            fn guest_chosen_arguments_give_typed_results(
                calls in proptest::collection::vec(call(), 1..40),
                writable in any::<bool>(),
                initial in 0u32..50,
            ) {
                let access = if writable { Access::ReadWrite } else { Access::Read };
                let mut store = store_with(FakeMap::new(initial), access);
                let before = {
                    let r = store.open("flows".into()).unwrap().unwrap();
                    store.entries(r, None, u32::MAX).unwrap().unwrap()
                };
                for c in calls {
                    let r = store.open("flows".into()).unwrap().unwrap();
                    match c {
                        Call::Lookup(k) => {
                            let len = k.len();
                            match store.lookup(r, k).unwrap() {
                                Ok(v) => {
                                    prop_assert_eq!(len, 4);
                                    prop_assert!(v.is_none_or(|v| v.len() == 8));
                                }
                                Err(e) => prop_assert!(sized(&e), "{e:?}"),
                            }
                        }
                        Call::Update(k, v, m) => {
                            let mode = match m % 3 {
                                0 => maps::UpdateMode::Upsert,
                                1 => maps::UpdateMode::Create,
                                _ => maps::UpdateMode::Replace,
                            };
                            match store.update(r, k, v, mode).unwrap() {
                                Ok(()) => prop_assert!(writable),
                                Err(maps::MapError::ReadOnly) => prop_assert!(!writable),
                                Err(maps::MapError::Kernel(k)) => prop_assert!(k.errno == 17 || k.errno == 2),
                                Err(e) => prop_assert!(sized(&e), "{e:?}"),
                            }
                        }
                        Call::Delete(k) => match store.delete(r, k).unwrap() {
                            Ok(_) => prop_assert!(writable),
                            Err(maps::MapError::ReadOnly) => prop_assert!(!writable),
                            Err(e) => prop_assert!(sized(&e), "{e:?}"),
                        },
                        Call::Keys(after, max) => {
                            let page = store.keys(r, after.clone(), max).unwrap().unwrap();
                            prop_assert!(page.len() <= max.min(MAX_PAGE) as usize);
                            prop_assert!(page.iter().all(|k| k.len() == 4 && after.as_ref().is_none_or(|a| k > a)));
                        }
                        Call::Entries(after, max) => {
                            let page = store.entries(r, after, max).unwrap().unwrap();
                            prop_assert!(page.len() <= max.min(MAX_PAGE) as usize);
                            prop_assert!(page.iter().all(|e| e.key.len() == 4 && e.value.len() == 8));
                        }
                    }
                }
                if !writable {
                    let r = store.open("flows".into()).unwrap().unwrap();
                    let after = store.entries(r, None, u32::MAX).unwrap().unwrap();
                    prop_assert_eq!(
                        after.iter().map(|e| (&e.key, &e.value)).collect::<Vec<_>>(),
                        before.iter().map(|e| (&e.key, &e.value)).collect::<Vec<_>>()
                    );
                }
            }
        }
    }
}
