//! `conductor:plugin/metrics`: counters, gauges and histograms a plugin
//! declares and records. The registry behind them (names, label checks,
//! the cardinality limit, exposition) is the node's; this module only
//! turns WIT calls into backend calls and backend errors into WIT errors.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::WResult;
use crate::StoreData;
use crate::bindings::conductor::plugin::metrics;

/// Why a metric could not be declared or recorded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricError {
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{actual} label values given, the metric declares {expected} labels")]
    WrongLabelCount { expected: u32, actual: u32 },
    #[error("{0}")]
    InvalidBuckets(String),
    #[error("the metric holds its limit of {0} label sets; sample dropped")]
    CardinalityLimit(u32),
}

/// A declared counter: one series per label-value list.
pub trait CounterSeries: Send + Sync {
    fn add(&self, values: Vec<String>, delta: u64) -> Result<(), MetricError>;
    /// The series with `values`, created (exported at 0) if there is room
    /// for it: the same checks as a first [`add`](Self::add), done once.
    fn bind(&self, values: Vec<String>) -> Result<Arc<dyn BoundCounter>, MetricError>;
}

/// One series of a counter, bound to its label values: adding to it finds
/// nothing and checks nothing.
pub trait BoundCounter: Send + Sync {
    fn add(&self, delta: u64);
}

/// A declared gauge.
pub trait GaugeSeries: Send + Sync {
    fn set(&self, values: Vec<String>, value: f64) -> Result<(), MetricError>;
    fn add(&self, values: Vec<String>, delta: f64) -> Result<(), MetricError>;
}

/// A declared histogram.
pub trait HistogramSeries: Send + Sync {
    fn observe(&self, values: Vec<String>, value: f64) -> Result<(), MetricError>;
}

/// Where one plugin's metrics are declared. Declaring a metric again with
/// the same description returns the same metric (how a restarted plugin
/// gets its series back).
pub trait MetricsBackend: Send + Sync {
    fn counter(
        &self,
        name: &str,
        help: &str,
        labels: Vec<String>,
    ) -> Result<Arc<dyn CounterSeries>, MetricError>;
    fn gauge(
        &self,
        name: &str,
        help: &str,
        labels: Vec<String>,
    ) -> Result<Arc<dyn GaugeSeries>, MetricError>;
    fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: Vec<String>,
        buckets: Vec<f64>,
    ) -> Result<Arc<dyn HistogramSeries>, MetricError>;
}

pub type CounterResource = Arc<dyn CounterSeries>;
/// A `counter-series`: what [`CounterSeries::bind`] returned.
pub type SeriesResource = Arc<dyn BoundCounter>;
pub type GaugeResource = Arc<dyn GaugeSeries>;
pub type HistogramResource = Arc<dyn HistogramSeries>;

fn metric_error(e: MetricError) -> metrics::MetricError {
    match e {
        MetricError::InvalidName(m) => metrics::MetricError::InvalidName(m),
        MetricError::Conflict(m) => metrics::MetricError::Conflict(m),
        MetricError::WrongLabelCount { expected, actual } => {
            metrics::MetricError::WrongLabelCount(metrics::WrongLabelCount { expected, actual })
        }
        MetricError::InvalidBuckets(m) => metrics::MetricError::InvalidBuckets(m),
        MetricError::CardinalityLimit(n) => metrics::MetricError::CardinalityLimit(n),
    }
}

impl metrics::Host for StoreData {}

impl metrics::HostCounter for StoreData {
    fn declare(
        &mut self,
        d: metrics::MetricDesc,
    ) -> WResult<Result<Resource<CounterResource>, metrics::MetricError>> {
        match self.host.metrics.counter(&d.name, &d.help, d.labels) {
            Ok(f) => Ok(Ok(self.table.push(f)?)),
            Err(e) => Ok(Err(metric_error(e))),
        }
    }

    fn add(
        &mut self,
        r: Resource<CounterResource>,
        values: Vec<String>,
        delta: u64,
    ) -> WResult<Result<(), metrics::MetricError>> {
        Ok(self.table.get(&r)?.add(values, delta).map_err(metric_error))
    }

