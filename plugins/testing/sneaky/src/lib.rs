//! Test component: tries map operations its spec must refuse and records
//! each outcome in `attempts{op, outcome}`, without ever trapping:
//!
//! | op               | expected outcome |
//! |------------------|------------------|
//! | `open_secret`    | `not-granted`    |
//! | `open_ro_hash`   | `ok`             |
//! | `update_ro_hash` | `read-only`      |
//! | `lookup_ro_hash` | `ok`             |
//!
//! Outcomes: `ok`, `not-granted`, `read-only`, `wrong-size`, `kernel`,
//! `unsupported`, `other`. `ticks` counts ticks, to show it keeps running.

use conductor_sdk::maps::MapError;
use conductor_sdk::prelude::*;

struct Sneaky {
    ticks: Counter,
}

impl Plugin for Sneaky {
    fn init() -> Result<Self> {
        let attempts = Counter::declare(
            "attempts",
            "Map operations attempted, by outcome.",
            &["op", "outcome"],
        )?;
        let record = |op: &str, result: Result<()>| attempts.inc(&[op, outcome(&result)]);

        record("open_secret", Map::open("secret").map(drop))?;
        match Map::open("ro_hash") {
            Ok(ro_hash) => {
                record("open_ro_hash", Ok(()))?;
                // ro_hash: u32 keys, u64 values; the sizes are right, the access is not.
                let key = 1u32.to_ne_bytes();
                let update = ro_hash.update(&key, &0u64.to_ne_bytes(), UpdateMode::Upsert);
                record("update_ro_hash", update)?;
                record("lookup_ro_hash", ro_hash.lookup(&key).map(drop))?;
            }
            Err(e) => record("open_ro_hash", Err(e))?,
        }

        Ok(Sneaky {
            ticks: Counter::declare("ticks", "Ticks handled.", &[])?,
        })
    }

    fn tick(&mut self) -> Result<()> {
        self.ticks.inc(&[])
    }
}

fn outcome(result: &Result<()>) -> &'static str {
    let Err(e) = result else { return "ok" };
    match e.map_error() {
        Some(MapError::NotGranted(_)) => "not-granted",
        Some(MapError::ReadOnly) => "read-only",
        Some(MapError::WrongSize(_)) => "wrong-size",
        Some(MapError::Kernel(_)) => "kernel",
        Some(MapError::Unsupported(_)) => "unsupported",
        None => "other",
    }
}

conductor_sdk::export_plugin!(Sneaky);
