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

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;

use crate::bindings::conductor::plugin::metrics as raw;
use crate::error::{Result, ResultExt};
use crate::workload::Workload;

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
        self.add_by(key, delta, |counter, _| {
            let values: Vec<V::Item> = labels().into_iter().collect();
            let refs: Vec<&str> = values.iter().map(AsRef::as_ref).collect();
            counter.series(&refs)
        })
    }

    /// [`add`](Self::add) with the series bound by `bind` on a miss.
    fn add_by<B>(&mut self, key: K, delta: u64, bind: B) -> Result<()>
    where
        B: FnOnce(&Counter, &K) -> Result<CounterSeries>,
    {
        if let Some(series) = self.series.get(&key) {
            series.add(delta);
            return Ok(());
        }
        let series = bind(&self.counter, &key);
        match series {
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

/// A counter whose series are kept by a typed key that is also its label
/// set: each key type gives `N` label values ([`LabelSet`]), declared with
/// `N` label names, so a key that does not match the declared labels is a
/// compile error rather than a runtime one.
///
/// Counting is one hash lookup in the plugin's memory (see
/// [`SeriesCache`]); a key's label values are built only the first time it
/// is seen. The cardinality limit is handled: samples of new keys are
/// dropped (the host counts them in
/// `conductor_plugin_series_dropped_total`), one warning is logged, and the
/// known keys go on counting.
///
/// ```no_run
/// use conductor_sdk::k8s::Workload;
/// use conductor_sdk::metrics::CounterFamily;
///
/// # fn main() -> conductor_sdk::Result<()> {
/// // A command name (a C string field) and a workload: 1 + 3 labels.
/// let mut execs: CounterFamily<([u8; 16], Workload), 4> = CounterFamily::declare(
///     "execs",
///     "Processes executed.",
///     ["comm", "namespace", "pod", "container"],
/// )?;
/// # let (comm, cgroup_id) = (*b"bash\0\0\0\0\0\0\0\0\0\0\0\0", 1);
/// execs.inc((comm, Workload::of_cgroup(cgroup_id)))?;
/// # Ok(()) }
/// ```
///
/// Three label names for that key do not compile:
///
/// ```compile_fail
/// # use conductor_sdk::{k8s::Workload, metrics::CounterFamily};
/// let execs: CounterFamily<([u8; 16], Workload), 3> =
///     CounterFamily::declare("execs", "", ["namespace", "pod", "container"]).unwrap();
/// ```
#[derive(Debug)]
pub struct CounterFamily<K, const N: usize> {
    cache: SeriesCache<K>,
}

impl<K: LabelSet<N>, const N: usize> CounterFamily<K, N> {
    /// Declares the counter with these `labels` (see [`Counter::declare`]).
    pub fn declare(name: &str, help: &str, labels: [&str; N]) -> Result<Self> {
        Ok(CounterFamily {
            cache: SeriesCache::new(Counter::declare(name, help, &labels)?),
        })
    }

    /// Adds `delta` to the series of `key`.
    pub fn add(&mut self, key: K, delta: u64) -> Result<()> {
        self.cache.add_by(key, delta, |counter, key| {
            let values = key.label_values();
            counter.series(&values.each_ref().map(|v| v.as_ref()))
        })
    }

    /// Adds one to the series of `key`.
    pub fn inc(&mut self, key: K) -> Result<()> {
        self.add(key, 1)
    }

    /// How many keys have a bound series.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// True if no key has a bound series yet.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The counter.
    pub fn counter(&self) -> &Counter {
        self.cache.counter()
    }
}

/// One label value: strings as they are, integers and `bool` in decimal
/// and `true`/`false`, byte arrays as C strings (up to the first NUL,
/// invalid UTF-8 replaced, see [`c_str`](crate::events::c_str)).
pub trait Label {
    /// The value.
    fn label(&self) -> Cow<'_, str>;
}

/// A key of `N` label values, in the order the metric declares its labels:
/// a [`Label`] (1), a [`Workload`] (3: namespace, pod, container), and
/// tuples of them: `(A, B)`, `(A, B, C)`, `(A, Workload)`,
/// `(A, B, Workload)`, where `A`, `B`, `C` are [`Label`]s.
pub trait LabelSet<const N: usize>: Eq + Hash {
    /// The label values.
    fn label_values(&self) -> [Cow<'_, str>; N];
}

impl Label for str {
    fn label(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl Label for String {
    fn label(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl Label for Box<str> {
    fn label(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl<T: Label + ?Sized> Label for &T {
    fn label(&self) -> Cow<'_, str> {
        (**self).label()
    }
}

impl<const M: usize> Label for [u8; M] {
    fn label(&self) -> Cow<'_, str> {
        crate::events::c_str(self)
    }
}

macro_rules! display_labels {
    ($($t:ty),*) => {$(
        impl Label for $t {
            fn label(&self) -> Cow<'_, str> {
                Cow::Owned(self.to_string())
            }
        }
    )*};
}

display_labels!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, bool, char
);

impl<A: Label + Eq + Hash> LabelSet<1> for A {
    fn label_values(&self) -> [Cow<'_, str>; 1] {
        [self.label()]
    }
}

impl LabelSet<3> for Workload {
    fn label_values(&self) -> [Cow<'_, str>; 3] {
        self.labels().map(Cow::Borrowed)
    }
}

impl<A: Label + Eq + Hash, B: Label + Eq + Hash> LabelSet<2> for (A, B) {
    fn label_values(&self) -> [Cow<'_, str>; 2] {
        [self.0.label(), self.1.label()]
    }
}

impl<A, B, C> LabelSet<3> for (A, B, C)
where
    A: Label + Eq + Hash,
    B: Label + Eq + Hash,
    C: Label + Eq + Hash,
{
    fn label_values(&self) -> [Cow<'_, str>; 3] {
        [self.0.label(), self.1.label(), self.2.label()]
    }
}

impl<A: Label + Eq + Hash> LabelSet<4> for (A, Workload) {
    fn label_values(&self) -> [Cow<'_, str>; 4] {
        let [ns, pod, container] = self.1.labels();
        [self.0.label(), ns.into(), pod.into(), container.into()]
    }
}

impl<A: Label + Eq + Hash, B: Label + Eq + Hash> LabelSet<5> for (A, B, Workload) {
    fn label_values(&self) -> [Cow<'_, str>; 5] {
        let [ns, pod, container] = self.2.labels();
        [
            self.0.label(),
            self.1.label(),
            ns.into(),
            pod.into(),
            container.into(),
        ]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn values<K: LabelSet<N>, const N: usize>(key: &K) -> [String; N] {
        key.label_values().map(Cow::into_owned)
    }

    #[test]
    fn label_sets_give_one_value_per_declared_label() {
        assert_eq!(values(b"bash\0\0\0\0"), ["bash"]);
        assert_eq!(values(&"x".to_owned()), ["x"]);
        assert_eq!(values(&(7u32, true)), ["7", "true"]);
        assert_eq!(values(&(*b"sh\0\0", -1i64, 'c')), ["sh", "-1", "c"]);
    }
}
