//! BPF maps the plugin's spec grants.
//!
//! [`Map`] gives raw byte access, exactly as the kernel stores keys and
//! values (native endianness, C layout). [`TypedMap`] wraps it for
//! plain-old-data key and value types, checking their sizes against the map
//! when it is opened.
//!
//! Per-CPU maps hold one value per possible CPU for every key; use
//! [`TypedMap::get_per_cpu`], [`TypedMap::update_per_cpu`] and
//! [`TypedMap::iter_per_cpu`] with them.
//!
//! Iteration pages through the map ([`PAGE_SIZE`] keys per host call), using
//! the last key of a page as the cursor for the next. As with any BPF map
//! iteration, entries the kernel side adds or deletes meanwhile may be
//! missed, and a deleted cursor key makes the kernel restart from the first
//! key, so an entry can be seen twice.

use std::marker::PhantomData;

use bytemuck::Pod;

use crate::bindings::conductor::plugin::maps as raw;
use crate::error::{Error, Result, ResultExt};

pub use raw::{Access, Entry, KernelError, MapError, MapInfo, MapKind, UpdateMode, WrongSize};

/// Keys requested per host call when iterating.
pub const PAGE_SIZE: u32 = 256;

/// Linux errno values that [`MapError::Kernel`] commonly carries (see
/// [`Error::errno`]).
pub mod errno {
    /// No such key: [`UpdateMode::Replace`](super::UpdateMode::Replace) on a
    /// missing key.
    pub const ENOENT: i32 = 2;
    /// The map is full.
    pub const E2BIG: i32 = 7;
    /// [`UpdateMode::Create`](super::UpdateMode::Create) on an existing key.
    pub const EEXIST: i32 = 17;
}

/// A BPF map, accessed as raw bytes.
#[derive(Debug)]
pub struct Map {
    raw: raw::BpfMap,
    name: Box<str>,
    info: MapInfo,
}

impl Map {
    /// Opens the map the spec grants under `name`.
    pub fn open(name: &str) -> Result<Map> {
        let raw = raw::BpfMap::open(name).with_context(|| format!("map {name:?}: open"))?;
        // The description never changes; fetch it once for size checks.
        let info = raw.info();
        Ok(Map {
            raw,
            name: name.into(),
            info,
        })
    }

    /// The name the map was opened under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The map's type, sizes and the plugin's access.
    pub fn info(&self) -> &MapInfo {
        &self.info
    }

    /// The value for `key`, or `None` if the key is absent.
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.raw.lookup(key).with_context(self.op("lookup"))
    }

    /// Stores `value` under `key`, as `mode` allows. Needs read-write access.
    pub fn update(&self, key: &[u8], value: &[u8], mode: UpdateMode) -> Result<()> {
        self.raw
            .update(key, value, mode)
            .with_context(self.op("update"))
    }

    /// Removes `key`; `true` if it was present. Needs read-write access.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        self.raw.delete(key).with_context(self.op("delete"))
    }

    /// Up to `max` keys following `after` (from the start when `None`);
    /// fewer than `max` means the end was reached. [`keys`](Self::keys)
    /// pages for you.
    pub fn keys_page(&self, after: Option<&[u8]>, max: u32) -> Result<Vec<Vec<u8>>> {
        self.raw.keys(after, max).with_context(self.op("keys"))
    }

    /// Like [`keys_page`](Self::keys_page), with each key's value.
    pub fn entries_page(&self, after: Option<&[u8]>, max: u32) -> Result<Vec<Entry>> {
        self.raw
            .entries(after, max)
            .with_context(self.op("entries"))
    }

    /// Every key, fetched a page at a time. Stops after the first error.
    pub fn keys(&self) -> impl Iterator<Item = Result<Vec<u8>>> + '_ {
        Pager::new(|after, max| self.keys_page(after, max))
    }

    /// Every entry, fetched a page at a time. Stops after the first error.
    pub fn entries(&self) -> impl Iterator<Item = Result<Entry>> + '_ {
        Pager::new(|after, max| self.entries_page(after, max))
    }

    /// Context for errors of operation `op`, built only on error.
    fn op(&self, op: &'static str) -> impl FnOnce() -> String + '_ {
        move || format!("map {:?}: {op}", self.name)
    }
}

