//! Recent log lines of each plugin, for the node API's `Logs`.
//!
//! A [`tracing`] layer ([`CaptureLayer`]) copies every log event that names a
//! plugin (a `plugin` field) into that plugin's bounded buffer: the lines
//! the plugin writes through its `log` interface and to stdout/stderr
//! (target `plugin`), and what the host says about it (faults, restarts,
//! updates). Lines of plugins that are not [registered](LogHub::register)
//! are not kept. Followers get new lines over a broadcast channel; one that
//! falls too far behind is told how many it missed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer};

/// Lines kept per plugin unless configured otherwise.
pub const DEFAULT_LINES: usize = 1000;
/// Lines a follower may lag behind before it misses some.
const FOLLOW_BACKLOG: usize = 1024;

#[derive(Debug, Clone)]
pub struct LogRecord {
    pub time: SystemTime,
    pub level: Level,
    pub message: String,
    /// Structured fields; `source` is `plugin` for the plugin's own lines
    /// and `host` for the host's lines about it.
    pub fields: BTreeMap<String, String>,
}

struct Buffer {
    lines: VecDeque<Arc<LogRecord>>,
    follow: broadcast::Sender<Arc<LogRecord>>,
}

/// New lines of one plugin, as they are logged.
pub type Follow = broadcast::Receiver<Arc<LogRecord>>;

pub struct LogHub {
    buffers: Mutex<HashMap<String, Buffer>>,
    capacity: std::sync::atomic::AtomicUsize,
}

/// The process's hub (the tracing layer is process-wide too).
pub fn hub() -> &'static LogHub {
    static HUB: OnceLock<LogHub> = OnceLock::new();
    HUB.get_or_init(|| LogHub {
        buffers: Mutex::default(),
        capacity: DEFAULT_LINES.into(),
    })
}

impl LogHub {
    /// Lines kept per plugin from now on (at least one).
    pub fn set_capacity(&self, lines: usize) {
        self.capacity
            .store(lines.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Start keeping `plugin`'s lines (keeps what is there if already kept).
    pub fn register(&self, plugin: &str) {
        self.lock()
            .entry(plugin.to_owned())
            .or_insert_with(|| Buffer {
                lines: VecDeque::new(),
                follow: broadcast::channel(FOLLOW_BACKLOG).0,
            });
    }

    /// Forget `plugin`'s lines; its followers' streams end.
    pub fn unregister(&self, plugin: &str) {
        self.lock().remove(plugin);
    }

    /// The last `tail` lines (0: all kept) and, from the same instant, a
    /// receiver of the lines that follow. `None` if the plugin is not kept.
    pub fn read(&self, plugin: &str, tail: usize) -> Option<(Vec<Arc<LogRecord>>, Follow)> {
        let buffers = self.lock();
        let b = buffers.get(plugin)?;
        let skip = if tail == 0 {
            0
        } else {
            b.lines.len().saturating_sub(tail)
        };
        Some((
            b.lines.iter().skip(skip).cloned().collect(),
            b.follow.subscribe(),
        ))
    }

    fn push(&self, plugin: &str, record: LogRecord) {
        let capacity = self.capacity.load(std::sync::atomic::Ordering::Relaxed);
        let mut buffers = self.lock();
        let Some(b) = buffers.get_mut(plugin) else {
            return;
        };
        let record = Arc::new(record);
        while b.lines.len() >= capacity {
            b.lines.pop_front();
        }
        b.lines.push_back(record.clone());
        let _ = b.follow.send(record);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Buffer>> {
        self.buffers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The tracing layer that fills the [`hub`].
pub struct CaptureLayer;

impl CaptureLayer {
    /// What is captured: a plugin's own lines from `debug` up, the host's
    /// from `info` up. (The layer's own filter, so that the console's
    /// `CONDUCTOR_LOG` neither hides lines from `conductor logs` nor turns
    /// on costly levels everywhere.)
    pub fn filter() -> Targets {
        Targets::new()
            .with_target("plugin", Level::DEBUG)
            .with_default(Level::INFO)
    }
}

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        let Some(plugin) = visitor.plugin else {
            return;
        };
        let mut fields = visitor.fields;
        let source = if event.metadata().target() == "plugin" {
            "plugin"
        } else {
            "host"
        };
        fields.insert("source".into(), source.into());
        hub().push(
            &plugin,
            LogRecord {
                time: SystemTime::now(),
                level: *event.metadata().level(),
                message: visitor.message,
                fields,
            },
        );
    }
}

#[derive(Default)]
struct Fields {
    plugin: Option<String>,
    message: String,
    fields: BTreeMap<String, String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "plugin" => self.plugin = Some(value),
            name => {
                self.fields.insert(name.to_owned(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_the_last_lines_of_registered_plugins_only() {
        let subscriber =
            tracing_subscriber::registry().with(CaptureLayer.with_filter(CaptureLayer::filter()));
        let name = "logs-unit-test";
        hub().register(name);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..(DEFAULT_LINES + 5) {
                tracing::info!(target: "plugin", plugin = name, stream = "stdout", "line {i}");
            }
            tracing::info!(target: "plugin", plugin = "not-registered", "dropped");
            tracing::debug!(plugin = name, "host debug lines are not kept");
            tracing::warn!(plugin = %name, "host says");
        });
        let (lines, _) = hub().read(name, 0).unwrap();
        assert_eq!(lines.len(), DEFAULT_LINES);
        assert_eq!(lines[0].message, "line 6");
        let last = lines.last().unwrap();
        assert_eq!(last.message, "host says");
        assert_eq!(last.fields["source"], "host");
        assert_eq!(lines[lines.len() - 2].fields["stream"], "stdout");
        assert_eq!(lines[lines.len() - 2].fields["source"], "plugin");
        let (tail, _) = hub().read(name, 2).unwrap();
        assert_eq!(tail.len(), 2);
        assert!(hub().read("not-registered", 0).is_none());
        hub().unregister(name);
        assert!(hub().read(name, 0).is_none());
    }
}
