//! `conductor:plugin/log`: a plugin's log records, tagged with its name,
//! within the plugin's [`LogBudget`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::WResult;
use crate::StoreData;
use crate::bindings::conductor::plugin::log::{self, Level};

/// Where a plugin's log records go.
pub trait LogBackend: Send + Sync {
    /// One record; `fields` are already formatted as ` key="value"` pairs.
    fn log(&self, plugin: &str, level: Level, message: &str, fields: &str);
}

/// The host's `tracing` log (target `plugin`), which the daemon also keeps
/// per plugin for `conductor logs`.
pub struct TracingLog;

impl LogBackend for TracingLog {
    fn log(&self, plugin: &str, level: Level, message: &str, fields: &str) {
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}{fields}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}{fields}"),
            Level::Info => tracing::info!(target: "plugin", plugin, "{message}{fields}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}{fields}"),
            Level::Error => tracing::error!(target: "plugin", plugin, "{message}{fields}"),
        }
    }
}

/// Lines a plugin may log per second, on average (its `log` interface and
/// its stdout/stderr together).
pub const LOG_LINES_PER_SEC: f64 = 100.0;
/// Lines a plugin may log in a burst, above the rate.
pub const LOG_LINE_BURST: f64 = 1000.0;
/// Bytes a plugin may log per second, on average.
pub const LOG_BYTES_PER_SEC: f64 = 64.0 * 1024.0;
/// Bytes a plugin may log in a burst.
pub const LOG_BYTE_BURST: f64 = 512.0 * 1024.0;
/// At most one note about suppressed lines this often.
const NOTE_EVERY: Duration = Duration::from_secs(1);

/// A plugin's log budget: token buckets of lines and bytes. Lines over it
/// are dropped before they are formatted (a plugin logging in a loop costs
/// the host almost nothing), counted, and noted in the log at most once a
/// second. One per plugin, shared by its instances and by its log
/// interface and stdio, so a restart does not refill it.
pub struct LogBudget {
    state: Mutex<Buckets>,
    suppressed: AtomicU64,
}

struct Buckets {
    lines: f64,
    bytes: f64,
    refilled: Instant,
    /// Suppressed since the last note.
    unnoted: u64,
    noted: Option<Instant>,
}

/// Whether a line may be logged, and a note to log first, if any.
pub struct Admission {
    pub admit: bool,
    pub note: Option<String>,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            state: Mutex::new(Buckets {
                lines: LOG_LINE_BURST,
                bytes: LOG_BYTE_BURST,
                refilled: Instant::now(),
                unnoted: 0,
                noted: None,
            }),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl LogBudget {
    /// Take a line of `len` bytes from the budget.
    pub fn admit(&self, len: usize) -> Admission {
        let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let dt = now.duration_since(b.refilled).as_secs_f64();
        b.refilled = now;
        b.lines = (b.lines + dt * LOG_LINES_PER_SEC).min(LOG_LINE_BURST);
        b.bytes = (b.bytes + dt * LOG_BYTES_PER_SEC).min(LOG_BYTE_BURST);
        let len = len as f64;
        let admit = b.lines >= 1.0 && b.bytes >= len.min(LOG_BYTE_BURST);
        if admit {
            b.lines -= 1.0;
            b.bytes -= len;
        } else {
            b.unnoted += 1;
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
        let note = if b.unnoted > 0 && b.noted.is_none_or(|t| now.duration_since(t) >= NOTE_EVERY) {
            let n = std::mem::take(&mut b.unnoted);
            b.noted = Some(now);
            Some(format!(
                "{n} log lines of this plugin were suppressed: it logs more than {LOG_LINES_PER_SEC} \
                 lines or {} KiB per second (bursts of {LOG_LINE_BURST} lines); they are counted in \
                 conductor_plugin_log_lines_suppressed_total",
                LOG_BYTES_PER_SEC as u64 / 1024
            ))
        } else {
            None
        };
        Admission { admit, note }
    }

    /// Lines suppressed so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

/// Log the host's note about suppressed lines of `plugin`.
pub(crate) fn note_suppressed(plugin: &str, note: &str) {
    tracing::warn!(plugin, "{note}");
}

/// ` key="value"` for each field, the value quoted (and a key that is not a
/// plain word quoted too) so that spaces, `=` or quotes cannot forge fields.
fn format_fields(fields: &[(String, String)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let plain = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if plain {
                format!(" {k}={v:?}")
            } else {
                format!(" {k:?}={v:?}")
            }
        })
        .collect()
}

/// The message with control characters escaped (`\n`, `\u{1b}`, ...): a
/// plugin's record is one line of the host's log, so a newline or a
/// terminal escape in it cannot forge host log lines or repaint a terminal.
fn one_line(message: &str) -> std::borrow::Cow<'_, str> {
    if message.chars().any(char::is_control) {
        message
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        message.into()
    }
}

impl log::Host for StoreData {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) -> WResult<()> {
        let host = &self.host;
        let len = message.len()
            + fields
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>();
        let Admission { admit, note } = host.log_budget.admit(len);
        if let Some(note) = note {
            note_suppressed(&host.name, &note);
        }
        if admit {
            host.log.log(
                &host.name,
                level,
                &one_line(&message),
                &format_fields(&fields),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::host::{test_host, test_store};

    #[derive(Default)]
    struct Recorded(Mutex<Vec<(String, String, String)>>);

    impl LogBackend for Recorded {
        fn log(&self, plugin: &str, level: Level, message: &str, fields: &str) {
            self.0.lock().unwrap().push((
                plugin.to_owned(),
                format!("{level:?}"),
                format!("{message}{fields}"),
            ));
        }
    }

    #[test]
    fn a_plugin_over_its_budget_is_cut_off_counted_and_noted() {
        let sink = Arc::new(Recorded::default());
        let mut store = test_store(test_host("chatty").with_log(sink.clone()));
        let tries = 10 * LOG_LINE_BURST as usize;
        for i in 0..tries {
            log::Host::log(&mut store, Level::Info, format!("line {i}"), vec![]).unwrap();
        }
        let logged = sink.0.lock().unwrap().len();
        let suppressed = store.host.log_budget.suppressed() as usize;
        assert_eq!(logged + suppressed, tries);
        // The burst, and whatever the rate refilled while the loop ran.
        assert!(logged >= LOG_LINE_BURST as usize, "{logged}");
        assert!(suppressed > 0);
        // Bytes count too: one huge line takes the byte budget.
        let budget = LogBudget::default();
        assert!(budget.admit(LOG_BYTE_BURST as usize).admit);
        let second = budget.admit(LOG_BYTE_BURST as usize);
        assert!(!second.admit && second.note.is_some());
        // Notes come at most once a second.
        assert!(budget.admit(LOG_BYTE_BURST as usize).note.is_none());
    }

    #[test]
    fn records_carry_the_plugin_name_level_and_quoted_fields() {
        let sink = Arc::new(Recorded::default());
        let mut store = test_store(test_host("p1").with_log(sink.clone()));
        log::Host::log(
            &mut store,
            Level::Warn,
            "slow".into(),
            vec![("ms".into(), "12".into()), ("who".into(), "a b=c".into())],
        )
        .unwrap();
        log::Host::log(&mut store, Level::Info, "plain".into(), vec![]).unwrap();
        let got = sink.0.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                (
                    "p1".into(),
                    "Level::Warn".into(),
                    r#"slow ms="12" who="a b=c""#.into()
                ),
                ("p1".into(), "Level::Info".into(), "plain".into()),
            ]
        );
    }