/// A BPF map with keys of type `K` and values of type `V`, both `#[repr(C)]`
/// plain-old-data mirrors of the BPF program's C types (or integers).
///
/// ```rust,ignore
/// let flows: TypedMap<FlowKey, u64> = TypedMap::open("flows")?;
/// for entry in flows.iter() {
///     let (key, packets) = entry?;
///     // ...
/// }
/// ```
#[derive(Debug)]
pub struct TypedMap<K, V> {
    map: Map,
    layout: ValueLayout,
    marker: PhantomData<fn() -> (K, V)>,
}

impl<K: Pod, V: Pod> TypedMap<K, V> {
    /// Opens the map the spec grants under `name`, checking that its key and
    /// value sizes are those of `K` and `V`.
    pub fn open(name: &str) -> Result<Self> {
        Self::from_map(Map::open(name)?)
    }

    /// Wraps an open map, checking that its key and value sizes are those of
    /// `K` and `V`.
    pub fn from_map(map: Map) -> Result<Self> {
        let context = || {
            format!(
                "map {:?}: open as TypedMap<{}, {}>",
                map.name,
                std::any::type_name::<K>(),
                std::any::type_name::<V>()
            )
        };
        let info = &map.info;
        check_size("key", info.key_size, size_of::<K>()).with_context(context)?;
        check_size("value", info.value_size, size_of::<V>()).with_context(context)?;
        let layout = ValueLayout::new(info).with_context(context)?;
        Ok(TypedMap {
            map,
            layout,
            marker: PhantomData,
        })
    }

    /// The underlying raw map.
    pub fn map(&self) -> &Map {
        &self.map
    }

    /// The map's type, sizes and the plugin's access.
    pub fn info(&self) -> &MapInfo {
        &self.map.info
    }

    /// Values per key: the number of possible CPUs for per-CPU maps, 1
    /// otherwise. Per-CPU updates take exactly this many values.
    pub fn values_per_key(&self) -> usize {
        self.layout.count
    }