    fn series(
        &mut self,
        r: Resource<CounterResource>,
        values: Vec<String>,
    ) -> WResult<Result<Resource<SeriesResource>, metrics::MetricError>> {
        match self.table.get(&r)?.bind(values) {
            Ok(series) => Ok(Ok(self.table.push(series)?)),
            Err(e) => Ok(Err(metric_error(e))),
        }
    }

    fn drop(&mut self, r: Resource<CounterResource>) -> WResult<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl metrics::HostCounterSeries for StoreData {
    fn add(&mut self, r: Resource<SeriesResource>, delta: u64) -> WResult<()> {
        self.table.get(&r)?.add(delta);
        Ok(())
    }

    fn drop(&mut self, r: Resource<SeriesResource>) -> WResult<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl metrics::HostGauge for StoreData {
    fn declare(
        &mut self,
        d: metrics::MetricDesc,
    ) -> WResult<Result<Resource<GaugeResource>, metrics::MetricError>> {
        match self.host.metrics.gauge(&d.name, &d.help, d.labels) {
            Ok(f) => Ok(Ok(self.table.push(f)?)),
            Err(e) => Ok(Err(metric_error(e))),
        }
    }

    fn set(
        &mut self,
        r: Resource<GaugeResource>,
        values: Vec<String>,
        value: f64,
    ) -> WResult<Result<(), metrics::MetricError>> {
        Ok(self.table.get(&r)?.set(values, value).map_err(metric_error))
    }

    fn add(
        &mut self,
        r: Resource<GaugeResource>,
        values: Vec<String>,
        delta: f64,
    ) -> WResult<Result<(), metrics::MetricError>> {
        Ok(self.table.get(&r)?.add(values, delta).map_err(metric_error))
    }

    fn drop(&mut self, r: Resource<GaugeResource>) -> WResult<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl metrics::HostHistogram for StoreData {
    fn declare(
        &mut self,
        d: metrics::MetricDesc,
        buckets: Vec<f64>,
    ) -> WResult<Result<Resource<HistogramResource>, metrics::MetricError>> {
        match self
            .host
            .metrics
            .histogram(&d.name, &d.help, d.labels, buckets)
        {
            Ok(f) => Ok(Ok(self.table.push(f)?)),
            Err(e) => Ok(Err(metric_error(e))),
        }
    }

    fn observe(
        &mut self,
        r: Resource<HistogramResource>,
        values: Vec<String>,
        value: f64,
    ) -> WResult<Result<(), metrics::MetricError>> {
        Ok(self
            .table
            .get(&r)?
            .observe(values, value)
            .map_err(metric_error))
    }

    fn drop(&mut self, r: Resource<HistogramResource>) -> WResult<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

/// An in-memory [`MetricsBackend`] for tests: it records every sample.
#[cfg(test)]
pub mod fake {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// Values by metric name, then label values.
    type Samples = Arc<Mutex<BTreeMap<String, BTreeMap<Vec<String>, f64>>>>;

    /// What was recorded, by metric name, then label values.
    #[derive(Default)]
    pub struct FakeMetrics {
        pub samples: Samples,
        /// Label names by metric name, as declared.
        pub declared: Mutex<BTreeMap<String, Vec<String>>>,
        /// Series per metric before `CardinalityLimit` (0: no limit).
        pub max_series: usize,
    }

    struct Series {
        name: String,
        labels: usize,
        max_series: usize,
        samples: Samples,
    }

    impl Series {
        fn record(&self, values: Vec<String>, f: impl FnOnce(&mut f64)) -> Result<(), MetricError> {
            if values.len() != self.labels {
                return Err(MetricError::WrongLabelCount {
                    expected: self.labels as u32,
                    actual: values.len() as u32,
                });
            }
            let mut all = self.samples.lock().unwrap_or_else(|e| e.into_inner());
            let series = all.entry(self.name.clone()).or_default();
            if self.max_series > 0
                && !series.contains_key(&values)
                && series.len() >= self.max_series
            {
                return Err(MetricError::CardinalityLimit(self.max_series as u32));
            }
            f(series.entry(values).or_default());
            Ok(())
        }
    }

    impl CounterSeries for Series {
        fn add(&self, values: Vec<String>, delta: u64) -> Result<(), MetricError> {
            self.record(values, |v| *v += delta as f64)
        }
        fn bind(&self, values: Vec<String>) -> Result<Arc<dyn BoundCounter>, MetricError> {
            self.record(values.clone(), |_| {})?;
            Ok(Arc::new(Bound {
                name: self.name.clone(),
                values,
                samples: self.samples.clone(),
            }))
        }
    }

    struct Bound {
        name: String,
        values: Vec<String>,
        samples: Samples,
    }

    impl BoundCounter for Bound {
        fn add(&self, delta: u64) {
            let mut all = self.samples.lock().unwrap_or_else(|e| e.into_inner());
            let series = all.entry(self.name.clone()).or_default();
            *series.entry(self.values.clone()).or_default() += delta as f64;
        }
    }
    impl GaugeSeries for Series {
        fn set(&self, values: Vec<String>, value: f64) -> Result<(), MetricError> {
            self.record(values, |v| *v = value)
        }
        fn add(&self, values: Vec<String>, delta: f64) -> Result<(), MetricError> {
            self.record(values, |v| *v += delta)
        }
    }
    impl HistogramSeries for Series {
        /// Records the sum of observations.
        fn observe(&self, values: Vec<String>, value: f64) -> Result<(), MetricError> {
            self.record(values, |v| *v += value)
        }
    }

    impl FakeMetrics {
        fn series(&self, name: &str, labels: Vec<String>) -> Result<Arc<Series>, MetricError> {
            if name.is_empty() {
                return Err(MetricError::InvalidName("empty metric name".into()));
            }
            let mut declared = self.declared.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(existing) = declared.get(name)
                && *existing != labels
            {
                return Err(MetricError::Conflict(format!(
                    "{name} declared with other labels"
                )));
            }
            declared.insert(name.to_owned(), labels.clone());
            Ok(Arc::new(Series {
                name: name.to_owned(),
                labels: labels.len(),
                max_series: self.max_series,
                samples: self.samples.clone(),
            }))
        }

        /// The value of one series, if it was recorded.
        pub fn value(&self, name: &str, values: &[&str]) -> Option<f64> {
            let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
            self.samples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(name)?
                .get(&values)
                .copied()
        }
    }

    impl MetricsBackend for FakeMetrics {
        fn counter(
            &self,
            name: &str,
            _help: &str,
            labels: Vec<String>,
        ) -> Result<Arc<dyn CounterSeries>, MetricError> {
            Ok(self.series(name, labels)?)
        }
        fn gauge(
            &self,
            name: &str,
            _help: &str,
            labels: Vec<String>,
        ) -> Result<Arc<dyn GaugeSeries>, MetricError> {
            Ok(self.series(name, labels)?)
        }
        fn histogram(
            &self,
            name: &str,
            _help: &str,
            labels: Vec<String>,
            buckets: Vec<f64>,
        ) -> Result<Arc<dyn HistogramSeries>, MetricError> {
            if buckets.is_empty() {
                return Err(MetricError::InvalidBuckets("no buckets".into()));
            }
            Ok(self.series(name, labels)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::fake::FakeMetrics;
    use super::*;
    use crate::host::test_store;
    use metrics::{HostCounter, HostCounterSeries, HostGauge, HostHistogram};

    fn desc(name: &str, labels: &[&str]) -> metrics::MetricDesc {
        metrics::MetricDesc {
            name: name.into(),
            help: "help".into(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    fn store(backend: Arc<FakeMetrics>) -> StoreData {
        test_store(crate::PluginHost::new(
            "p",
            BTreeMap::new(),
            HashMap::new(),
            backend,
        ))
    }

    fn values(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn samples_reach_the_backend_through_each_kind_of_metric() {
        let backend = Arc::new(FakeMetrics::default());
        let mut s = store(backend.clone());
        let c = HostCounter::declare(&mut s, desc("execs", &["comm"]))
            .unwrap()
            .unwrap();
        let c2 = Resource::<CounterResource>::new_borrow(c.rep());
        HostCounter::add(&mut s, c, values(&["ls"]), 2)
            .unwrap()
            .unwrap();
        HostCounter::add(&mut s, c2, values(&["ls"]), 3)
            .unwrap()
            .unwrap();
        let g = HostGauge::declare(&mut s, desc("depth", &[]))
            .unwrap()
            .unwrap();
        let g2 = Resource::<GaugeResource>::new_borrow(g.rep());
        HostGauge::set(&mut s, g, vec![], 7.5).unwrap().unwrap();
        HostGauge::add(&mut s, g2, vec![], -0.5).unwrap().unwrap();
        let h = HostHistogram::declare(&mut s, desc("lat", &["op"]), vec![1.0, 2.0])
            .unwrap()
            .unwrap();
        HostHistogram::observe(&mut s, h, values(&["read"]), 1.5)
            .unwrap()
            .unwrap();
        assert_eq!(backend.value("execs", &["ls"]), Some(5.0));
        assert_eq!(backend.value("depth", &[]), Some(7.0));
        assert_eq!(backend.value("lat", &["read"]), Some(1.5));
    }

    #[test]
    fn bound_series_add_to_their_label_set_and_bind_with_adds_checks() {
        let backend = Arc::new(FakeMetrics {
            max_series: 2,
            ..FakeMetrics::default()
        });
        let mut s = store(backend.clone());
        let c = HostCounter::declare(&mut s, desc("execs", &["comm"]))
            .unwrap()
            .unwrap();
        let rep = c.rep();
        let bind = |s: &mut StoreData, v: &[&str]| {
            HostCounter::series(s, Resource::new_borrow(rep), values(v)).unwrap()
        };
        let ls = bind(&mut s, &["ls"]).unwrap();
        // Exported from the moment it is bound.
        assert_eq!(backend.value("execs", &["ls"]), Some(0.0));
        let ls2 = Resource::<SeriesResource>::new_borrow(ls.rep());
        HostCounterSeries::add(&mut s, ls, 2).unwrap();
        HostCounterSeries::add(&mut s, ls2, 3).unwrap();
        // Binding and adding by label values reach the same series.
        HostCounter::add(&mut s, Resource::new_borrow(rep), values(&["ls"]), 1)
            .unwrap()
            .unwrap();
        assert_eq!(backend.value("execs", &["ls"]), Some(6.0));
        assert!(matches!(
            bind(&mut s, &["a", "extra"]),
            Err(metrics::MetricError::WrongLabelCount(
                metrics::WrongLabelCount {
                    expected: 1,
                    actual: 2
                }
            ))
        ));
        bind(&mut s, &["cat"]).unwrap();
        assert!(matches!(
            bind(&mut s, &["sed"]),
            Err(metrics::MetricError::CardinalityLimit(2))
        ));
        // The series already there can still be bound again.
        bind(&mut s, &["ls"]).unwrap();
    }

    #[test]
    fn backend_refusals_become_typed_wit_errors_not_traps() {
        let backend = Arc::new(FakeMetrics {
            max_series: 1,
            ..FakeMetrics::default()
        });
        let mut s = store(backend);
        let c = HostCounter::declare(&mut s, desc("execs", &["comm"]))
            .unwrap()
            .unwrap();
        let rep = c.rep();
        let add = |s: &mut StoreData, v: &[&str]| {
            HostCounter::add(s, Resource::new_borrow(rep), values(v), 1).unwrap()
        };
        assert!(matches!(
            add(&mut s, &["a", "extra"]),
            Err(metrics::MetricError::WrongLabelCount(
                metrics::WrongLabelCount {
                    expected: 1,
                    actual: 2
                }
            ))
        ));
        add(&mut s, &["a"]).unwrap();
        assert!(matches!(
            add(&mut s, &["b"]),
            Err(metrics::MetricError::CardinalityLimit(1))
        ));
        assert!(matches!(
            HostCounter::declare(&mut s, desc("execs", &["other"])).unwrap(),
            Err(metrics::MetricError::Conflict(_))
        ));
        assert!(matches!(
            HostHistogram::declare(&mut s, desc("lat", &[]), vec![]).unwrap(),
            Err(metrics::MetricError::InvalidBuckets(_))
        ));
        assert!(matches!(
            HostGauge::declare(&mut s, desc("", &[])).unwrap(),
            Err(metrics::MetricError::InvalidName(_))
        ));
    }
}
