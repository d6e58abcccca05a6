//! `bytecode.globalData` values turned into a global variable's bytes,
//! checked against the variable's BTF type (see [`crate::layout::Btf::variable`]).

use conductor_api::GlobalValue;

use crate::layout::{IntType, ValueType};

/// The bytes of `value` for variable `name` of type `ty` (native byte
/// order), or a message naming the variable, its type and the value.
pub fn encode(name: &str, ty: &ValueType, value: &GlobalValue) -> Result<Vec<u8>, String> {
    let refuse = |why: String| {
        Err(format!(
            "globalData.{name}: {value} cannot be set in a `{}`: {why}",
            ty.name()
        ))
    };
    match (ty, value) {
        (ValueType::Int(int), GlobalValue::Unsigned(_) | GlobalValue::Signed(_)) => {
            match int_bytes(int, integer(value)) {
                Ok(b) => Ok(b),
                Err(why) => refuse(why),
            }
        }
        (ValueType::Bool { .. }, GlobalValue::Bool(b)) => Ok(vec![u8::from(*b)]),
        (ValueType::Bool { .. }, GlobalValue::Unsigned(v @ (0 | 1))) => Ok(vec![*v as u8]),
        (ValueType::Array { element, count }, GlobalValue::Text(text)) if element.size == 1 => {
            let bytes = text.as_bytes();
            if bytes.contains(&0) {
                return refuse("the text contains a NUL byte".into());
            }
            if bytes.len() >= *count as usize {
                return refuse(format!(
                    "{} bytes do not fit with their NUL terminator (at most {})",
                    bytes.len(),
                    count.saturating_sub(1)
                ));
            }
            let mut out = bytes.to_vec();
            out.resize(*count as usize, 0);
            Ok(out)
        }
        (ValueType::Array { element, count }, GlobalValue::List(items)) => {
            if items.len() > *count as usize {
                return refuse(format!("{} items, the array holds {count}", items.len()));
            }
            let mut out = Vec::with_capacity((element.size * count) as usize);
            for (i, &item) in items.iter().enumerate() {
                match int_bytes(element, i128::from(item)) {
                    Ok(b) => out.extend(b),
                    Err(why) => return refuse(format!("item {i}: {why}")),
                }
            }
            out.resize((element.size * count) as usize, 0);
            Ok(out)
        }
        (ValueType::Other { .. }, _) => {
            refuse("only integers, bools, char arrays and integer arrays can be set".into())
        }
        (ValueType::Int(_), _) => refuse("give an integer".into()),
        (ValueType::Bool { .. }, _) => refuse("give true or false".into()),
        (ValueType::Array { element, .. }, _) if element.size == 1 => {
            refuse("give a string (or a list of integers)".into())
        }
        (ValueType::Array { .. }, _) => refuse("give a list of integers".into()),
    }
}

fn integer(value: &GlobalValue) -> i128 {
    match value {
        GlobalValue::Unsigned(v) => i128::from(*v),
        GlobalValue::Signed(v) => i128::from(*v),
        _ => 0,
    }
}

