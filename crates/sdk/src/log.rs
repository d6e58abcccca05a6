//! Structured logging into the host's log, tagged with the plugin's name.
//!
//! The [`trace!`](crate::trace), [`debug!`](crate::debug),
//! [`info!`](crate::info), [`warn!`](crate::warn) and
//! [`error!`](crate::error) macros take `format!` arguments; [`log_with`]
//! also attaches key/value fields. Standard output and standard error also
//! reach the host's log, but untagged by level.

use std::fmt;

use crate::bindings::conductor::plugin::log as raw;

pub use raw::Level;

/// Emits one record with `message`.
pub fn log(level: Level, message: &str) {
    raw::log(level, message, &[]);
}

/// Emits one record with `message` and structured `fields`.
///
/// ```rust,ignore
/// log::log_with(log::Level::Warn, "map nearly full", &[("map", "flows"), ("used", &used.to_string())]);
/// ```
pub fn log_with(level: Level, message: &str, fields: &[(&str, &str)]) {
    raw::log(level, message, fields);
}

/// Emits one record formatted from `args`; what the logging macros call.
pub fn log_args(level: Level, args: fmt::Arguments<'_>) {
    // A plain literal needs no formatting buffer.
    match args.as_str() {
        Some(message) => log(level, message),
        None => log(level, &args.to_string()),
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::log_args($crate::log::Level::$level, ::core::format_args!($($arg)+))
    };
}

/// Logs at trace level, with `format!` syntax.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::__log!(Trace, $($arg)+) };
}

/// Logs at debug level, with `format!` syntax.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::__log!(Debug, $($arg)+) };
}

/// Logs at info level, with `format!` syntax.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::__log!(Info, $($arg)+) };
}

/// Logs at warn level, with `format!` syntax.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::__log!(Warn, $($arg)+) };
}

/// Logs at error level, with `format!` syntax.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::__log!(Error, $($arg)+) };
}
