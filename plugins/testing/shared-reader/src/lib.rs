//! Test component: reads the map granted as `shared` (hash u32 -> u64,
//! exposed by another plugin) at every scrape, and reports
//!
//! - `keys`: entries in the map,
//! - `sum`: the sum of their values,
//! - `write_refused`: 1 if inserting key 0 was refused (the grant is
//!   read-only), 0 if it succeeded.

use conductor_sdk::prelude::*;

struct SharedReader {
    keys: Gauge,
    sum: Gauge,
    map: TypedMap<u32, u64>,
}

impl Plugin for SharedReader {
    fn init() -> Result<Self> {
        let map: TypedMap<u32, u64> = TypedMap::open("shared")?;
        let refused = Gauge::declare("write_refused", "Whether a write was refused.", &[])?;
        refused.set(&[], f64::from(u8::from(map.insert(&0, &0).is_err())))?;
        // A write that went through is undone, so `keys` and `sum` show
        // only the owner's entries.
        let _ = map.remove(&0);
        Ok(SharedReader {
            keys: Gauge::declare("keys", "Entries in the shared map.", &[])?,
            sum: Gauge::declare("sum", "Sum of the shared map's values.", &[])?,
            map,
        })
    }

    fn collect(&mut self) -> Result<()> {
        let (mut keys, mut sum) = (0u64, 0u64);
        for entry in self.map.iter() {
            let (_, value) = entry?;
            keys += 1;
            sum += value;
        }
        self.keys.set(&[], keys as f64)?;
        self.sum.set(&[], sum as f64)
    }
}

conductor_sdk::export_plugin!(SharedReader);
