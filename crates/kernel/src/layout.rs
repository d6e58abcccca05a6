//! Record layouts written once: the plugin's Rust declaration checked
//! against the C struct's BTF in its BPF object.
//!
//! The SDK's `record!` writes each event record's layout (struct name, size,
//! and each field's name, offset and size) into the component's
//! `conductor.records` custom section ([`decode_section`] reads it). The
//! BPF object's `.BTF` section describes the C structs the same way
//! ([`Btf::parse_object`], [`Btf::layout`]). [`check`] compares them at load
//! time, so a C struct changed without its Rust mirror (or the other way
//! round) is refused with both layouts named instead of silently decoding
//! garbage.
//!
//! The BTF reader is a small one of our own: it only walks the type section
//! to the sizes and member offsets of structs (aya-obj keeps its BTF types'
//! fields private; see docs/src/design.md).

use std::fmt;

use object::{Object, ObjectSection};

/// The custom section the SDK writes layouts to.
pub const SECTION: &str = "conductor.records";

/// A struct's layout, from either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLayout {
    pub name: String,
    pub size: u32,
    pub fields: Vec<FieldLayout>,
}

/// One field of a [`RecordLayout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldLayout {
    pub name: String,
    /// Bytes from the start of the struct.
    pub offset: u32,
    pub size: u32,
}

impl fmt::Display for RecordLayout {
    /// `exec_event (40 bytes): cgroup_id @0 (8), pid @8 (4), ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} bytes):", self.name, self.size)?;
        for (i, field) in self.fields.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{} @{} ({})", field.name, field.offset, field.size)?;
        }
        Ok(())
    }
}

/// Why the layouts could not be read or do not agree.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "the component's {SECTION} section is malformed ({0}); rebuild the plugin with a current conductor-sdk"
    )]
    Section(String),
    #[error("the BPF object's BTF is malformed ({0}); rebuild the object with clang -g")]
    Btf(String),
    #[error(
        "event record {rust_name} of the component does not match struct {c_name} of the BPF object: {differences}\n  Rust: {rust}\n  C:    {c}\nchange the Rust declaration (conductor_sdk::record!) or the C struct so that they agree, and rebuild both"
    )]
    Mismatch {
        rust_name: String,
        c_name: String,
        differences: String,
        rust: Box<RecordLayout>,
        c: Box<RecordLayout>,
    },
}

/// Every layout in the concatenated `conductor.records` section(s).
pub fn decode_section(mut bytes: &[u8]) -> Result<Vec<RecordLayout>, LayoutError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let mut r = Reader { bytes: &mut bytes };
        let version = r.u16()?;
        if version != 1 {
            return Err(LayoutError::Section(format!(
                "entry version {version}, this host reads version 1"
            )));
        }
        let name = r.string()?;
        let size = r.u32()?;
        let count = r.u16()?;
        let mut fields = Vec::with_capacity(count.into());
        for _ in 0..count {
            fields.push(FieldLayout {
                name: r.string()?,
                offset: r.u32()?,
                size: r.u32()?,
            });
        }
        out.push(RecordLayout { name, size, fields });
    }
    Ok(out)
}

struct Reader<'a, 'b> {
    bytes: &'b mut &'a [u8],
}

impl Reader<'_, '_> {
    fn take(&mut self, n: usize) -> Result<&[u8], LayoutError> {
        if self.bytes.len() < n {
            return Err(LayoutError::Section("an entry is cut short".into()));
        }
        let (head, tail) = self.bytes.split_at(n);
        *self.bytes = tail;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, LayoutError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, LayoutError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, LayoutError> {
        let len = self.u16()?.into();
        let b = self.take(len)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| LayoutError::Section("a name is not UTF-8".into()))
    }
}

/// The outcome of [`check`] for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The C struct's BTF has the same fields at the same offsets and sizes.
    Matches { rust: String, c: String },
    /// The object's BTF has no struct of that name: nothing to check against.
    NoBtf { rust: String },
}