    /// The value for `key`, or `None` if absent. Per-CPU maps need
    /// [`get_per_cpu`](Self::get_per_cpu).
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.require_single("get")?;
        let Some(bytes) = self.map.lookup(bytemuck::bytes_of(key))? else {
            return Ok(None);
        };
        self.layout
            .single(&bytes)
            .with_context(self.map.op("lookup"))
            .map(Some)
    }

    /// Stores `value` under `key`, creating or replacing it.
    pub fn insert(&self, key: &K, value: &V) -> Result<()> {
        self.update(key, value, UpdateMode::Upsert)
    }

    /// Stores `value` under `key` as `mode` allows: with
    /// [`UpdateMode::Create`] an existing key fails with
    /// [`errno::EEXIST`], with [`UpdateMode::Replace`] a missing one with
    /// [`errno::ENOENT`]. Per-CPU maps need
    /// [`update_per_cpu`](Self::update_per_cpu).
    pub fn update(&self, key: &K, value: &V, mode: UpdateMode) -> Result<()> {
        self.require_single("update")?;
        self.update_per_cpu(key, std::slice::from_ref(value), mode)
    }

    /// Removes `key`; `true` if it was present.
    pub fn remove(&self, key: &K) -> Result<bool> {
        self.map.delete(bytemuck::bytes_of(key))
    }

    /// Every key, fetched a page at a time.
    pub fn keys(&self) -> impl Iterator<Item = Result<K>> + '_ {
        self.map.keys().map(|key| self.decode_key(&key?))
    }

    /// Every key with its value, fetched a page at a time. Per-CPU maps need
    /// [`iter_per_cpu`](Self::iter_per_cpu).
    pub fn iter(&self) -> impl Iterator<Item = Result<(K, V)>> + '_ {
        self.map.entries().map(|entry| {
            self.require_single("iter")?;
            let entry = entry?;
            let key = self.decode_key(&entry.key)?;
            let value = self
                .layout
                .single(&entry.value)
                .with_context(self.map.op("entries"))?;
            Ok((key, value))
        })
    }

    /// Every value stored under `key`: one per possible CPU for per-CPU maps
    /// (in CPU order), a single one otherwise.
    pub fn get_per_cpu(&self, key: &K) -> Result<Option<Vec<V>>> {
        let Some(bytes) = self.map.lookup(bytemuck::bytes_of(key))? else {
            return Ok(None);
        };
        self.layout
            .split(&bytes)
            .with_context(self.map.op("lookup"))
            .map(Some)
    }

    /// Stores `values` under `key`, one per possible CPU
    /// ([`values_per_key`](Self::values_per_key) of them), creating or
    /// replacing it.
    ///
    /// ```rust,ignore
    /// let pcpu: TypedMap<u32, u64> = TypedMap::open("pcpu")?;
    /// pcpu.insert_per_cpu(&0, &vec![0; pcpu.values_per_key()])?;
    /// ```
    pub fn insert_per_cpu(&self, key: &K, values: &[V]) -> Result<()> {
        self.update_per_cpu(key, values, UpdateMode::Upsert)
    }

    /// Stores `values` under `key`, one per possible CPU
    /// ([`values_per_key`](Self::values_per_key) of them), as `mode` allows.
    pub fn update_per_cpu(&self, key: &K, values: &[V], mode: UpdateMode) -> Result<()> {
        let bytes = self
            .layout
            .join(values)
            .with_context(self.map.op("update"))?;
        self.map.update(bytemuck::bytes_of(key), &bytes, mode)
    }

    /// Every key with all its values, fetched a page at a time.
    pub fn iter_per_cpu(&self) -> impl Iterator<Item = Result<(K, Vec<V>)>> + '_ {
        self.map.entries().map(|entry| {
            let entry = entry?;
            let key = self.decode_key(&entry.key)?;
            let values = self
                .layout
                .split(&entry.value)
                .with_context(self.map.op("entries"))?;
            Ok((key, values))
        })
    }

    fn decode_key(&self, bytes: &[u8]) -> Result<K> {
        bytemuck::try_pod_read_unaligned(bytes).map_err(|_| {
            Error::msg(format!(
                "map {:?}: the host returned a {}-byte key, expected {}",
                self.map.name,
                bytes.len(),
                size_of::<K>()
            ))
        })
    }

    fn require_single(&self, op: &'static str) -> Result<()> {
        if self.layout.count == 1 {
            return Ok(());
        }
        Err(Error::from(MapError::Unsupported(format!(
            "the map holds {} values per key (one per CPU): use {op}_per_cpu",
            self.layout.count
        )))
        .context(format!("map {:?}: {op}", self.map.name)))
    }
}

fn check_size(what: &str, expected: u32, actual: usize) -> Result<()> {
    if expected as usize == actual {
        return Ok(());
    }
    Err(MapError::WrongSize(WrongSize {
        what: what.to_owned(),
        expected,
        actual: u32::try_from(actual).unwrap_or(u32::MAX),
    })
    .into())
}

/// Where a key's values sit in a map value: `count` values, `stride` bytes
/// apart (the kernel's per-CPU layout; `count` is 1 for other maps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ValueLayout {
    stride: usize,
    count: usize,
}

impl ValueLayout {
    fn new(info: &MapInfo) -> Result<Self> {
        if info.value_stride < info.value_size || info.values_per_key == 0 {
            return Err(Error::msg(format!(
                "the host reports an impossible value layout: stride {} for {}-byte values, {} per key",
                info.value_stride, info.value_size, info.values_per_key
            )));
        }
        Ok(ValueLayout {
            stride: info.value_stride as usize,
            count: info.values_per_key as usize,
        })
    }

