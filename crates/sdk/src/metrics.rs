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
