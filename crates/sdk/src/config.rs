//! The `config` section of the plugin's spec, as the operator wrote it.
//!
//! Read it whole into a struct of the plugin's with [`load`], or key by key
//! with [`get`], [`parse`] and [`list`].

use std::fmt;
use std::str::FromStr;

use serde::de::{self, DeserializeOwned, IntoDeserializer};

use crate::bindings::conductor::plugin::config as raw;
use crate::error::{Error, Result};

/// The whole config as a `T`, any [`serde::Deserialize`] struct: each key
/// of the spec's config fills the field of the same name (use
/// `#[serde(rename_all = "camelCase")]` and the like as usual).
///
/// Values are strings in the spec and are parsed by the field's type:
/// integers, floats and `true`/`false` from their text, sequences and sets
/// (`Vec`, `HashSet`, ...) from comma-separated items (trimmed, empty ones
/// dropped), enums from a unit variant's name, `Option` as `Some` when the
/// key is set. A key the spec leaves out is a `missing field` error unless
/// the field (or the struct) has `#[serde(default)]`; keys without a field
/// are ignored unless the struct has `#[serde(deny_unknown_fields)]`.
/// Errors name the key and the value.
///
/// The plugin's crate needs `serde` with its `derive` feature.
///
/// ```no_run
/// use std::collections::HashSet;
/// use conductor_sdk::config;
///
/// #[derive(serde::Deserialize)]
/// #[serde(rename_all = "camelCase")]
/// struct Config {
///     /// `ignore: "sshd, cron"`: command names not to count.
///     #[serde(default)]
///     ignore: HashSet<String>,
///     /// `maxDepth: "4"`.
///     #[serde(default = "four")]
///     max_depth: u32,
/// }
/// fn four() -> u32 { 4 }
///
/// # fn init() -> conductor_sdk::Result<()> {
/// let config: Config = config::load()?;
/// # Ok(()) }
/// ```
pub fn load<T: DeserializeOwned>() -> Result<T> {
    from_entries(entries())
}

/// [`load`] from these key/value pairs instead of the spec's: for unit
/// tests of a plugin's config handling.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Config { limit: u32, names: Vec<String> }
///
/// let config: Config = conductor_sdk::config::from_entries([
///     ("limit".to_owned(), "10".to_owned()),
///     ("names".to_owned(), "a, b".to_owned()),
/// ])?;
/// assert_eq!((config.limit, config.names), (10, vec!["a".to_owned(), "b".to_owned()]));
///
/// let bad = conductor_sdk::config::from_entries::<Config>([("limit".to_owned(), "ten".to_owned())]);
/// assert_eq!(
///     bad.err().unwrap().to_string(),
///     "config: key \"limit\": cannot parse \"ten\" as u32: invalid digit found in string"
/// );
/// # Ok::<(), conductor_sdk::Error>(())
/// ```
pub fn from_entries<T: DeserializeOwned>(
    entries: impl IntoIterator<Item = (String, String)>,
) -> Result<T> {
    let pairs = entries.into_iter().map(|(key, value)| {
        let value = Value {
            key: key.clone(),
            value,
        };
        (key, value)
    });
    let map = de::value::MapDeserializer::new(pairs);
    T::deserialize(map).map_err(|e: ConfigError| Error::msg(format!("config: {}", e.0)))
}

/// The value for `key`, if the spec sets it.
pub fn get(key: &str) -> Option<String> {
    raw::get(key)
}

/// Every key/value pair of the spec's config, sorted by key.
pub fn entries() -> Vec<(String, String)> {
    raw::entries()
}

/// The value for `key` parsed as a `T`, or `None` if the spec does not set
/// it. Surrounding whitespace is ignored; an unparsable value is an error
/// naming the key.
///
/// ```rust,ignore
/// let limit: u32 = config::parse("limit")?.unwrap_or(100);
/// ```
pub fn parse<T>(key: &str) -> Result<Option<T>>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    get(key)
        .map(|value| parse_value(key, &value).map_err(|e| Error::msg(format!("config {e}"))))
        .transpose()
}

/// The value for `key` as a comma-separated list, items trimmed and empty
/// ones dropped; empty if the spec does not set it.
///
/// ```rust,ignore
/// let ignored: Vec<String> = config::list("ignore"); // "sshd, cron" -> ["sshd", "cron"]
/// ```
pub fn list(key: &str) -> Vec<String> {
    get(key).map(|value| split_list(&value)).unwrap_or_default()
}