/// Checks every Rust record against the struct of the same name (or its
/// `snake_case` form: `ExecEvent` → `exec_event`) in `btf`. A record
/// matches if each Rust field is a C member of the same name, offset and
/// size, and the Rust struct is no larger than the C one (a C struct may
/// grow at its end: records are decoded from their first bytes).
pub fn check(records: &[RecordLayout], btf: Option<&Btf>) -> Result<Vec<Checked>, LayoutError> {
    let mut out = Vec::new();
    for rust in records {
        let Some(c) = btf.and_then(|btf| {
            btf.layout(&rust.name)
                .or_else(|| btf.layout(&snake_case(&rust.name)))
        }) else {
            out.push(Checked::NoBtf {
                rust: rust.name.clone(),
            });
            continue;
        };
        let differences = differences(rust, &c);
        if !differences.is_empty() {
            return Err(LayoutError::Mismatch {
                rust_name: rust.name.clone(),
                c_name: c.name.clone(),
                differences: differences.join("; "),
                rust: Box::new(rust.clone()),
                c: Box::new(c),
            });
        }
        out.push(Checked::Matches {
            rust: rust.name.clone(),
            c: c.name,
        });
    }
    Ok(out)
}

fn differences(rust: &RecordLayout, c: &RecordLayout) -> Vec<String> {
    let mut out = Vec::new();
    for field in &rust.fields {
        match c.fields.iter().find(|m| m.name == field.name) {
            None => out.push(format!("field {} is not in the C struct", field.name)),
            Some(m) if (m.offset, m.size) != (field.offset, field.size) => out.push(format!(
                "field {}: Rust offset {} size {}, C offset {} size {}",
                field.name, field.offset, field.size, m.offset, m.size
            )),
            Some(_) => {}
        }
    }
    if rust.size > c.size {
        out.push(format!(
            "the Rust struct is {} bytes, the C struct only {}",
            rust.size, c.size
        ));
    }
    out
}

/// `ExecEvent` → `exec_event`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// An integer type of a global variable, as BTF describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntType {
    /// The C name (its typedef if it has one, e.g. `__u32`).
    pub name: String,
    pub size: u32,
    pub signed: bool,
    /// `char`, `signed char` or `unsigned char`.
    pub char: bool,
}

/// What a global variable's value may be set from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueType {
    Int(IntType),
    Bool {
        name: String,
    },
    Array {
        element: IntType,
        count: u32,
    },
    /// Anything else (structs, pointers, floats, nested arrays).
    Other {
        name: String,
    },
}

impl ValueType {
    /// The type as C would spell it, e.g. `__u32` or `char[16]`.
    pub fn name(&self) -> String {
        match self {
            ValueType::Int(i) => i.name.clone(),
            ValueType::Bool { name } | ValueType::Other { name } => name.clone(),
            ValueType::Array { element, count } => format!("{}[{count}]", element.name),
        }
    }
}

/// The struct layouts of a BPF object's `.BTF` section.
#[derive(Debug, Clone)]
pub struct Btf {
    /// Indexed by type id - 1.
    types: Vec<Type>,
    strings: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Type {
    /// FLOAT, DATASEC: the size in bytes.
    Sized(u32),
    /// INT: its name, size in bytes and encoding (`BTF_INT_SIGNED` 1,
    /// `BTF_INT_CHAR` 2, `BTF_INT_BOOL` 4).
    Int {
        name: u32,
        size: u32,
        encoding: u32,
    },
    /// ENUM, ENUM64: signed if the kind flag says so.
    Enum {
        name: u32,
        size: u32,
        signed: bool,
    },
    /// TYPEDEF: a name for another type.
    Typedef {
        name: u32,
        ty: u32,
    },
    /// VAR: a global variable and its type.
    Var {
        name: u32,
        ty: u32,
    },
    Pointer,
    Array {
        element: u32,
        count: u32,
    },
    /// STRUCT or UNION.
    Composite {
        name: u32,
        size: u32,
        is_struct: bool,
        /// (name offset, type id, bit offset)
        members: Vec<(u32, u32, u32)>,
    },
    /// TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG: the type they qualify.
    Alias(u32),
    /// FWD, FUNC, FUNC_PROTO, VAR, DECL_TAG: no size of their own here.
    Other,
}

impl Btf {
    /// The BTF of the ELF object `elf`, or `None` if it has no `.BTF`
    /// section (built without `-g`).
    pub fn parse_object(elf: &[u8]) -> Result<Option<Btf>, LayoutError> {
        let file = object::File::parse(elf)
            .map_err(|e| LayoutError::Btf(format!("not an ELF object: {e}")))?;
        let Some(section) = file.section_by_name(".BTF") else {
            return Ok(None);
        };
        let data = section
            .data()
            .map_err(|e| LayoutError::Btf(format!("cannot read .BTF: {e}")))?;
        Btf::parse(data).map(Some)
    }

