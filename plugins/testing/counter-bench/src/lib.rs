//! Benchmark component (`benches/metrics.rs`, `benches/scale.rs`): each
//! `tick` adds 1 to counter `hits{comm}` `increments` times (config, default
//! 10000), cycling over 16 label values as an exec counter sees a handful of
//! commands. With config `series` = N, `init` first creates N series
//! `hits{comm="s<i>"}` (one increment each), for scrapes of many series.
//!
//! Config `api` chooses how an increment is recorded:
//! - `labels` (default): `Counter::inc` with the label values, one host
//!   call per increment;
//! - `cache`: a `SeriesCache` by command name, series bound on first use
//!   (a hash lookup in the plugin and a local add per increment, one host
//!   call per series when the tick returns);
//! - `host-call`: series bound in `init`, and each increment handed to the
//!   host at once (`CounterSeries::add` then `metrics::flush`): the cost of
//!   one host call without strings.

use conductor_sdk::metrics;
use conductor_sdk::prelude::*;

const COMMS: [&str; 16] = [
    "bash", "ls", "git", "cat", "grep", "sed", "awk", "curl", "ssh", "make", "cc", "ld", "rustc",
    "cargo", "python3", "node",
];

enum Api {
    Labels(Counter),
    Cache(SeriesCache<&'static str>),
    HostCall(Vec<CounterSeries>),
}

struct Bench {
    increments: usize,
    api: Api,
}

impl Plugin for Bench {
    fn init() -> Result<Self> {
        let hits = Counter::declare("hits", "Increments recorded.", &["comm"])?;
        let series: usize = config::parse("series")?.unwrap_or(0);
        for i in 0..series {
            hits.inc(&[&format!("s{i}")])?;
        }
        let api = match config::get("api").as_deref() {
            None | Some("labels") => Api::Labels(hits),
            Some("cache") => Api::Cache(SeriesCache::new(hits)),
            Some("host-call") => Api::HostCall(
                COMMS
                    .iter()
                    .map(|c| hits.series(&[c]))
                    .collect::<Result<_>>()?,
            ),
            Some(other) => {
                return Err(Error::msg(format!(
                    "config api: {other:?} is none of labels, cache, host-call"
                )));
            }
        };
        Ok(Bench {
            increments: config::parse("increments")?.unwrap_or(10_000),
            api,
        })
    }

    fn tick(&mut self) -> Result<()> {
        match &mut self.api {
            Api::Labels(hits) => {
                for i in 0..self.increments {
                    hits.inc(&[COMMS[i % COMMS.len()]])?;
                }
            }
            Api::Cache(hits) => {
                for i in 0..self.increments {
                    let comm = COMMS[i % COMMS.len()];
                    hits.inc(comm, || [comm])?;
                }
            }
            Api::HostCall(series) => {
                for i in 0..self.increments {
                    series[i % series.len()].inc();
                    metrics::flush();
                }
            }
        }
        Ok(())
    }
}

conductor_sdk::export_plugin!(Bench);
