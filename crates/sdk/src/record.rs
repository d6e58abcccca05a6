//! Event records declared once: [`record!`](crate::record!) and the layout
//! it hands the host.
//!
//! A BPF program and its plugin share each record's layout: the C struct
//! the program writes and the Rust struct the plugin decodes. `record!`
//! declares the Rust side as a `#[repr(C)]` plain-old-data struct (checked
//! at compile time to have no padding, so every byte is a field) and writes
//! its layout (name, size, and each field's name, offset and size) into the
//! component's `conductor.records` custom section. When the plugin is
//! loaded, the host compares that layout with the struct of the same name
//! (or its `snake_case` form: `ExecEvent` → `exec_event`) in the BTF of the
//! plugin's BPF object and refuses to start the plugin if a field's offset or
//! size differs, naming both layouts. Put the C struct in the object's BTF
//! with `CONDUCTOR_RECORD(exec_event);` from `conductor.h`; without it the
//! host logs a warning and does not check.
//!
//! ```
//! conductor_sdk::record! {
//!     /// `struct exec_event` of the BPF program.
//!     pub struct ExecEvent {
//!         pub cgroup_id: u64,
//!         pub pid: u32,
//!         pub ppid: u32,
//!         pub uid: u32,
//!         pub _pad: u32,
//!         pub comm: [u8; 16],
//!     }
//! }
//!
//! use conductor_sdk::record::Record;
//! assert_eq!(ExecEvent::LAYOUT.size, 40);
//! assert_eq!(ExecEvent::LAYOUT.fields[5].name, "comm");
//! assert_eq!(ExecEvent::LAYOUT.fields[5].offset, 24);
//! ```
//!
//! # Section format
//!
//! The linker concatenates every record's entry into one section. An
//! entry is, little-endian: `u16` version (1), `u16` name length, the name
//! (UTF-8), `u32` size, `u16` field count, then per field `u16` name length,
//! the name, `u32` offset and `u32` size.

/// The custom section the layouts are written to.
pub const SECTION: &str = "conductor.records";

/// The version of the entry format [`encode`] writes.
pub const FORMAT_VERSION: u16 = 1;

/// A struct declared with [`record!`](crate::record!).
pub trait Record: bytemuck::Pod {
    /// Its layout, as written to the [`SECTION`].
    const LAYOUT: Layout;
}

/// The layout of a record: what the host compares with the BPF object's BTF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The Rust struct's name.
    pub name: &'static str,
    /// `size_of` the struct.
    pub size: usize,
    /// The fields, in declaration order.
    pub fields: &'static [Field],
}

/// One field of a [`Layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    /// Bytes from the start of the struct.
    pub offset: usize,
    pub size: usize,
}

/// The length of `layout`'s entry in the section.
pub const fn encoded_len(layout: &Layout) -> usize {
    let mut len = 2 + 2 + layout.name.len() + 4 + 2;
    let mut i = 0;
    while i < layout.fields.len() {
        len += 2 + layout.fields[i].name.len() + 4 + 4;
        i += 1;
    }
    len
}

/// `layout`'s entry in the section; `N` is [`encoded_len`].
///
/// # Panics
///
/// At compile time (it runs in a `const`), if `N` is not `encoded_len` or a
/// name, size or offset does not fit the format.
pub const fn encode<const N: usize>(layout: &Layout) -> [u8; N] {
    assert!(N == encoded_len(layout), "record layout: wrong length");
    let mut out = [0u8; N];
    let mut at = put_u16(&mut out, 0, FORMAT_VERSION as usize);
    at = put_str(&mut out, at, layout.name);
    at = put_u32(&mut out, at, layout.size);
    at = put_u16(&mut out, at, layout.fields.len());
    let mut i = 0;
    while i < layout.fields.len() {
        let field = &layout.fields[i];
        at = put_str(&mut out, at, field.name);
        at = put_u32(&mut out, at, field.offset);
        at = put_u32(&mut out, at, field.size);
        i += 1;
    }
    assert!(at == N, "record layout: wrong length");
    out
}

const fn put_u16(out: &mut [u8], at: usize, value: usize) -> usize {
    assert!(
        value <= u16::MAX as usize,
        "record layout: too many fields or too long a name"
    );
    let bytes = (value as u16).to_le_bytes();
    out[at] = bytes[0];
    out[at + 1] = bytes[1];
    at + 2
}

const fn put_u32(out: &mut [u8], at: usize, value: usize) -> usize {
    assert!(
        value <= u32::MAX as usize,
        "record layout: struct too large"
    );
    let bytes = (value as u32).to_le_bytes();
    let mut i = 0;
    while i < 4 {
        out[at + i] = bytes[i];
        i += 1;
    }
    at + 4
}

