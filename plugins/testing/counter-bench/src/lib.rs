//! Benchmark component (`benches/metrics.rs`, `benches/scale.rs`): each
//! `tick` adds 1 to counter `hits{comm}` `increments` times (config, default
//! 10000), cycling over 16 label values as an exec counter sees a handful of
//! commands. With config `series` = N, `init` first creates N series
//! `hits{comm="s<i>"}` (one increment each), for scrapes of many series.

use conductor_sdk::prelude::*;

const COMMS: [&str; 16] = [
    "bash", "ls", "git", "cat", "grep", "sed", "awk", "curl", "ssh", "make", "cc", "ld", "rustc",
    "cargo", "python3", "node",
];

struct Bench {
    increments: usize,
    hits: Counter,
}

impl Plugin for Bench {
    fn init() -> Result<Self> {
        let hits = Counter::declare("hits", "Increments recorded.", &["comm"])?;
        let series: usize = config::parse("series")?.unwrap_or(0);
        for i in 0..series {
            hits.inc(&[&format!("s{i}")])?;
        }
        Ok(Bench {
            increments: config::parse("increments")?.unwrap_or(10_000),
            hits,
        })
    }

    fn tick(&mut self) -> Result<()> {
        for i in 0..self.increments {
            self.hits.inc(&[COMMS[i % COMMS.len()]])?;
        }
        Ok(())
    }
}

conductor_sdk::export_plugin!(Bench);