/// `value` parsed as a `T`, or the message "key {key:?}: cannot parse ...".
fn parse_value<T>(key: &str, value: &str) -> Result<T, String>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value.trim().parse().map_err(|e| {
        format!(
            "key {key:?}: cannot parse {value:?} as {}: {e}",
            std::any::type_name::<T>()
        )
    })
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A config error: serde's message, or ours naming the key.
#[derive(Debug)]
struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl de::Error for ConfigError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        ConfigError(msg.to_string())
    }
}

/// One config value, parsed by what the field asks for.
struct Value {
    key: String,
    value: String,
}

impl Value {
    fn parse<T>(&self) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        parse_value(&self.key, &self.value).map_err(ConfigError)
    }
}

impl IntoDeserializer<'_, ConfigError> for Value {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

macro_rules! parsed {
    ($($method:ident => $visit:ident),* $(,)?) => {$(
        fn $method<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
            visitor.$visit(self.parse()?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Value {
    type Error = ConfigError;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_string(self.value)
    }

    parsed! {
        deserialize_bool => visit_bool,
        deserialize_i8 => visit_i8,
        deserialize_i16 => visit_i16,
        deserialize_i32 => visit_i32,
        deserialize_i64 => visit_i64,
        deserialize_i128 => visit_i128,
        deserialize_u8 => visit_u8,
        deserialize_u16 => visit_u16,
        deserialize_u32 => visit_u32,
        deserialize_u64 => visit_u64,
        deserialize_u128 => visit_u128,
        deserialize_f32 => visit_f32,
        deserialize_f64 => visit_f64,
        deserialize_char => visit_char,
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        let key = self.key;
        let items = split_list(&self.value).into_iter().map(move |value| Value {
            key: key.clone(),
            value,
        });
        de::value::SeqDeserializer::new(items).deserialize_seq(visitor)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConfigError> {
        visitor.visit_enum(self.value.trim().to_owned().into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        str string bytes byte_buf unit unit_struct tuple tuple_struct map struct
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_trims_and_names_the_key_on_error() {
        assert_eq!(parse_value::<u32>("limit", " 42 ").unwrap(), 42);
        assert_eq!(
            parse_value::<u32>("limit", "lots").unwrap_err(),
            "key \"limit\": cannot parse \"lots\" as u32: invalid digit found in string"
        );
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Typed {
        name: String,
        max_depth: u8,
        ratio: f64,
        on: bool,
        #[serde(default)]
        ignore: std::collections::BTreeSet<String>,
        mode: Option<Mode>,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
        Exact,
    }

    fn typed(entries: &[(&str, &str)]) -> Result<Typed> {
        from_entries(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn load_fills_a_struct_by_field_type() {
        let config = typed(&[
            ("name", " x "),
            ("maxDepth", " 4"),
            ("ratio", "0.5"),
            ("on", "true"),
            ("ignore", "sshd, cron,,"),
            ("mode", "exact"),
        ])
        .unwrap();
        assert_eq!(
            config,
            Typed {
                name: " x ".into(),
                max_depth: 4,
                ratio: 0.5,
                on: true,
                ignore: ["cron".to_owned(), "sshd".to_owned()].into(),
                mode: Some(Mode::Exact),
            }
        );
        let defaults = typed(&[
            ("name", ""),
            ("maxDepth", "0"),
            ("ratio", "1"),
            ("on", "false"),
        ])
        .unwrap();
        assert!(defaults.ignore.is_empty());
        assert_eq!(defaults.mode, None);
    }

    #[test]
    fn load_errors_name_the_key() {
        let all = [
            ("name", "x"),
            ("maxDepth", "300"),
            ("ratio", "1"),
            ("on", "yes"),
        ];
        assert_eq!(
            typed(&all).unwrap_err().to_string(),
            "config: key \"maxDepth\": cannot parse \"300\" as u8: number too large to fit in target type"
        );
        assert_eq!(
            typed(&[("name", "x")]).unwrap_err().to_string(),
            "config: missing field `maxDepth`"
        );
        let unknown = typed(&[("name", "x"), ("colour", "red")])
            .unwrap_err()
            .to_string();
        assert!(
            unknown.starts_with("config: unknown field `colour`"),
            "{unknown}"
        );
        let mode = typed(&[
            ("name", "x"),
            ("maxDepth", "1"),
            ("ratio", "1"),
            ("on", "true"),
            ("mode", "slow"),
        ])
        .unwrap_err()
        .to_string();
        assert!(mode.starts_with("config: unknown variant `slow`"), "{mode}");
    }

    #[test]
    fn list_splits_on_commas() {
        assert_eq!(split_list(" sshd,cron ,, bash "), ["sshd", "cron", "bash"]);
        assert!(split_list("").is_empty());
    }
}
