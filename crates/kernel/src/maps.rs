//! Byte-level access to kernel BPF maps, for the WIT `maps` interface.
//!
//! aya's typed maps need key and value types at compile time; plugins give
//! bytes whose sizes are only known at run time, so element operations are
//! issued directly with the `bpf(2)` syscall on the map's file descriptor.
//! Sizes are checked against the kernel's own map info before every call, so
//! the kernel never reads or writes past a buffer.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use aya::maps::MapData;

/// Map types the host names for plugins; see `map-kind` in the WIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    Hash,
    Array,
    PercpuHash,
    PercpuArray,
    LruHash,
    LruPercpuHash,
    LpmTrie,
    Ringbuf,
    PerfEventArray,
    StackTrace,
    Other(u32),
}

impl MapKind {
    /// From the kernel's `enum bpf_map_type`.
    pub fn from_raw(t: u32) -> Self {
        match t {
            1 => Self::Hash,
            2 => Self::Array,
            4 => Self::PerfEventArray,
            5 => Self::PercpuHash,
            6 => Self::PercpuArray,
            7 => Self::StackTrace,
            9 => Self::LruHash,
            10 => Self::LruPercpuHash,
            11 => Self::LpmTrie,
            27 => Self::Ringbuf,
            other => Self::Other(other),
        }
    }

    pub fn is_per_cpu(self) -> bool {
        matches!(
            self,
            Self::PercpuHash | Self::PercpuArray | Self::LruPercpuHash
        )
    }

    /// Whether lookups/updates by key make sense for this kind.
    fn has_elements(self) -> bool {
        !matches!(self, Self::Ringbuf | Self::PerfEventArray)
    }
}

/// What the kernel says about a map, plus the derived per-CPU layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapMeta {
    pub kind: MapKind,
    pub key_size: u32,
    pub value_size: u32,
    /// Bytes between consecutive CPUs' values (per-CPU maps pad to 8).
    pub value_stride: u32,
    pub max_entries: u32,
    pub values_per_key: u32,
}

