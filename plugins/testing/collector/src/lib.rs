//! Test component for the collect hook. Config `mode`:
//! - `slow`: each `collect` sleeps `delayMs` (default 5000), then sets gauge
//!   `collected` to the number of collects finished;
//! - `error`: each `collect` returns an error;
//! - anything else: `collect` sets `collected` at once.
//!
//! `collected` is 0 from `init`, so a scrape that did not wait for a slow
//! collect shows 0: the plugin's last values.
//!
//! Config `series` (default 0): `init` adds 1 to counter `labelled{n}` for
//! n in 0..series, and reports the samples the host refused with the typed
//! cardinality error in gauge `capped`, and the limit it named in `cap_limit`.

use std::time::Duration;

use conductor_sdk::metrics::MetricError;
use conductor_sdk::prelude::*;

struct Collector {
    mode: String,
    delay: Duration,
    done: u32,
    collected: Gauge,
}

impl Plugin for Collector {
    fn init() -> Result<Self> {
        let collected = Gauge::declare("collected", "Collect calls finished.", &[])?;
        collected.set(&[], 0.0)?;
        let series: u32 = config::parse("series")?.unwrap_or(0);
        if series > 0 {
            let labelled = Counter::declare("labelled", "One sample per label value.", &["n"])?;
            let (mut capped, mut limit) = (0u32, 0u32);
            for n in 0..series {
                match labelled.inc(&[&n.to_string()]) {
                    Ok(()) => {}
                    Err(e) => match e.metric_error() {
                        Some(MetricError::CardinalityLimit(l)) => {
                            capped += 1;
                            limit = *l;
                        }
                        _ => return Err(e),
                    },
                }
            }
            Gauge::declare("capped", "Samples refused by the cardinality cap.", &[])?
                .set(&[], f64::from(capped))?;
            Gauge::declare("cap_limit", "The limit the refusal named.", &[])?
                .set(&[], f64::from(limit))?;
        }
        Ok(Collector {
            mode: config::get("mode").unwrap_or_default(),
            delay: Duration::from_millis(config::parse("delayMs")?.unwrap_or(5000)),
            done: 0,
            collected,
        })
    }

    fn collect(&mut self) -> Result<()> {
        match self.mode.as_str() {
            "error" => return Err(Error::msg("collect failed on purpose")),
            "slow" => std::thread::sleep(self.delay),
            _ => {}
        }
        self.done += 1;
        self.collected.set(&[], f64::from(self.done))
    }
}

conductor_sdk::export_plugin!(Collector);
