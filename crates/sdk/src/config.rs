//! The `config` section of the plugin's spec, as the operator wrote it.

use std::fmt;
use std::str::FromStr;

use crate::bindings::conductor::plugin::config as raw;
use crate::error::{Error, Result};

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
    get(key).map(|value| parse_value(key, &value)).transpose()
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

fn parse_value<T>(key: &str, value: &str) -> Result<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value.trim().parse().map_err(|e| {
        Error::msg(format!(
            "config key {key:?}: cannot parse {value:?} as {}: {e}",
            std::any::type_name::<T>()
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_trims_and_names_the_key_on_error() {
        assert_eq!(parse_value::<u32>("limit", " 42 ").unwrap(), 42);
        assert_eq!(
            parse_value::<u32>("limit", "lots").unwrap_err().to_string(),
            "config key \"limit\": cannot parse \"lots\" as u32: invalid digit found in string"
        );
    }

    #[test]
    fn list_splits_on_commas() {
        assert_eq!(split_list(" sshd,cron ,, bash "), ["sshd", "cron", "bash"]);
        assert!(split_list("").is_empty());
    }
}