    /// Parses raw BTF (little-endian, as clang writes it for the BPF target
    /// on this host).
    pub fn parse(data: &[u8]) -> Result<Btf, LayoutError> {
        let bad = |what: &str| LayoutError::Btf(what.to_owned());
        let u32_at = |at: usize| -> Result<u32, LayoutError> {
            data.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| bad("cut short"))
        };
        if data.get(..2) != Some(&0xeb9fu16.to_le_bytes()[..]) {
            return Err(bad("no little-endian BTF magic"));
        }
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let section = |off: usize, len: usize| {
            hdr_len
                .checked_add(off)
                .and_then(|start| Some(start..start.checked_add(len)?))
                .and_then(|range| data.get(range))
                .ok_or_else(|| bad("a section reaches past the end"))
        };
        let type_data = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?.to_vec();

        let word = |at: usize| -> Result<u32, LayoutError> {
            type_data
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| bad("a type is cut short"))
        };
        let mut types = Vec::new();
        let mut at = 0;
        while at < type_data.len() {
            let name = word(at)?;
            let info = word(at + 4)?;
            let size_or_type = word(at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kflag = info >> 31 == 1;
            let ty = match kind {
                1 => {
                    let encoding = (word(at)? >> 24) & 0xf;
                    at += 4;
                    Type::Int {
                        name,
                        size: size_or_type,
                        encoding,
                    }
                }
                2 => Type::Pointer,
                3 => {
                    let ty = Type::Array {
                        element: word(at)?,
                        count: word(at + 8)?,
                    };
                    at += 12;
                    ty
                }
                4 | 5 => {
                    let mut members = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = word(m + 8)?;
                        // With kflag, the top 8 bits are a bitfield's size.
                        let bits = if kflag { offset & 0x00ff_ffff } else { offset };
                        members.push((word(m)?, word(m + 4)?, bits));
                    }
                    at += vlen * 12;
                    Type::Composite {
                        name,
                        size: size_or_type,
                        is_struct: kind == 4,
                        members,
                    }
                }
                6 => {
                    at += vlen * 8;
                    Type::Enum {
                        name,
                        size: size_or_type,
                        signed: kflag,
                    }
                }
                7 | 12 => Type::Other,
                8 => Type::Typedef {
                    name,
                    ty: size_or_type,
                },
                9..=11 | 18 => Type::Alias(size_or_type),
                13 => {
                    at += vlen * 8;
                    Type::Other
                }
                14 => {
                    at += 4;
                    Type::Var {
                        name,
                        ty: size_or_type,
                    }
                }
                17 => {
                    at += 4;
                    Type::Other
                }
                15 => {
                    at += vlen * 12;
                    Type::Sized(size_or_type)
                }
                16 => Type::Sized(size_or_type),
                19 => {
                    at += vlen * 12;
                    Type::Enum {
                        name,
                        size: size_or_type,
                        signed: kflag,
                    }
                }
                other => return Err(LayoutError::Btf(format!("unknown BTF kind {other}"))),
            };
            types.push(ty);
        }
        Ok(Btf { types, strings })
    }

    fn string(&self, offset: u32) -> &str {
        let tail = self.strings.get(offset as usize..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or("")
    }

    /// The size in bytes of type `id` (`None` for void, functions and types
    /// nested too deep).
    fn size(&self, id: u32, depth: u32) -> Option<u32> {
        if depth > 32 {
            return None;
        }
        match self.types.get(id.checked_sub(1)? as usize)? {
            Type::Sized(size)
            | Type::Composite { size, .. }
            | Type::Int { size, .. }
            | Type::Enum { size, .. } => Some(*size),
            // BPF is a 64-bit target.
            Type::Pointer => Some(8),
            Type::Array { element, count } => self.size(*element, depth + 1)?.checked_mul(*count),
            Type::Alias(ty) | Type::Typedef { ty, .. } => self.size(*ty, depth + 1),
            Type::Other | Type::Var { .. } => None,
        }
    }

    /// The type of global variable `name`, if the BTF describes one.
    pub fn variable(&self, name: &str) -> Option<ValueType> {
        let ty = self.types.iter().find_map(|t| match t {
            Type::Var { name: n, ty } if self.string(*n) == name => Some(*ty),
            _ => None,
        })?;
        Some(self.value_type(ty, None, 0))
    }

    /// What a value of type `id` may be set from; `shown` is the name the
    /// C source gave it (its outermost typedef).
    fn value_type(&self, id: u32, shown: Option<String>, depth: u32) -> ValueType {
        let t = id
            .checked_sub(1)
            .and_then(|i| self.types.get(i as usize))
            .filter(|_| depth <= 32);
        let named = |own: &str| shown.clone().unwrap_or_else(|| own.to_owned());
        match t {
            Some(Type::Int {
                name,
                size,
                encoding,
            }) => {
                let c_name = named(self.string(*name));
                if encoding & 4 != 0 {
                    ValueType::Bool { name: c_name }
                } else {
                    ValueType::Int(IntType {
                        name: c_name,
                        size: *size,
                        signed: encoding & 1 != 0,
                        char: encoding & 2 != 0,
                    })
                }
            }
            Some(Type::Enum { name, size, signed }) => ValueType::Int(IntType {
                name: named(&format!("enum {}", self.string(*name))),
                size: *size,
                signed: *signed,
                char: false,
            }),
            Some(Type::Typedef { name, ty }) => {
                let shown = shown.or_else(|| Some(self.string(*name).to_owned()));
                self.value_type(*ty, shown, depth + 1)
            }
            Some(Type::Alias(ty)) => self.value_type(*ty, shown, depth + 1),
            Some(Type::Array { element, count }) => {
                match self.value_type(*element, None, depth + 1) {
                    ValueType::Int(element) => ValueType::Array {
                        element,
                        count: *count,
                    },
                    other => ValueType::Other {
                        name: format!("{}[{count}]", other.name()),
                    },
                }
            }
            Some(Type::Composite {
                name, is_struct, ..
            }) => ValueType::Other {
                name: named(&format!(
                    "{} {}",
                    if *is_struct { "struct" } else { "union" },
                    self.string(*name)
                )),
            },
            Some(Type::Pointer) => ValueType::Other {
                name: named("pointer"),
            },
            _ => ValueType::Other {
                name: named("an unsupported type"),
            },
        }
    }

    /// The layout of `struct name`, if the BTF has one (not a forward
    /// declaration). Bitfield members are given the size of their type.
    pub fn layout(&self, name: &str) -> Option<RecordLayout> {
        self.types.iter().find_map(|ty| match ty {
            Type::Composite {
                name: n,
                size,
                is_struct: true,
                members,
            } if self.string(*n) == name => Some(RecordLayout {
                name: name.to_owned(),
                size: *size,
                fields: members
                    .iter()
                    .map(|&(member, ty, bits)| FieldLayout {
                        name: self.string(member).to_owned(),
                        offset: bits / 8,
                        size: self.size(ty, 0).unwrap_or(0),
                    })
                    .collect(),
            }),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(name: &str, size: u32, fields: &[(&str, u32, u32)]) -> RecordLayout {
        RecordLayout {
            name: name.into(),
            size,
            fields: fields
                .iter()
                .map(|&(name, offset, size)| FieldLayout {
                    name: name.into(),
                    offset,
                    size,
                })
                .collect(),
        }
    }

    /// The SDK's encoding of `Sample { a: u64, b: u32, c: [u8; 4] }`.
    fn sample_entry() -> Vec<u8> {
        let mut e = vec![1, 0, 6, 0];
        e.extend(b"Sample");
        e.extend([16, 0, 0, 0, 3, 0]);
        for (name, offset, size) in [(b'a', 0u32, 8u32), (b'b', 8, 4), (b'c', 12, 4)] {
            e.extend([1, 0, name]);
            e.extend(offset.to_le_bytes());
            e.extend(size.to_le_bytes());
        }
        e
    }

    #[test]
    fn decodes_concatenated_entries() {
        let mut bytes = sample_entry();
        bytes.extend(sample_entry());
        let want = layout("Sample", 16, &[("a", 0, 8), ("b", 8, 4), ("c", 12, 4)]);
        assert_eq!(decode_section(&bytes).unwrap(), [want.clone(), want]);
        assert!(decode_section(&[]).unwrap().is_empty());
        let cut = &sample_entry()[..20];
        assert!(matches!(decode_section(cut), Err(LayoutError::Section(_))));
        let mut future = sample_entry();
        future[0] = 2;
        assert!(
            decode_section(&future)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
    }

    /// Hand-assembled BTF: `int`, `struct ev { __u64 id; int x[2]; }`
    /// through a typedef for `__u64`.
    fn btf_bytes() -> Vec<u8> {
        let strings = b"\0u64\0__u64\0ev\0id\0x\0int\0".to_vec();
        let mut types = Vec::new();
        let mut put = |words: &[u32]| {
            for w in words {
                types.extend(w.to_le_bytes());
            }
        };
        put(&[1, 1 << 24, 8, 64]); // 1: INT u64, 8 bytes
        put(&[5, 8 << 24, 1]); // 2: TYPEDEF __u64 -> 1
        put(&[19, 1 << 24, 4, 32]); // 3: INT int
        put(&[0, 3 << 24, 0, 3, 3, 2]); // 4: ARRAY int[2]
        put(&[11, (4 << 24) | 2, 16, 14, 2, 0, 17, 4, 64]); // 5: STRUCT ev
        let mut out = Vec::new();
        for w in [0xeb9f_u16 as u32 | (1 << 16), 24, 0, types.len() as u32] {
            out.extend(w.to_le_bytes());
        }
        out.extend((types.len() as u32).to_le_bytes());
        out.extend((strings.len() as u32).to_le_bytes());
        out.extend(types);
        out.extend(strings);
        out
    }

    #[test]
    fn reads_struct_layouts_from_btf() {
        let btf = Btf::parse(&btf_bytes()).unwrap();
        assert_eq!(
            btf.layout("ev").unwrap(),
            layout("ev", 16, &[("id", 0, 8), ("x", 8, 8)])
        );
        assert_eq!(btf.layout("missing"), None);
        assert!(Btf::parse(b"nope").is_err());
        assert!(Btf::parse(&btf_bytes()[..30]).is_err());
    }

    #[test]
    fn check_names_both_layouts() {
        let btf = Btf::parse(&btf_bytes()).unwrap();
        let good = layout("Ev", 16, &[("id", 0, 8), ("x", 8, 8)]);
        let prefix = layout("ev", 8, &[("id", 0, 8)]);
        assert_eq!(
            check(&[good.clone(), prefix], Some(&btf)).unwrap(),
            [
                Checked::Matches {
                    rust: "Ev".into(),
                    c: "ev".into()
                },
                Checked::Matches {
                    rust: "ev".into(),
                    c: "ev".into()
                }
            ]
        );
        let other = layout("Other", 4, &[("a", 0, 4)]);
        assert_eq!(
            check(std::slice::from_ref(&other), Some(&btf)).unwrap(),
            [Checked::NoBtf {
                rust: "Other".into()
            }]
        );
        assert_eq!(
            check(&[other], None).unwrap(),
            [Checked::NoBtf {
                rust: "Other".into()
            }]
        );

        let bad = layout("Ev", 20, &[("id", 0, 4), ("x", 4, 8), ("y", 12, 8)]);
        let err = check(&[bad], Some(&btf)).unwrap_err().to_string();
        assert_eq!(
            err,
            "event record Ev of the component does not match struct ev of the BPF object: \
             field id: Rust offset 0 size 4, C offset 0 size 8; \
             field x: Rust offset 4 size 8, C offset 8 size 8; \
             field y is not in the C struct; \
             the Rust struct is 20 bytes, the C struct only 16\n  \
             Rust: Ev (20 bytes): id @0 (4), x @4 (8), y @12 (8)\n  \
             C:    ev (16 bytes): id @0 (8), x @8 (8)\n\
             change the Rust declaration (conductor_sdk::record!) or the C struct so that they agree, and rebuild both"
        );
    }

    #[test]
    fn snake_case_of_rust_names() {
        assert_eq!(snake_case("ExecEvent"), "exec_event");
        assert_eq!(snake_case("event"), "event");
        assert_eq!(snake_case("TcpV4"), "tcp_v4");
    }
}
