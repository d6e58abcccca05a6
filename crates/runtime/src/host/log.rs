//! `conductor:plugin/log`: a plugin's log records, tagged with its name.

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

/// ` key="value"` for each field, quoted so that spaces cannot forge fields.
fn format_fields(fields: &[(String, String)]) -> String {
    fields.iter().map(|(k, v)| format!(" {k}={v:?}")).collect()
}

impl log::Host for StoreData {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) -> WResult<()> {
        let host = &self.host;
        host.log
            .log(&host.name, level, &message, &format_fields(&fields));
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
}