impl MapMeta {
    /// Bytes of one full value buffer: every CPU's value for per-CPU maps.
    pub fn value_buffer_len(&self) -> usize {
        self.value_stride as usize * self.values_per_key as usize
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MapOpError {
    #[error("{what} is {actual} bytes, the map expects {expected}")]
    WrongSize {
        what: &'static str,
        expected: u32,
        actual: u32,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("the kernel refused the operation: {0}")]
    Kernel(io::Error),
}

/// An open kernel map: its file descriptor and layout.
#[derive(Debug)]
pub struct KernelMap {
    name: String,
    data: MapData,
    meta: MapMeta,
}

impl KernelMap {
    pub fn new(name: impl Into<String>, data: MapData) -> io::Result<Self> {
        let info = data.info().map_err(io::Error::other)?;
        let kind = MapKind::from_raw(map_type_raw(&info));
        let values_per_key = if kind.is_per_cpu() {
            u32::try_from(possible_cpus()?).map_err(io::Error::other)?
        } else {
            1
        };
        let value_size = info.value_size();
        let value_stride = if kind.is_per_cpu() {
            value_size.next_multiple_of(8)
        } else {
            value_size
        };
        Ok(Self {
            name: name.into(),
            data,
            meta: MapMeta {
                kind,
                key_size: info.key_size(),
                value_size,
                value_stride,
                max_entries: info.max_entries(),
                values_per_key,
            },
        })
    }

    /// Open a map pinned on bpffs (e.g. by bpfman).
    pub fn from_pin(name: impl Into<String>, path: &Path) -> io::Result<Self> {
        let data = MapData::from_pin(path).map_err(io::Error::other)?;
        Self::new(name, data)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn meta(&self) -> &MapMeta {
        &self.meta
    }

    /// Pin the map on bpffs at `path` (see [`crate::shared`]).
    pub fn pin(&self, path: &Path) -> io::Result<()> {
        self.data.pin(path).map_err(io::Error::other)
    }

    /// A second handle on the same kernel map (a duplicated descriptor).
    pub fn try_clone_data(&self) -> io::Result<MapData> {
        let fd = self.data.fd().as_fd().try_clone_to_owned()?;
        MapData::from_fd(fd).map_err(io::Error::other)
    }

    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MapOpError> {
        self.check_elements()?;
        self.check_key(key)?;
        let mut value = vec![0u8; self.meta.value_buffer_len()];
        match sys::map_elem(
            sys::BPF_MAP_LOOKUP_ELEM,
            self.raw_fd(),
            key.as_ptr(),
            value.as_mut_ptr() as u64,
            0,
        ) {
            Ok(()) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(MapOpError::Kernel(e)),
        }
    }

    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapOpError> {
        self.check_elements()?;
        self.check_key(key)?;
        let expected = self.meta.value_buffer_len();
        if value.len() != expected {
            return Err(MapOpError::WrongSize {
                what: "value",
                expected: expected as u32,
                actual: value.len() as u32,
            });
        }
        sys::map_elem(
            sys::BPF_MAP_UPDATE_ELEM,
            self.raw_fd(),
            key.as_ptr(),
            value.as_ptr() as u64,
            flags,
        )
        .map_err(MapOpError::Kernel)
    }

    /// True if the key was present.
    pub fn delete(&self, key: &[u8]) -> Result<bool, MapOpError> {
        self.check_elements()?;
        self.check_key(key)?;
        if matches!(self.meta.kind, MapKind::Array | MapKind::PercpuArray) {
            return Err(MapOpError::Unsupported(format!(
                "map {:?} is an array: its elements cannot be deleted, update them instead",
                self.name
            )));
        }
        match sys::map_elem(sys::BPF_MAP_DELETE_ELEM, self.raw_fd(), key.as_ptr(), 0, 0) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(MapOpError::Kernel(e)),
        }
    }

    /// The key after `key` (the first key when `None`), or `None` at the end.
    pub fn next_key(&self, key: Option<&[u8]>) -> Result<Option<Vec<u8>>, MapOpError> {
        self.check_elements()?;
        if let Some(k) = key {
            self.check_key(k)?;
        }
        let mut next = vec![0u8; self.meta.key_size as usize];
        let key_ptr = key.map_or(std::ptr::null(), <[u8]>::as_ptr);
        match sys::map_elem(
            sys::BPF_MAP_GET_NEXT_KEY,
            self.raw_fd(),
            key_ptr,
            next.as_mut_ptr() as u64,
            0,
        ) {
            Ok(()) => Ok(Some(next)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(MapOpError::Kernel(e)),
        }
    }

    /// Up to `max` keys after `after`, in the kernel's iteration order.
    pub fn keys(&self, after: Option<&[u8]>, max: usize) -> Result<Vec<Vec<u8>>, MapOpError> {
        let mut keys = Vec::with_capacity(max.min(1024));
        let mut cursor = after.map(<[u8]>::to_vec);
        while keys.len() < max {
            match self.next_key(cursor.as_deref())? {
                Some(k) => {
                    cursor = Some(k.clone());
                    keys.push(k);
                }
                None => break,
            }
        }
        Ok(keys)
    }

    /// Sum of a per-CPU `u64` counter at `key` 0 across CPUs (the
    /// `<ringbuf>_lost` convention of `conductor.h`).
    pub fn sum_u64_at_zero(&self) -> Result<u64, MapOpError> {
        let Some(value) = self.lookup(&0u32.to_ne_bytes())? else {
            return Ok(0);
        };
        let stride = self.meta.value_stride as usize;
        Ok(value
            .chunks(stride)
            .filter_map(|c| c.get(..8))
            .filter_map(|b| b.try_into().ok())
            .map(u64::from_ne_bytes)
            .fold(0u64, u64::wrapping_add))
    }

    fn raw_fd(&self) -> i32 {
        self.data.fd().as_fd().as_raw_fd()
    }

    fn check_elements(&self) -> Result<(), MapOpError> {
        if self.meta.kind.has_elements() {
            Ok(())
        } else {
            Err(MapOpError::Unsupported(format!(
                "map {:?} is a {:?}: it streams events and has no elements to read or write",
                self.name, self.meta.kind
            )))
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<(), MapOpError> {
        if key.len() == self.meta.key_size as usize {
            Ok(())
        } else {
            Err(MapOpError::WrongSize {
                what: "key",
                expected: self.meta.key_size,
                actual: key.len() as u32,
            })
        }
    }
}

fn map_type_raw(info: &aya::maps::MapInfo) -> u32 {
    // aya's `MapType` discriminants are the kernel's `bpf_map_type` values.
    // `MapInfo::map_type` fails for types aya does not know.
    match info.map_type() {
        Ok(t) => t as u32,
        Err(_) => u32::MAX,
    }
}

/// Number of possible CPUs: per-CPU maps hold one value for each.
pub fn possible_cpus() -> io::Result<usize> {
    aya::util::nr_cpus().map_err(|(what, e)| io::Error::new(e.kind(), format!("{what}: {e}")))
}

mod sys {
    use std::io;

    pub const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    pub const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    pub const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    pub const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

    /// The element-operation member of `union bpf_attr`.
    #[repr(C)]
    struct MapElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value_or_next_key: u64,
        flags: u64,
    }

    /// Issue one element command. The caller guarantees that `key` points to
    /// `key_size` readable bytes (or is null for GET_NEXT_KEY) and that
    /// `value` points to a buffer of the map's full value length.
    pub fn map_elem(
        cmd: libc::c_long,
        fd: i32,
        key: *const u8,
        value: u64,
        flags: u64,
    ) -> io::Result<()> {
        let attr = MapElemAttr {
            map_fd: fd as u32,
            _pad: 0,
            key: key as u64,
            value_or_next_key: value,
            flags,
        };
        // SAFETY: `attr` is a valid bpf_attr prefix of the size passed; the
        // buffers it points to are sized by the caller from the kernel's
        // map info, so the kernel stays within them.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                &attr as *const MapElemAttr,
                std::mem::size_of::<MapElemAttr>() as u32,
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}
