//! Metrics the host exports (Prometheus/OpenMetrics, OTLP).
//!
//! Declare each metric once, typically in [`Plugin::init`](crate::Plugin::init),
//! and keep the handle. Names follow Prometheus rules, must not start with `_`,
//! contain `__` or end in `_total`, `_count`, `_sum`, `_bucket`, `_created`,
//! `_info`; the host exports them as `<plugin>__<name>` with a `plugin` label,
//! and counters with a `_total` suffix (do not add one). Label values are passed in the order
//! the label names were declared, as `&[&str]`, so recording a sample does not
//! allocate.
//!
//! Recording fails with [`MetricError::WrongLabelCount`] for the wrong number
//! of label values and with [`MetricError::CardinalityLimit`] when the metric
//! has too many label sets; in the latter case the sample is dropped and the
//! plugin may choose to carry on.
//!
//! # Counting per event
//!
//! [`Counter::add`] passes the label values to the host on every call. On
//! a hot path, bind the series once instead: [`Counter::series`] returns a
//! [`CounterSeries`] whose [`add`](CounterSeries::add) is an addition in
//! the plugin's own memory; the SDK hands each changed series' sum to the
//! host when the call into the plugin (`on_events`, `tick`, ...) returns,
//! one small host call per series, no strings. [`SeriesCache`] keeps the
//! series of one counter by a key of the plugin's choosing and handles the
//! cardinality limit, so that counting an event is one hash lookup:
//!
//! ```rust,ignore
//! // In init: `execs: SeriesCache::new(Counter::declare("execs", "...", &["comm"])?)`
//! for event in batch.decode::<ExecEvent>() {
//!     let event = event?;
//!     self.execs.inc(event.comm, || [c_str(&event.comm)])?;
//! }
//! ```
//!
//! Series bound this way need a host of `conductor:plugin@0.2.1` or later.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;

use crate::bindings::conductor::plugin::metrics as raw;
use crate::error::{Result, ResultExt};

pub use raw::{MetricError, WrongLabelCount};

/// A monotonically increasing count, exported as `<plugin>__<name>_total`.
#[derive(Debug)]
pub struct Counter {
    raw: raw::Counter,
    name: Box<str>,
}

impl Counter {
    /// Declares the counter, or gets the one this plugin already declared
    /// under `name` with the same labels.
    pub fn declare(name: &str, help: &str, labels: &[&str]) -> Result<Counter> {
        raw::Counter::declare(desc(name, help, labels))
            .map(|raw| Counter {
                raw,
                name: name.into(),
            })
            .with_context(|| format!("declaring counter {name:?}"))
    }

    /// Adds `delta` to the series with `label_values`.
    pub fn add(&self, label_values: &[&str], delta: u64) -> Result<()> {
        self.raw
            .add(label_values, delta)
            .with_context(|| format!("counter {:?}", self.name))
    }

    /// Adds one to the series with `label_values`.
    pub fn inc(&self, label_values: &[&str]) -> Result<()> {
        self.add(label_values, 1)
    }

    /// The series with `label_values`, bound once: adding to it passes no
    /// strings (see [the module's docs](self#counting-per-event)). The
    /// series is created, and exported at 0, if there is room for it;
    /// otherwise this fails like [`add`](Self::add) would.
    pub fn series(&self, label_values: &[&str]) -> Result<CounterSeries> {
        self.raw
            .series(label_values)
            .map(|raw| CounterSeries {
                pending: Rc::new(Pending {
                    raw,
                    delta: Cell::new(0),
                }),
            })
            .with_context(|| format!("counter {:?}", self.name))
    }

    /// The counter's name as declared.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One series of a [`Counter`], bound to its label values by
/// [`Counter::series`]. Clones share the series.
///
/// [`add`](Self::add) sums in the plugin's memory; the sum reaches the host
/// when the current call into the plugin returns (or at [`flush`]), so
/// scrapes see a batch's counts once the batch is handled.
#[derive(Debug, Clone)]
pub struct CounterSeries {
    pending: Rc<Pending>,
}

#[derive(Debug)]
struct Pending {
    raw: raw::CounterSeries,
    /// Added since the last flush.
    delta: Cell<u64>,
}

thread_local! {
    /// Series with a pending delta (components are single-threaded).
    static DIRTY: RefCell<Vec<Rc<Pending>>> = const { RefCell::new(Vec::new()) };
}

impl CounterSeries {
    /// Adds `delta` to the series.
    pub fn add(&self, delta: u64) {
        let pending = &self.pending;
        let before = pending.delta.get();
        if before == 0 && delta != 0 {
            DIRTY.with_borrow_mut(|dirty| dirty.push(pending.clone()));
        }
        pending.delta.set(before.saturating_add(delta));
    }