const fn put_str(out: &mut [u8], at: usize, s: &str) -> usize {
    let bytes = s.as_bytes();
    let mut at = put_u16(out, at, bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        out[at] = bytes[i];
        at += 1;
        i += 1;
    }
    at
}

/// Declares an event record (or a map key or value) shared with the BPF
/// program: the Rust struct is written once, mirroring the C struct, and the
/// host checks it against the C struct's BTF when the plugin is loaded (see
/// [the module's docs](mod@crate::record)).
///
/// The struct gets `#[repr(C)]`, `Clone`, `Copy`, `Debug`, `PartialEq` and
/// the [`Pod`](crate::Pod) and [`Zeroable`](crate::Zeroable) impls, so
/// [`EventBatch::decode`](crate::EventBatch::decode) and
/// [`TypedMap`](crate::TypedMap) take it. Every field must be `Pod`
/// (integers, floats, arrays of them, other records) and the struct must
/// have no padding: where the C compiler pads, declare the padding as a
/// field on both sides (`_pad: u32`). Both are compile errors otherwise.
///
/// ```
/// conductor_sdk::record! {
///     /// `struct open_event` of the BPF program.
///     struct OpenEvent {
///         cgroup_id: u64,
///         /// The flags passed to open(2).
///         flags: u32,
///         ret: i32,
///         filename: [u8; 64],
///     }
/// }
///
/// let batch = conductor_sdk::EventBatch::from_records("events", [[0u8; 80]], 0);
/// let event: OpenEvent = batch.decode::<OpenEvent>().next().unwrap()?;
/// assert_eq!(event.flags, 0);
/// # Ok::<(), conductor_sdk::DecodeError>(())
/// ```
///
/// Padding is refused:
///
/// ```compile_fail
/// conductor_sdk::record! {
///     struct Padded { pid: u32, cgroup_id: u64 }
/// }
/// ```
#[macro_export]
macro_rules! record {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$field_meta:meta])* $field_vis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq)]
        $vis struct $name {
            $( $(#[$field_meta])* $field_vis $field: $ty, )*
        }

        const _: () = {
            // Every field is plain old data ...
            const fn pod<T: $crate::Pod>() {}
            $( pod::<$ty>(); )*
            // ... and there is no padding: the fields fill the struct.
            assert!(
                ::core::mem::size_of::<$name>() == 0 $( + ::core::mem::size_of::<$ty>() )*,
                concat!(
                    "record ", stringify!($name),
                    " has padding: declare it as a field (`_pad: u32`) where the C compiler pads"
                )
            );
        };

        // SAFETY: `#[repr(C)]`, every field is `Pod`, and the assertion above
        // proves there is no padding, which is what the derives would check.
        unsafe impl $crate::Zeroable for $name {}
        unsafe impl $crate::Pod for $name {}

        impl $crate::record::Record for $name {
            const LAYOUT: $crate::record::Layout = $crate::record::Layout {
                name: stringify!($name),
                size: ::core::mem::size_of::<$name>(),
                fields: &[$(
                    $crate::record::Field {
                        name: stringify!($field),
                        offset: ::core::mem::offset_of!($name, $field),
                        size: ::core::mem::size_of::<$ty>(),
                    },
                )*],
            };
        }

        const _: () = {
            const LEN: usize =
                $crate::record::encoded_len(&<$name as $crate::record::Record>::LAYOUT);
            // Kept by the linker (custom sections are not garbage-collected)
            // and read by the host at load time.
            #[cfg_attr(target_family = "wasm", unsafe(link_section = "conductor.records"))]
            #[used]
            static LAYOUT: [u8; LEN] =
                $crate::record::encode(&<$name as $crate::record::Record>::LAYOUT);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::record! {
        struct Sample { a: u64, b: u32, c: [u8; 4] }
    }

    #[test]
    fn layout_names_offsets_and_sizes() {
        assert_eq!(
            Sample::LAYOUT,
            Layout {
                name: "Sample",
                size: 16,
                fields: &[
                    Field {
                        name: "a",
                        offset: 0,
                        size: 8
                    },
                    Field {
                        name: "b",
                        offset: 8,
                        size: 4
                    },
                    Field {
                        name: "c",
                        offset: 12,
                        size: 4
                    },
                ],
            }
        );
    }

    #[test]
    fn encoding_is_the_documented_format() {
        const LEN: usize = encoded_len(&Sample::LAYOUT);
        let bytes: [u8; LEN] = encode(&Sample::LAYOUT);
        let mut want = vec![1, 0, 6, 0];
        want.extend(b"Sample");
        want.extend([16, 0, 0, 0, 3, 0]);
        for (name, offset, size) in [(b'a', 0u32, 8u32), (b'b', 8, 4), (b'c', 12, 4)] {
            want.extend([1, 0, name]);
            want.extend(offset.to_le_bytes());
            want.extend(size.to_le_bytes());
        }
        assert_eq!(bytes.as_slice(), want);
    }
}