/// `v` in `int`'s size and native byte order, if it is in range.
fn int_bytes(int: &IntType, v: i128) -> Result<Vec<u8>, String> {
    let bits = int.size * 8;
    if !matches!(int.size, 1 | 2 | 4 | 8) {
        return Err(format!("{}-byte integers cannot be set", int.size));
    }
    let (min, max) = if int.signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    if v < min || v > max {
        return Err(format!(
            "out of range {min}..={max} ({} {}-byte integer)",
            if int.signed { "signed" } else { "unsigned" },
            int.size
        ));
    }
    let all = v.to_ne_bytes();
    let size = int.size as usize;
    Ok(if cfg!(target_endian = "little") {
        all[..size].to_vec()
    } else {
        all[16 - size..].to_vec()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(name: &str, size: u32, signed: bool) -> IntType {
        IntType {
            name: name.into(),
            size,
            signed,
            char: false,
        }
    }

    fn char_array(count: u32) -> ValueType {
        ValueType::Array {
            element: IntType {
                char: true,
                ..int("char", 1, true)
            },
            count,
        }
    }

    #[test]
    fn integers_are_range_checked_by_size_and_sign() {
        let u8_ = ValueType::Int(int("__u8", 1, false));
        let s16 = ValueType::Int(int("__s16", 2, true));
        let u64_ = ValueType::Int(int("__u64", 8, false));
        assert_eq!(
            encode("x", &u8_, &GlobalValue::Unsigned(255)).unwrap(),
            [255]
        );
        assert_eq!(
            encode("x", &s16, &GlobalValue::Signed(-2)).unwrap(),
            (-2i16).to_ne_bytes()
        );
        assert_eq!(
            encode("x", &u64_, &GlobalValue::Unsigned(u64::MAX)).unwrap(),
            u64::MAX.to_ne_bytes()
        );
        let e = encode("port", &u8_, &GlobalValue::Unsigned(256)).unwrap_err();
        assert_eq!(
            e,
            "globalData.port: 256 cannot be set in a `__u8`: out of range 0..=255 (unsigned 1-byte integer)"
        );
        let e = encode("x", &u8_, &GlobalValue::Signed(-1)).unwrap_err();
        assert!(e.contains("out of range 0..=255"), "{e}");
        let e = encode("x", &s16, &GlobalValue::Unsigned(32768)).unwrap_err();
        assert!(e.contains("-32768..=32767"), "{e}");
        let e = encode("x", &u8_, &GlobalValue::Text("1".into())).unwrap_err();
        assert!(e.contains("give an integer") && e.contains("\"1\""), "{e}");
    }

    #[test]
    fn bools_take_true_false_or_zero_and_one() {
        let b = ValueType::Bool {
            name: "_Bool".into(),
        };
        assert_eq!(encode("on", &b, &GlobalValue::Bool(true)).unwrap(), [1]);
        assert_eq!(encode("on", &b, &GlobalValue::Unsigned(0)).unwrap(), [0]);
        let e = encode("on", &b, &GlobalValue::Unsigned(2)).unwrap_err();
        assert!(e.contains("`_Bool`") && e.contains("true or false"), "{e}");
    }

    #[test]
    fn char_arrays_take_nul_padded_strings_that_fit() {
        let comm = char_array(8);
        assert_eq!(
            encode("comm", &comm, &GlobalValue::Text("cat".into())).unwrap(),
            *b"cat\0\0\0\0\0"
        );
        let e = encode("comm", &comm, &GlobalValue::Text("12345678".into())).unwrap_err();
        assert_eq!(
            e,
            "globalData.comm: \"12345678\" cannot be set in a `char[8]`: 8 bytes do not fit with their NUL terminator (at most 7)"
        );
        let e = encode("comm", &comm, &GlobalValue::Unsigned(1)).unwrap_err();
        assert!(e.contains("give a string"), "{e}");
    }

    #[test]
    fn integer_arrays_take_lists_with_the_rest_zeroed() {
        let ports = ValueType::Array {
            element: int("__u16", 2, false),
            count: 3,
        };
        let got = encode("ports", &ports, &GlobalValue::List(vec![80, 443])).unwrap();
        let want: Vec<u8> = [80u16, 443, 0]
            .iter()
            .flat_map(|p| p.to_ne_bytes())
            .collect();
        assert_eq!(got, want);
        let e = encode("ports", &ports, &GlobalValue::List(vec![1, 2, 3, 4])).unwrap_err();
        assert!(e.contains("4 items, the array holds 3"), "{e}");
        let e = encode("ports", &ports, &GlobalValue::List(vec![1, 70000])).unwrap_err();
        assert!(e.contains("item 1: out of range 0..=65535"), "{e}");
    }

    #[test]
    fn other_types_are_refused_by_name() {
        let s = ValueType::Other {
            name: "struct cfg".into(),
        };
        let e = encode("cfg", &s, &GlobalValue::Unsigned(1)).unwrap_err();
        assert!(
            e.contains("`struct cfg`") && e.contains("only integers"),
            "{e}"
        );
    }
}