    /// Adds one to the series.
    pub fn inc(&self) {
        self.add(1)
    }
}

/// Hands every bound series' pending sum to the host. The SDK calls it
/// when each call into the plugin returns; call it only to make samples
/// visible in the middle of a long call.
pub fn flush() {
    let dirty = DIRTY.with_borrow_mut(std::mem::take);
    if dirty.is_empty() {
        return;
    }
    for pending in &dirty {
        pending.raw.add(pending.delta.replace(0));
    }
    // Keep the list's allocation for the next call.
    let mut dirty = dirty;
    dirty.clear();
    DIRTY.with_borrow_mut(|d| {
        if d.is_empty() {
            *d = dirty;
        }
    });
}

/// The series of one [`Counter`] by a key of the plugin's choosing (a
/// command name, a cgroup id, a tuple of them), each bound on first use.
///
/// Counting is then one hash lookup in the plugin's memory. When the
/// counter holds its limit of label sets (the spec's
/// `limits.maxSeriesPerMetric`), samples of new keys are dropped (the host
/// counts them in `conductor_plugin_series_dropped_total`), a warning is
/// logged once, and counting the known keys carries on.
#[derive(Debug)]
pub struct SeriesCache<K> {
    counter: Counter,
    series: HashMap<K, CounterSeries>,
    saturated: bool,
}

impl<K: Eq + Hash> SeriesCache<K> {
    /// Series of `counter`, none bound yet.
    pub fn new(counter: Counter) -> Self {
        SeriesCache {
            counter,
            series: HashMap::new(),
            saturated: false,
        }
    }

    /// Adds `delta` to the series of `key`. On first use of `key` its label
    /// values are what `labels()` returns, in the order the counter declares
    /// its labels.
    pub fn add<L, V>(&mut self, key: K, delta: u64, labels: L) -> Result<()>
    where
        L: FnOnce() -> V,
        V: IntoIterator,
        V::Item: AsRef<str>,
    {
        if let Some(series) = self.series.get(&key) {
            series.add(delta);
            return Ok(());
        }
        let values: Vec<V::Item> = labels().into_iter().collect();
        let refs: Vec<&str> = values.iter().map(AsRef::as_ref).collect();
        match self.counter.series(&refs) {
            Ok(series) => {
                series.add(delta);
                self.series.insert(key, series);
                Ok(())
            }
            Err(e) if matches!(e.metric_error(), Some(MetricError::CardinalityLimit(_))) => {
                if !self.saturated {
                    self.saturated = true;
                    crate::warn!("{e}; samples of new label sets are dropped from now on");
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Adds one to the series of `key` (see [`add`](Self::add)).
    pub fn inc<L, V>(&mut self, key: K, labels: L) -> Result<()>
    where
        L: FnOnce() -> V,
        V: IntoIterator,
        V::Item: AsRef<str>,
    {
        self.add(key, 1, labels)
    }

    /// How many keys have a bound series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True if no key has a bound series yet.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Forgets every key's series (they stay exported), for keys whose
    /// labels may change, such as a cgroup's workload.
    pub fn clear(&mut self) {
        self.series.clear();
    }

    /// The counter.
    pub fn counter(&self) -> &Counter {
        &self.counter
    }
}

/// A value that goes up and down.
#[derive(Debug)]
pub struct Gauge {
    raw: raw::Gauge,
    name: Box<str>,
}

impl Gauge {
    /// Declares the gauge, or gets the one this plugin already declared
    /// under `name` with the same labels.
    pub fn declare(name: &str, help: &str, labels: &[&str]) -> Result<Gauge> {
        raw::Gauge::declare(desc(name, help, labels))
            .map(|raw| Gauge {
                raw,
                name: name.into(),
            })
            .with_context(|| format!("declaring gauge {name:?}"))
    }

    /// Sets the series with `label_values` to `value`.
    pub fn set(&self, label_values: &[&str], value: f64) -> Result<()> {
        self.raw
            .set(label_values, value)
            .with_context(|| format!("gauge {:?}", self.name))
    }

    /// Adds `delta` (which may be negative) to the series with `label_values`.
    pub fn add(&self, label_values: &[&str], delta: f64) -> Result<()> {
        self.raw
            .add(label_values, delta)
            .with_context(|| format!("gauge {:?}", self.name))
    }
}

/// A distribution of observed values in fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    raw: raw::Histogram,
    name: Box<str>,
}

impl Histogram {
    /// Declares the histogram with the upper bounds of its `buckets`
    /// (sorted, finite; the `+Inf` bucket is implicit), or gets the one this
    /// plugin already declared under `name` with the same labels and buckets.
    pub fn declare(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> Result<Histogram> {
        raw::Histogram::declare(desc(name, help, labels), buckets)
            .map(|raw| Histogram {
                raw,
                name: name.into(),
            })
            .with_context(|| format!("declaring histogram {name:?}"))
    }

    /// Records `value` in the series with `label_values`.
    pub fn observe(&self, label_values: &[&str], value: f64) -> Result<()> {
        self.raw
            .observe(label_values, value)
            .with_context(|| format!("histogram {:?}", self.name))
    }
}

fn desc<'a>(name: &'a str, help: &'a str, labels: &'a [&'a str]) -> raw::MetricDesc<'a> {
    raw::MetricDesc { name, help, labels }
}
