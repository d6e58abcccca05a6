//! `conductor:plugin@0.1.x`, kept linkable for components built before 0.2.
//!
//! The bindings are generated from the frozen `crates/sdk/wit/v0.1.0/`; each
//! host trait forwards to the current implementation, converting the
//! (identically shaped) generated types. Resources are the current host
//! types, so a 0.1 plugin's maps and metrics are the very same objects.
//!
//! Two things changed under 0.1.0 without a version bump, and components of
//! both kinds declare `@0.1.0`:
//!
//! - the event batch: first a list of `span` records ([`SpansBatch`]), later
//!   two `u32` lists (the current [`EventBatch`]). The engine type-checks a
//!   0.1 component's `on-events` against both, see [`crate::engine`];
//! - `k8s` grew `pod-label`, `pod-annotations`, `pod-network` and
//!   `cgroup-container-id`: [`add_to_linker`] serves them under the 0.1 name
//!   too, so that components using them still link.

use wasmtime::component::{Linker, Resource};

use crate::EventBatch;
use crate::StoreData;
use crate::bindings::conductor::plugin as current;
use crate::host::maps::MapResource;
use crate::host::metrics::{CounterResource, GaugeResource, HistogramResource};

/// The version of the frozen folder these bindings are generated from.
pub const VERSION: &str = "0.1.0";

/// Generated bindings of `crates/sdk/wit/v0.1.0/`.
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../sdk/wit/v0.1.0",
        with: {
            "conductor:plugin/maps.bpf-map": crate::host::maps::MapResource,
            "conductor:plugin/metrics.counter": crate::host::metrics::CounterResource,
            "conductor:plugin/metrics.gauge": crate::host::metrics::GaugeResource,
            "conductor:plugin/metrics.histogram": crate::host::metrics::HistogramResource,
        },
        imports: { default: trappable },
    });
}

use bindings::conductor::plugin::{config, events, k8s, log, maps, metrics};

type WResult<T> = wasmtime::Result<T>;

/// Link the 0.1 interfaces, next to the current ones, into `linker`.
pub fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    bindings::Plugin::add_to_linker::<_, wasmtime::component::HasSelf<StoreData>>(linker, |s| s)?;
    // The `k8s` functions added under 0.1.0 after it was first published.
    let name = format!("{}/k8s@{VERSION}", conductor_api::wit::PACKAGE);
    let mut k8s = linker.instance(&name)?;
    k8s.func_wrap("pod-label", |mut cx, (uid, key): (String, String)| {
        Ok((current::k8s::Host::pod_label(cx.data_mut(), uid, key)?,))
    })?;
    k8s.func_wrap("pod-annotations", |mut cx, (uid,): (String,)| {
        Ok((current::k8s::Host::pod_annotations(cx.data_mut(), uid)?,))
    })?;
    k8s.func_wrap("pod-network", |mut cx, (uid,): (String,)| {
        Ok((current::k8s::Host::pod_network(cx.data_mut(), uid)?,))
    })?;
    k8s.func_wrap("cgroup-container-id", |mut cx, (id,): (u64,)| {
        Ok((current::k8s::Host::cgroup_container_id(cx.data_mut(), id)?,))
    })?;
    Ok(())
}

/// Where one record lies in a 0.1.0 batch's `data`.
#[derive(Clone, Copy, wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
pub struct Span {
    pub offset: u32,
    pub len: u32,
}

/// The 0.1.0 `event-batch`, borrowing its lists like [`EventBatch`].
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
pub struct SpansBatch<'a> {
    pub source: &'a str,
    pub data: &'a [u8],
    pub spans: &'a [Span],
    pub lost: u64,
}