    /// Splits a map value into its `count` values.
    fn split<V: Pod>(self, bytes: &[u8]) -> Result<Vec<V>> {
        self.check_len(bytes)?;
        (0..self.count).map(|i| self.read(bytes, i)).collect()
    }

    /// The value of a map with one value per key.
    fn single<V: Pod>(self, bytes: &[u8]) -> Result<V> {
        self.check_len(bytes)?;
        self.read(bytes, 0)
    }

    fn check_len(self, bytes: &[u8]) -> Result<()> {
        let expected = self.stride * self.count;
        if bytes.len() == expected {
            return Ok(());
        }
        Err(Error::msg(format!(
            "the host returned a {}-byte value, expected {expected} ({} x {} bytes)",
            bytes.len(),
            self.count,
            self.stride
        )))
    }

    /// Value `index`, read unaligned from the start of its stride.
    fn read<V: Pod>(self, bytes: &[u8], index: usize) -> Result<V> {
        let start = index * self.stride;
        bytes
            .get(start..start + size_of::<V>())
            .and_then(|v| bytemuck::try_pod_read_unaligned(v).ok())
            .ok_or_else(|| Error::msg("value larger than the map's stride"))
    }

    /// Lays `values` out as the kernel expects, zero-padding each to the stride.
    fn join<V: Pod>(self, values: &[V]) -> Result<Vec<u8>> {
        if values.len() != self.count {
            return Err(Error::msg(format!(
                "{} values given, the map takes {} per key (one per possible CPU)",
                values.len(),
                self.count
            )));
        }
        let mut bytes = vec![0; self.stride * self.count];
        for (chunk, value) in bytes.chunks_exact_mut(self.stride).zip(values) {
            let value = bytemuck::bytes_of(value);
            chunk
                .get_mut(..value.len())
                .ok_or_else(|| Error::msg("value larger than the map's stride"))?
                .copy_from_slice(value);
        }
        Ok(bytes)
    }
}

/// An item of a key page, which knows the key to continue after.
trait PageItem {
    fn key(&self) -> &[u8];
}

impl PageItem for Vec<u8> {
    fn key(&self) -> &[u8] {
        self
    }
}

impl PageItem for Entry {
    fn key(&self) -> &[u8] {
        &self.key
    }
}

/// Iterates over pages that `fetch(after, max)` returns, continuing after the
/// last key of each page until a short page or the first error.
struct Pager<T, F> {
    fetch: F,
    cursor: Option<Vec<u8>>,
    page: std::vec::IntoIter<T>,
    done: bool,
}

impl<T, F> Pager<T, F>
where
    T: PageItem,
    F: FnMut(Option<&[u8]>, u32) -> Result<Vec<T>>,
{
    fn new(fetch: F) -> Self {
        Pager {
            fetch,
            cursor: None,
            page: Vec::new().into_iter(),
            done: false,
        }
    }
}