    /// Issue 19, fuzzing of every WIT call: whatever message and fields a
    /// guest logs, its record is one line without control characters (no
    /// forged host lines, no terminal escapes), one ` key=value` per field,
    /// and a plain message is kept as it is.
    #[test]
    fn any_record_is_one_line_with_its_fields_unforgeable() {
        use proptest::prelude::*;
        let text = || prop_oneof![".{0,16}", "[a-z =\"\\\n\r\u{1b}\t]{0,12}", "\\PC{0,8}"];
        let fields = prop::collection::vec((text(), text()), 0..4);
        proptest!(ProptestConfig::with_cases(512), |(message in text(), fields in fields)| {
            let sink = Arc::new(Recorded::default());
            let mut store = test_store(test_host("fuzzed").with_log(sink.clone()));
            log::Host::log(&mut store, Level::Info, message.clone(), fields.clone()).unwrap();
            let records = sink.0.lock().unwrap();
            prop_assert_eq!(records.len(), 1);
            let line = &records[0].2;
            prop_assert!(!line.chars().any(char::is_control), "{line:?}");
            if !message.chars().any(char::is_control) {
                prop_assert!(line.starts_with(&message));
            }
            // Each field is ` key=` then a quoted value; counting the
            // quoted values' ends finds exactly one per field.
            let rendered = format_fields(&fields);
            prop_assert!(line.ends_with(&rendered));
            let mut rest = rendered.as_str();
            let mut n = 0;
            while let Some(r) = rest.strip_prefix(' ') {
                // The key: plain, or a quoted Debug string.
                let after_key = if r.starts_with('"') { skip_quoted(r) } else { r.find('=').map(|i| &r[i..]) };
                let Some(after_key) = after_key.and_then(|a| a.strip_prefix('=')) else {
                    return Err(TestCaseError::fail(format!("no `=` after a key in {rendered:?}")));
                };
                let Some(after_value) = skip_quoted(after_key) else {
                    return Err(TestCaseError::fail(format!("unquoted value in {rendered:?}")));
                };
                rest = after_value;
                n += 1;
            }
            prop_assert!(rest.is_empty(), "left over {rest:?} in {rendered:?}");
            prop_assert_eq!(n, fields.len());
        });
    }

    /// What follows a Debug-quoted string at the start of `s`.
    fn skip_quoted(s: &str) -> Option<&str> {
        let mut chars = s.strip_prefix('"')?.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => return Some(&s[i + 2..]),
                _ => {}
            }
        }
        None
    }
}
