// Shared by the legacy test components (`include!`d after their bindings,
// next to a `records` function and a `K8S_EXTRA` hook of their own): counts
// the exec_counter BPF object's 40-byte records by command, through the
// 0.1 interfaces only.
//
// - `events{comm}`: records received, by the `comm` at bytes 24..40,
// - `bad_records`: records of another size,
// - `lost`: events reported lost,
// - `config_entries`: the number of config entries (gauge),
// - `map_refused`: 1 once opening an ungranted map was refused (gauge),
// - `k8s_calls`: workload lookups made.

use std::cell::RefCell;

use conductor::plugin::{config, k8s, log, maps, metrics};

struct State {
    events: metrics::Counter,
    bad_records: metrics::Counter,
    lost: metrics::Counter,
    k8s_calls: metrics::Counter,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

fn desc(name: &str, help: &str, labels: &[&str]) -> metrics::MetricDesc {
    metrics::MetricDesc {
        name: name.to_owned(),
        help: help.to_owned(),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
    }
}

fn counter(name: &str, help: &str, labels: &[&str]) -> Result<metrics::Counter, String> {
    metrics::Counter::declare(&desc(name, help, labels)).map_err(|e| format!("{name}: {e:?}"))
}

fn comm(record: &[u8]) -> String {
    let comm = record.get(24..40).unwrap_or(&[]);
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

struct Legacy;

impl Guest for Legacy {
    fn init() -> Result<(), String> {
        log::log(log::Level::Info, "legacy component starting", &[]);
        let entries = metrics::Gauge::declare(&desc("config_entries", "Config entries.", &[]))
            .map_err(|e| format!("{e:?}"))?;
        entries
            .set(&[], config::entries().len() as f64)
            .map_err(|e| format!("{e:?}"))?;
        let refused = metrics::Gauge::declare(&desc("map_refused", "Ungranted map refused.", &[]))
            .map_err(|e| format!("{e:?}"))?;
        if let Err(maps::MapError::NotGranted(_)) = maps::BpfMap::open("not_granted") {
            refused.set(&[], 1.0).map_err(|e| format!("{e:?}"))?;
        }
        let state = State {
            events: counter("events", "Records received, by command.", &["comm"])?,
            bad_records: counter("bad_records", "Records not 40 bytes long.", &[])?,
            lost: counter("lost", "Events reported lost.", &[])?,
            k8s_calls: counter("k8s_calls", "Workload lookups made.", &[])?,
        };
        STATE.with(|s| *s.borrow_mut() = Some(state));
        Ok(())
    }

    fn on_events(batch: EventBatch) -> Result<(), String> {
        STATE.with(|s| {
            let s = s.borrow();
            let s = s.as_ref().ok_or("on-events before init")?;
            for record in records(&batch)? {
                if record.len() != 40 {
                    s.bad_records.add(&[], 1).map_err(|e| format!("{e:?}"))?;
                    continue;
                }
                s.events
                    .add(&[comm(record)], 1)
                    .map_err(|e| format!("{e:?}"))?;
                let cgroup = u64::from_ne_bytes(record[..8].try_into().map_err(|_| "short")?);
                let _ = k8s::by_cgroup_id(cgroup);
                K8S_EXTRA(cgroup);
                s.k8s_calls.add(&[], 1).map_err(|e| format!("{e:?}"))?;
            }
            if batch.lost > 0 {
                s.lost.add(&[], batch.lost).map_err(|e| format!("{e:?}"))?;
            }
            Ok(())
        })
    }

    fn tick() -> Result<(), String> {
        Ok(())
    }

    fn collect() -> Result<(), String> {
        Ok(())
    }
}

export!(Legacy);