impl<T, F> Iterator for Pager<T, F>
where
    T: PageItem,
    F: FnMut(Option<&[u8]>, u32) -> Result<Vec<T>>,
{
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        loop {
            if let Some(item) = self.page.next() {
                return Some(Ok(item));
            }
            if self.done {
                return None;
            }
            let page = match (self.fetch)(self.cursor.as_deref(), PAGE_SIZE) {
                Ok(page) => page,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            // A short page is the last; so is an empty one, which also
            // keeps a misbehaving host from making this loop forever.
            self.done = page.len() < PAGE_SIZE as usize;
            match page.last() {
                Some(last) => self.cursor = Some(last.key().to_vec()),
                None => self.done = true,
            }
            self.page = page.into_iter();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `keys` call over the sorted keys `0..n`, recording the cursors.
    fn fake_keys(
        n: u32,
        calls: &mut Vec<Option<u32>>,
    ) -> impl FnMut(Option<&[u8]>, u32) -> Result<Vec<Vec<u8>>> + '_ {
        move |after, max| {
            let after = after.map(|k| u32::from_ne_bytes(k.try_into().unwrap()));
            calls.push(after);
            let start = after.map_or(0, |k| k + 1);
            Ok((start..n)
                .take(max as usize)
                .map(|k| k.to_ne_bytes().to_vec())
                .collect())
        }
    }

    #[test]
    fn pages_with_last_key_as_cursor() {
        let mut calls = Vec::new();
        let keys: Vec<Vec<u8>> = Pager::new(fake_keys(600, &mut calls))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(keys.len(), 600);
        assert_eq!(keys[599], 599u32.to_ne_bytes());
        assert_eq!(calls, [None, Some(255), Some(511)]);
    }

    #[test]
    fn full_last_page_needs_one_more_call() {
        let mut calls = Vec::new();
        let count = Pager::new(fake_keys(512, &mut calls)).count();
        assert_eq!(count, 512);
        assert_eq!(calls, [None, Some(255), Some(511)]);
    }

    #[test]
    fn empty_map_is_one_call() {
        let mut calls = Vec::new();
        assert_eq!(Pager::new(fake_keys(0, &mut calls)).count(), 0);
        assert_eq!(calls, [None]);
    }

    #[test]
    fn error_ends_iteration() {
        let mut calls = 0;
        let mut pager = Pager::new(|after: Option<&[u8]>, max| {
            calls += 1;
            match after {
                None => Ok(vec![vec![0u8]; max as usize]),
                Some(_) => Err(Error::from(MapError::ReadOnly)),
            }
        });
        assert_eq!(pager.by_ref().take(256).filter(Result::is_ok).count(), 256);
        assert!(matches!(pager.next(), Some(Err(_))));
        assert!(pager.next().is_none());
        drop(pager);
        assert_eq!(calls, 2);
    }

    fn info(value_size: u32, value_stride: u32, values_per_key: u32) -> MapInfo {
        MapInfo {
            name: "m".into(),
            kind: MapKind::PercpuArray,
            key_size: 4,
            value_size,
            value_stride,
            max_entries: 4,
            values_per_key,
            access: Access::ReadWrite,
        }
    }

    #[test]
    fn per_cpu_round_trip_pads_to_stride() {
        let layout = ValueLayout::new(&info(4, 8, 3)).unwrap();
        let bytes = layout.join(&[1u32, 2, 3]).unwrap();
        assert_eq!(bytes.len(), 24);
        assert_eq!(&bytes[..8], [1u32.to_ne_bytes(), [0; 4]].concat());
        assert_eq!(layout.split::<u32>(&bytes).unwrap(), [1, 2, 3]);
    }

    #[test]
    fn per_cpu_rejects_wrong_counts_and_lengths() {
        let layout = ValueLayout::new(&info(8, 8, 4)).unwrap();
        assert_eq!(
            layout.join(&[7u64; 3]).unwrap_err().to_string(),
            "3 values given, the map takes 4 per key (one per possible CPU)"
        );
        assert_eq!(
            layout.split::<u64>(&[0; 24]).unwrap_err().to_string(),
            "the host returned a 24-byte value, expected 32 (4 x 8 bytes)"
        );
        assert!(ValueLayout::new(&info(8, 4, 1)).is_err());
        assert!(ValueLayout::new(&info(8, 8, 0)).is_err());
    }

    #[test]
    fn plain_map_has_one_value_per_key() {
        let layout = ValueLayout::new(&info(8, 8, 1)).unwrap();
        assert_eq!(layout.split::<u64>(&420u64.to_ne_bytes()).unwrap(), [420]);
        assert_eq!(layout.join(&[420u64]).unwrap(), 420u64.to_ne_bytes());
    }

    #[test]
    fn size_check_names_the_part() {
        assert!(check_size("key", 4, 4).is_ok());
        let e = check_size("key", 4, 8).unwrap_err();
        assert_eq!(
            e.to_string(),
            "wrong key size: the map expects 4 bytes, got 8"
        );
        assert!(matches!(e.map_error(), Some(MapError::WrongSize(_))));
    }
}
