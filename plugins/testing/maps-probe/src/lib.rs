//! Test component: exercises the maps API against the test BPF object's maps
//! (`rw_hash`: hash u32 -> u64; `pcpu`: per-CPU array u32 -> u64) in `init`
//! and reports each result as an unlabelled gauge:
//!
//! | gauge                    | expected |
//! |--------------------------|----------|
//! | `lookup_42`              | 420 (-1 if absent) |
//! | `removed`                | 10       |
//! | `keys_seen`              | 90       |
//! | `sum_of_values`          | 49950    |
//! | `create_existing_failed` | 1        |
//! | `pcpu_cpus`              | possible CPUs |
//! | `sum_of_pcpu`            | 7 x possible CPUs |
//! | `rw_key_size`            | 4        |
//! | `rw_value_size`          | 8        |
//! | `wrong_size_rejected`    | 1        |
//!
//! An unexpected failure fails `init` with the SDK's error message.

use conductor_sdk::maps::{MapError, errno};
use conductor_sdk::prelude::*;

struct MapsProbe {
    /// Kept so the host keeps exporting them.
    _gauges: Vec<Gauge>,
}

impl Plugin for MapsProbe {
    fn init() -> Result<Self> {
        let mut gauges = Vec::new();
        let mut report = |name: &str, value: f64| -> Result<()> {
            let gauge = Gauge::declare(name, "Result of a maps API probe.", &[])?;
            gauge.set(&[], value)?;
            gauges.push(gauge);
            Ok(())
        };

        let rw: TypedMap<u32, u64> = TypedMap::open("rw_hash")?;
        for key in 1..=100 {
            rw.insert(&key, &(u64::from(key) * 10))?;
        }
        report("lookup_42", rw.get(&42)?.map_or(-1.0, |v| v as f64))?;

        let mut removed = 0;
        for key in 1..=10 {
            if rw.remove(&key)? {
                removed += 1;
            }
        }
        report("removed", f64::from(removed))?;

        let mut keys_seen = 0u32;
        for key in rw.keys() {
            key?;
            keys_seen += 1;
        }
        report("keys_seen", f64::from(keys_seen))?;

        let mut value_sum = 0;
        for entry in rw.iter() {
            let (_, value) = entry?;
            value_sum += value;
        }
        report("sum_of_values", value_sum as f64)?;

        let create_existing = rw.update(&42, &0, UpdateMode::Create);
        let failed = matches!(&create_existing, Err(e) if e.errno() == Some(errno::EEXIST));
        report("create_existing_failed", f64::from(u8::from(failed)))?;

        let pcpu: TypedMap<u32, u64> = TypedMap::open("pcpu")?;
        pcpu.insert_per_cpu(&0, &vec![7; pcpu.values_per_key()])?;
        let values = pcpu.get_per_cpu(&0)?.unwrap_or_default();
        report("pcpu_cpus", values.len() as f64)?;
        report("sum_of_pcpu", values.iter().sum::<u64>() as f64)?;

        report("rw_key_size", f64::from(rw.info().key_size))?;
        report("rw_value_size", f64::from(rw.info().value_size))?;

        let raw = Map::open("rw_hash")?;
        let wrong_size = raw.lookup(&[0; 2]);
        let rejected =
            matches!(&wrong_size, Err(e) if matches!(e.map_error(), Some(MapError::WrongSize(_))));
        report("wrong_size_rejected", f64::from(u8::from(rejected)))?;

        Ok(MapsProbe { _gauges: gauges })
    }
}

conductor_sdk::export_plugin!(MapsProbe);