pub(crate) type OnEventsSpans<'a> =
    wasmtime::component::TypedFunc<(SpansBatch<'a>,), (Result<(), String>,)>;

/// The spans of `batch`. The legacy path pays for this copy (and for
/// lowering a list of records, a call per element); current components
/// take the two lists as they are.
pub(crate) fn spans(batch: &EventBatch<'_>) -> Vec<Span> {
    batch
        .offsets
        .iter()
        .zip(batch.lengths)
        .map(|(&offset, &len)| Span { offset, len })
        .collect()
}

impl events::Host for StoreData {}

impl log::Host for StoreData {
    fn log(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> WResult<()> {
        let level = match level {
            log::Level::Trace => current::log::Level::Trace,
            log::Level::Debug => current::log::Level::Debug,
            log::Level::Info => current::log::Level::Info,
            log::Level::Warn => current::log::Level::Warn,
            log::Level::Error => current::log::Level::Error,
        };
        current::log::Host::log(self, level, message, fields)
    }
}

impl config::Host for StoreData {
    fn get(&mut self, key: String) -> WResult<Option<String>> {
        current::config::Host::get(self, key)
    }

    fn entries(&mut self) -> WResult<Vec<(String, String)>> {
        current::config::Host::entries(self)
    }
}

fn map_error(e: current::maps::MapError) -> maps::MapError {
    use current::maps::MapError as E;
    match e {
        E::NotGranted(m) => maps::MapError::NotGranted(m),
        E::ReadOnly => maps::MapError::ReadOnly,
        E::WrongSize(w) => maps::MapError::WrongSize(maps::WrongSize {
            what: w.what,
            expected: w.expected,
            actual: w.actual,
        }),
        E::Unsupported(m) => maps::MapError::Unsupported(m),
        E::Kernel(k) => maps::MapError::Kernel(maps::KernelError {
            errno: k.errno,
            message: k.message,
        }),
    }
}

fn map_kind(k: current::maps::MapKind) -> maps::MapKind {
    use current::maps::MapKind as K;
    match k {
        K::Hash => maps::MapKind::Hash,
        K::Array => maps::MapKind::Array,
        K::PercpuHash => maps::MapKind::PercpuHash,
        K::PercpuArray => maps::MapKind::PercpuArray,
        K::LruHash => maps::MapKind::LruHash,
        K::LruPercpuHash => maps::MapKind::LruPercpuHash,
        K::LpmTrie => maps::MapKind::LpmTrie,
        K::Ringbuf => maps::MapKind::Ringbuf,
        K::PerfEventArray => maps::MapKind::PerfEventArray,
        K::StackTrace => maps::MapKind::StackTrace,
        K::Other(n) => maps::MapKind::Other(n),
    }
}

impl maps::Host for StoreData {}

impl maps::HostBpfMap for StoreData {
    fn open(&mut self, name: String) -> WResult<Result<Resource<MapResource>, maps::MapError>> {
        Ok(current::maps::HostBpfMap::open(self, name)?.map_err(map_error))
    }

    fn info(&mut self, r: Resource<MapResource>) -> WResult<maps::MapInfo> {
        let i = current::maps::HostBpfMap::info(self, r)?;
        Ok(maps::MapInfo {
            name: i.name,
            kind: map_kind(i.kind),
            key_size: i.key_size,
            value_size: i.value_size,
            value_stride: i.value_stride,
            max_entries: i.max_entries,
            values_per_key: i.values_per_key,
            access: match i.access {
                current::maps::Access::Read => maps::Access::Read,
                current::maps::Access::ReadWrite => maps::Access::ReadWrite,
            },
        })
    }

    fn lookup(
        &mut self,
        r: Resource<MapResource>,
        key: Vec<u8>,
    ) -> WResult<Result<Option<Vec<u8>>, maps::MapError>> {
        Ok(current::maps::HostBpfMap::lookup(self, r, key)?.map_err(map_error))
    }

    fn update(
        &mut self,
        r: Resource<MapResource>,
        key: Vec<u8>,
        value: Vec<u8>,
        mode: maps::UpdateMode,
    ) -> WResult<Result<(), maps::MapError>> {
        let mode = match mode {
            maps::UpdateMode::Upsert => current::maps::UpdateMode::Upsert,
            maps::UpdateMode::Create => current::maps::UpdateMode::Create,
            maps::UpdateMode::Replace => current::maps::UpdateMode::Replace,
        };
        Ok(current::maps::HostBpfMap::update(self, r, key, value, mode)?.map_err(map_error))
    }

    fn delete(
        &mut self,
        r: Resource<MapResource>,
        key: Vec<u8>,
    ) -> WResult<Result<bool, maps::MapError>> {
        Ok(current::maps::HostBpfMap::delete(self, r, key)?.map_err(map_error))
    }

    fn keys(
        &mut self,
        r: Resource<MapResource>,
        after: Option<Vec<u8>>,
        max: u32,
    ) -> WResult<Result<Vec<Vec<u8>>, maps::MapError>> {
        Ok(current::maps::HostBpfMap::keys(self, r, after, max)?.map_err(map_error))
    }

    fn entries(
        &mut self,
        r: Resource<MapResource>,
        after: Option<Vec<u8>>,
        max: u32,
    ) -> WResult<Result<Vec<maps::Entry>, maps::MapError>> {
        Ok(current::maps::HostBpfMap::entries(self, r, after, max)?
            .map(|page| {
                page.into_iter()
                    .map(|e| maps::Entry {
                        key: e.key,
                        value: e.value,
                    })
                    .collect()
            })
            .map_err(map_error))
    }

    fn drop(&mut self, r: Resource<MapResource>) -> WResult<()> {
        current::maps::HostBpfMap::drop(self, r)
    }
}

fn metric_error(e: current::metrics::MetricError) -> metrics::MetricError {
    use current::metrics::MetricError as E;
    match e {
        E::InvalidName(m) => metrics::MetricError::InvalidName(m),
        E::Conflict(m) => metrics::MetricError::Conflict(m),
        E::WrongLabelCount(w) => metrics::MetricError::WrongLabelCount(metrics::WrongLabelCount {
            expected: w.expected,
            actual: w.actual,
        }),
        E::InvalidBuckets(m) => metrics::MetricError::InvalidBuckets(m),
        E::CardinalityLimit(n) => metrics::MetricError::CardinalityLimit(n),
    }
}

fn metric_desc(d: metrics::MetricDesc) -> current::metrics::MetricDesc {
    current::metrics::MetricDesc {
        name: d.name,
        help: d.help,
        labels: d.labels,
    }
}

impl metrics::Host for StoreData {}

impl metrics::HostCounter for StoreData {
    fn declare(
        &mut self,
        d: metrics::MetricDesc,
    ) -> WResult<Result<Resource<CounterResource>, metrics::MetricError>> {
        Ok(current::metrics::HostCounter::declare(self, metric_desc(d))?.map_err(metric_error))
    }

    fn add(
        &mut self,
        r: Resource<CounterResource>,
        values: Vec<String>,
        delta: u64,
    ) -> WResult<Result<(), metrics::MetricError>> {
        Ok(current::metrics::HostCounter::add(self, r, values, delta)?.map_err(metric_error))
    }

    fn drop(&mut self, r: Resource<CounterResource>) -> WResult<()> {
        current::metrics::HostCounter::drop(self, r)
    }
}

impl metrics::HostGauge for StoreData {
    fn declare(
        &mut self,
        d: metrics::MetricDesc,
    ) -> WResult<Result<Resource<GaugeResource>, metrics::MetricError>> {
        Ok(current::metrics::HostGauge::declare(self, metric_desc(d))?.map_err(metric_error))
    }

    fn set(
        &mut self,
        r: Resource<GaugeResource>,
        values: Vec<String>,
        value: f64,
    ) -> WResult<Result<(), metrics::MetricError>> {
        Ok(current::metrics::HostGauge::set(self, r, values, value)?.map_err(metric_error))
    }

    fn add(
        &mut self,
        r: Resource<GaugeResource>,
        values: Vec<String>,
        delta: f64,
    ) -> WResult<Result<(), metrics::MetricError>> {
        Ok(current::metrics::HostGauge::add(self, r, values, delta)?.map_err(metric_error))
    }

    fn drop(&mut self, r: Resource<GaugeResource>) -> WResult<()> {
        current::metrics::HostGauge::drop(self, r)
    }
}

impl metrics::HostHistogram for StoreData {
    fn declare(
        &mut self,
        d: metrics::MetricDesc,
        buckets: Vec<f64>,
    ) -> WResult<Result<Resource<HistogramResource>, metrics::MetricError>> {
        Ok(
            current::metrics::HostHistogram::declare(self, metric_desc(d), buckets)?
                .map_err(metric_error),
        )
    }

    fn observe(
        &mut self,
        r: Resource<HistogramResource>,
        values: Vec<String>,
        value: f64,
    ) -> WResult<Result<(), metrics::MetricError>> {
        Ok(current::metrics::HostHistogram::observe(self, r, values, value)?.map_err(metric_error))
    }

    fn drop(&mut self, r: Resource<HistogramResource>) -> WResult<()> {
        current::metrics::HostHistogram::drop(self, r)
    }
}

fn identity(id: current::k8s::Identity) -> k8s::Identity {
    use current::k8s::Identity as I;
    match id {
        I::Host => k8s::Identity::Host,
        I::Unknown => k8s::Identity::Unknown,
        I::Workload(w) => k8s::Identity::Workload(k8s::Workload {
            pod: k8s::Pod {
                namespace: w.pod.namespace,
                name: w.pod.name,
                uid: w.pod.uid,
                node: w.pod.node,
                owner: w.pod.owner,
            },
            container: w.container.map(|c| k8s::Container {
                name: c.name,
                id: c.id,
                image: c.image,
            }),
        }),
    }
}

impl k8s::Host for StoreData {
    fn by_cgroup_id(&mut self, id: u64) -> WResult<k8s::Identity> {
        current::k8s::Host::by_cgroup_id(self, id).map(identity)
    }

    fn by_pid(&mut self, pid: u32) -> WResult<k8s::Identity> {
        current::k8s::Host::by_pid(self, pid).map(identity)
    }

    fn by_container_id(&mut self, id: String) -> WResult<k8s::Identity> {
        current::k8s::Host::by_container_id(self, id).map(identity)
    }

    fn by_ip(&mut self, ip: k8s::IpAddress) -> WResult<k8s::Identity> {
        let ip = match ip {
            k8s::IpAddress::Ipv4(a) => current::k8s::IpAddress::Ipv4(a),
            k8s::IpAddress::Ipv6(a) => current::k8s::IpAddress::Ipv6(a),
        };
        current::k8s::Host::by_ip(self, ip).map(identity)
    }

    fn pod_labels(&mut self, uid: String) -> WResult<Vec<(String, String)>> {
        current::k8s::Host::pod_labels(self, uid)
    }
}
