//! Test component: tries, in `init`, every path of config `read` (comma
//! separated) with a whole-file read, every path of `list` with a directory
//! listing, and every path of `write` with a create-and-write, and reports
//! each outcome as a gauge (`read_bytes`, `list_entries`: the size or count,
//! -1 if refused; `write_ok`: 1 or 0) and each refusal in the log.

use conductor_sdk::prelude::*;

struct FsProbe;

fn paths(key: &str) -> Vec<String> {
    config::get(key)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Plugin for FsProbe {
    fn init() -> Result<Self> {
        let read = Gauge::declare(
            "read_bytes",
            "Bytes read from the path, -1 if refused.",
            &["path"],
        )?;
        for p in paths("read") {
            let v = match std::fs::read(&p) {
                Ok(bytes) => bytes.len() as f64,
                Err(e) => {
                    info!("read {p}: {e}");
                    -1.0
                }
            };
            read.set(&[&p], v)?;
        }
        let list = Gauge::declare(
            "list_entries",
            "Entries listed in the directory, -1 if refused.",
            &["path"],
        )?;
        for p in paths("list") {
            let v = match std::fs::read_dir(&p) {
                Ok(entries) => entries.count() as f64,
                Err(e) => {
                    info!("list {p}: {e}");
                    -1.0
                }
            };
            list.set(&[&p], v)?;
        }
        let write = Gauge::declare("write_ok", "1 if the path could be written.", &["path"])?;
        for p in paths("write") {
            let v = match std::fs::write(&p, b"written by fs-probe") {
                Ok(()) => 1.0,
                Err(e) => {
                    info!("write {p}: {e}");
                    0.0
                }
            };
            write.set(&[&p], v)?;
        }
        Ok(FsProbe)
    }
}

conductor_sdk::export_plugin!(FsProbe);
