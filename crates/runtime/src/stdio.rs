//! The WASI context of a plugin: no sockets, environment or arguments, no
//! files but the directories its spec grants for reading; stdout and
//! stderr become log lines tagged with the plugin.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::host::ReadOnlyDir;
use crate::host::log::{LogBudget, note_suppressed};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

/// Longest line kept before it is flushed to the log unterminated.
const MAX_LINE: usize = 8 * 1024;

/// The plugin's WASI context; fails if a granted directory cannot be
/// opened (e.g. removed since the spec was accepted).
pub fn wasi_ctx(
    plugin: &str,
    budget: &Arc<LogBudget>,
    dirs: &[ReadOnlyDir],
) -> Result<WasiCtx, String> {
    let mut b = WasiCtxBuilder::new();
    // Sockets and name lookups are denied by default; no env, no args.
    // Blocking file reads run on the plugin's own thread (it has one).
    b.allow_blocking_current_thread(true)
        .stdout(LogStream::new(plugin, "stdout", budget.clone()))
        .stderr(LogStream::new(plugin, "stderr", budget.clone()));
    for d in dirs {
        // Read-only: no create, write, rename or delete, and cap-std keeps
        // every lookup (`..`, absolute symlinks) inside the directory.
        b.preopened_dir(&d.host, &d.guest, FsPerms::ReadOnly)
            .map_err(|e| {
                format!(
                    "cannot open the granted directory {} (readOnlyPaths): {e:#}",
                    d.host.display()
                )
            })?;
    }
    Ok(b.build())
}

/// A WASI output stream that turns each line into a log record.
#[derive(Clone)]
struct LogStream {
    plugin: Arc<str>,
    stream: &'static str,
    line: Arc<Mutex<Vec<u8>>>,
    budget: Arc<LogBudget>,
}

impl LogStream {
    fn new(plugin: &str, stream: &'static str, budget: Arc<LogBudget>) -> Self {
        Self {
            plugin: plugin.into(),
            stream,
            line: Arc::default(),
            budget,
        }
    }

    fn emit(&self, line: &[u8]) {
        let admission = self.budget.admit(line.len());
        if let Some(note) = &admission.note {
            note_suppressed(&self.plugin, note);
        }
        if !admission.admit {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if self.stream == "stderr" {
            tracing::warn!(target: "plugin", plugin = %self.plugin, stream = self.stream, "{text}");
        } else {
            tracing::info!(target: "plugin", plugin = %self.plugin, stream = self.stream, "{text}");
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp3 guests use this; plugins target wasip2.
        Box::new(tokio::io::sink())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut line = self.line.lock().map_err(|_| StreamError::Closed)?;
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            line.extend_from_slice(chunk);
            if line.ends_with(b"\n") {
                self.emit(&line[..line.len() - 1]);
                line.clear();
            } else if line.len() >= MAX_LINE {
                self.emit(&line);
                line.clear();
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        // The last clone flushes a final unterminated line.
        if Arc::strong_count(&self.line) == 1
            && let Ok(line) = self.line.lock()
            && !line.is_empty()
        {
            self.emit(&line);
        }
    }
}
