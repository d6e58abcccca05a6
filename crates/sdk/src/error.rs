//! The SDK's error type.

use std::fmt;

use crate::events::DecodeError;
use crate::maps::MapError;
use crate::metrics::MetricError;

/// `Result` with the SDK's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from the SDK or the plugin, with optional context.
///
/// Returned from a plugin's [`Plugin`](crate::Plugin) methods it becomes the
/// error string the host logs (and, from `init`, the reason the plugin is
/// stopped and restarted), so its [`Display`](fmt::Display) says what was
/// wrong, where: `map "flows": update: the plugin has read-only access`.
///
/// Match on [`Error::kind`] (or use [`Error::map_error`] /
/// [`Error::metric_error`]) to react to a specific failure.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    /// Outermost first, joined with ": ".
    context: Option<String>,
}

/// What went wrong, without the context.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The host refused a map operation.
    Map(MapError),
    /// The host refused a metric declaration or sample.
    Metric(MetricError),
    /// An event record could not be decoded.
    Decode(DecodeError),
    /// Anything else, as a message.
    Other(String),
}

impl Error {
    /// An error carrying just `message`.
    pub fn msg(message: impl fmt::Display) -> Self {
        ErrorKind::Other(message.to_string()).into()
    }

    /// Adds `context` in front of the message (`"{context}: {self}"`).
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.context = Some(match self.context.take() {
            Some(inner) => format!("{context}: {inner}"),
            None => context.to_string(),
        });
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The host's map error, if this is one.
    pub fn map_error(&self) -> Option<&MapError> {
        match &self.kind {
            ErrorKind::Map(e) => Some(e),
            _ => None,
        }
    }

    /// The host's metric error, if this is one.
    pub fn metric_error(&self) -> Option<&MetricError> {
        match &self.kind {
            ErrorKind::Metric(e) => Some(e),
            _ => None,
        }
    }

    /// The kernel's errno, if the kernel refused a map operation.
    pub fn errno(&self) -> Option<i32> {
        match self.map_error() {
            Some(MapError::Kernel(k)) => Some(k.errno),
            _ => None,
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error {
            kind,
            context: None,
        }
    }
}

impl From<MapError> for Error {
    fn from(e: MapError) -> Self {
        ErrorKind::Map(e).into()
    }
}

impl From<MetricError> for Error {
    fn from(e: MetricError) -> Self {
        ErrorKind::Metric(e).into()
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        ErrorKind::Decode(e).into()
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        ErrorKind::Other(message).into()
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        ErrorKind::Other(message.to_owned()).into()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(context) = &self.context {
            write!(f, "{context}: ")?;
        }
        fmt::Display::fmt(&self.kind, f)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Map(e) => fmt_map_error(e, f),
            ErrorKind::Metric(e) => fmt_metric_error(e, f),
            ErrorKind::Decode(e) => fmt::Display::fmt(e, f),
            ErrorKind::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

// The generated types' `Display` is their `Debug` output; these read better
// in a log line.
fn fmt_map_error(e: &MapError, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match e {
        MapError::NotGranted(detail) => write!(f, "not granted to this plugin: {detail}"),
        MapError::ReadOnly => f.write_str("the plugin has read-only access"),
        MapError::WrongSize(w) => write!(
            f,
            "wrong {} size: the map expects {} bytes, got {}",
            w.what, w.expected, w.actual
        ),
        MapError::Unsupported(detail) => write!(f, "unsupported: {detail}"),
        MapError::Kernel(k) => write!(f, "kernel error: {} (errno {})", k.message, k.errno),
    }
}

fn fmt_metric_error(e: &MetricError, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match e {
        MetricError::InvalidName(name) => write!(f, "invalid metric or label name {name:?}"),
        MetricError::Conflict(detail) => {
            write!(f, "conflicts with an earlier declaration: {detail}")
        }
        MetricError::WrongLabelCount(w) => write!(
            f,
            "wrong number of label values: expected {}, got {}",
            w.expected, w.actual
        ),
        MetricError::InvalidBuckets(detail) => write!(f, "invalid histogram buckets: {detail}"),
        MetricError::CardinalityLimit(limit) => write!(
            f,
            "cardinality limit of {limit} label sets reached; the sample was dropped"
        ),
    }
}

/// Adds context to any `Result` whose error converts into [`Error`].
///
/// ```
/// use conductor_sdk::{Error, ResultExt};
///
/// let r: Result<(), &str> = Err("too big");
/// let e: Error = r.context("loading rules").unwrap_err();
/// assert_eq!(e.to_string(), "loading rules: too big");
/// ```
pub trait ResultExt<T> {
    /// Wraps the error with `context`.
    fn context(self, context: impl fmt::Display) -> Result<T>;

    /// Wraps the error with the context `f` returns, built only on error.
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{KernelError, WrongSize};
    use crate::metrics::WrongLabelCount;

    #[test]
    fn context_nests_outermost_first() {
        let e = Error::from(MapError::ReadOnly)
            .context("update")
            .context("map \"flows\"");
        assert_eq!(
            e.to_string(),
            "map \"flows\": update: the plugin has read-only access"
        );
        assert!(matches!(e.map_error(), Some(MapError::ReadOnly)));
    }

    #[test]
    fn messages_say_what_was_wrong() {
        let wrong = Error::from(MapError::WrongSize(WrongSize {
            what: "key".into(),
            expected: 4,
            actual: 2,
        }));
        assert_eq!(
            wrong.to_string(),
            "wrong key size: the map expects 4 bytes, got 2"
        );
        let kernel = Error::from(MapError::Kernel(KernelError {
            errno: 17,
            message: "File exists".into(),
        }));
        assert_eq!(kernel.to_string(), "kernel error: File exists (errno 17)");
        assert_eq!(kernel.errno(), Some(17));
        let labels = Error::from(MetricError::WrongLabelCount(WrongLabelCount {
            expected: 1,
            actual: 2,
        }));
        assert_eq!(
            labels.to_string(),
            "wrong number of label values: expected 1, got 2"
        );
        assert!(labels.metric_error().is_some());
        assert_eq!(labels.errno(), None);
    }

    #[test]
    fn result_ext_converts_and_wraps() {
        let r: Result<(), MapError> = Err(MapError::NotGranted("no map \"x\"".into()));
        let e = r.with_context(|| "open").unwrap_err();
        assert_eq!(
            e.to_string(),
            "open: not granted to this plugin: no map \"x\""
        );
        assert!(matches!(e.kind(), ErrorKind::Map(MapError::NotGranted(_))));
    }
}
