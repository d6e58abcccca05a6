//! Thread helpers shared by the ring-buffer, plugin-vs-native and exporter benches
//! (included with `#[path]`: a bench target is one file).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Poll `done` until it holds, failing after `limit`.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let t0 = Instant::now();
    while !done() {
        if t0.elapsed() > limit {
            bail!("gave up after {limit:?}");
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(())
}

pub fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// Time the thread `tid` of this process has spent on a CPU (schedstat).
pub fn thread_cpu(tid: u32) -> Result<Duration> {
    let path = format!("/proc/self/task/{tid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unexpected {path}: {text:?}"))?;
    Ok(Duration::from_nanos(ns))
}

/// The thread of this process named `name` (cut at 15 bytes, as the
/// kernel cuts thread names).
pub fn find_thread(name: &str) -> Result<u32> {
    let name = name.get(..15).unwrap_or(name);
    for entry in std::fs::read_dir("/proc/self/task")? {
        let entry = entry?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name
            && let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok())
        {
            return Ok(tid);
        }
    }
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")?
        .flatten()
        .map(|e| std::fs::read_to_string(e.path().join("comm")).unwrap_or_default())
        .collect();
    bail!("no thread named {name} (threads: {names:?})")
}
