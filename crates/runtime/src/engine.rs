//! The engine every plugin shares: compiling (or loading from the cache),
//! choosing the WIT version a component was built against, checking it
//! against that version's world, and instantiating it.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conductor_api::files::{self, FileError};
use conductor_api::wit;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};

use crate::bindings;
use crate::cache;
use crate::compat::v0_1;
use crate::host::PluginHost;
use crate::host::events::EventBatch;
use crate::instance::{
    Fault, FaultKind, Instance, MemoryLimiter, StoreData, classify, deadline_ticks,
};
use crate::stdio;

/// How often the epoch advances; call deadlines are counted in these ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot read component {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read component {path}: {cause}")]
    File {
        path: PathBuf,
        cause: conductor_api::files::FileError,
    },
    #[error(
        "{path} is not a WebAssembly component ({cause}); build plugins with `cargo build --target wasm32-wasip2`"
    )]
    NotAComponent { path: PathBuf, cause: String },
    #[error(
        "component {path} is built against {found}, which this host does not link: it supports {supported}; rebuild the plugin with a conductor-sdk of one of these",
        supported = wit::supported_ranges(),
    )]
    UnsupportedVersion { path: PathBuf, found: String },
    #[error(
        "component {path} imports several versions of {package} ({found}); build it against one (this host supports {supported})",
        package = wit::PACKAGE,
        supported = wit::supported_ranges(),
    )]
    MixedVersions { path: PathBuf, found: String },
    #[error(
        "component {path} does not implement the world `plugin` of {package}@{version} (this host supports {supported}): {cause}",
        package = wit::PACKAGE,
        supported = wit::supported_ranges(),
    )]
    WrongWorld {
        path: PathBuf,
        version: String,
        cause: String,
    },
    #[error(
        "component {path} needs {initial} bytes of linear memory to start, more than its limits.memoryMib of {limit_mib} MiB ({limit} bytes); raise limits.memoryMib to at least {need_mib}",
        limit = (*limit_mib as u64) << 20,
        need_mib = initial.div_ceil(1 << 20),
    )]
    MemoryLimit {
        path: PathBuf,
        initial: u64,
        limit_mib: u32,
    },
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
}

/// The shape of the `event-batch` a component's `on-events` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchShape {
    /// `offsets` and `lengths` as two `u32` lists: 0.2, and 0.1 components
    /// built after the batch changed under 0.1.0 without a bump.
    Lists,
    /// One list of `span` records: 0.1.0 as first published.
    Spans,
}

impl BatchShape {
    fn describe(self) -> &'static str {
        match self {
            Self::Lists => "with `offsets` and `lengths` lists",
            Self::Spans => "with a list of `span` records",
        }
    }
}

/// A supported version and the batch shapes its components may take, in
/// the order they are tried.
struct Contract {
    version: &'static str,
    shapes: &'static [BatchShape],
}

/// Every linked version, newest first: [`wit::SUPPORTED`] (a test checks).
const CONTRACTS: &[Contract] = &[
    Contract {
        version: wit::CURRENT,
        shapes: &[BatchShape::Lists],
    },
    Contract {
        version: v0_1::VERSION,
        shapes: &[BatchShape::Spans, BatchShape::Lists],
    },
];

/// Where a component's exports are, found and type-checked once.
#[derive(Clone, Copy)]
pub(crate) struct Exports {
    pub(crate) init: ComponentExportIndex,
    pub(crate) tick: ComponentExportIndex,
    pub(crate) collect: ComponentExportIndex,
    pub(crate) on_events: ComponentExportIndex,
    pub(crate) shape: BatchShape,
}

/// The engine and everything shared by all plugins.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StoreData>,
    /// Wasmtime's baseline compiler, for a quick first start of large
    /// components (see [`RuntimeOptions::baseline_above`]).
    baseline: Option<Baseline>,
    cache: Arc<cache::CompileCache>,
    ticker_stop: Arc<AtomicBool>,
}

/// How a [`Runtime`] compiles.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Where compiled components are kept; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Components of at least this many bytes whose optimised code is not
    /// cached start on code from wasmtime's baseline compiler (Winch:
    /// about 4 s for an 18 MB Python component where Cranelift takes
    /// 24 s), while Cranelift compiles them into the cache on a
    /// background thread; [`Runtime::optimised`] then hands the plugin the
    /// optimised code. `None`: always compile with Cranelift first.
    pub baseline_above: Option<u64>,
}

/// Which compiler made a [`Prepared`]'s code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Cranelift, optimising for speed: what plugins run on.
    Optimised,
    /// Winch, wasmtime's baseline compiler: fast to compile, slower to
    /// run; used only until the optimised code is ready.
    Baseline,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Optimised => "optimised",
            Self::Baseline => "baseline",
        }
    }
}

/// A component's bytes and digest, for the background compiler.
type CompileJob = (Arc<[u8]>, String);

/// The baseline engine and the background compiles into the cache.
struct Baseline {
    engine: Engine,
    linker: Linker<StoreData>,
    above: u64,
    /// Optimised compiles queued or running, by digest (one per component).
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// The background compiler's queue, started with the first job.
    jobs: Mutex<Option<std::sync::mpsc::Sender<CompileJob>>>,
}

/// A compiled component, checked against the world, ready to instantiate
/// any number of times (a restart instantiates again without compiling).
#[derive(Clone)]
pub struct Prepared {
    pre: InstancePre<StoreData>,
    /// The engine `pre` was compiled for (its instances' stores).
    engine: Engine,
    /// Which compiler made the code.
    pub tier: Tier,
    exports: Exports,
    /// The `conductor:plugin` version the component imports (the current
    /// one if it imports none of the package).
    pub wit_version: String,
    /// How its `on-events` takes a batch.
    pub batch_shape: BatchShape,
    /// sha256 of the component bytes.
    pub digest: String,
    /// True if the compiled code came from the cache.
    pub from_cache: bool,
    /// Linear memory the component's core modules start with, together
    /// (what an instance needs before its first call).
    pub initial_memory_bytes: u64,
    /// The event-record layouts the SDK's `record!` wrote into the
    /// component, to check against the BPF object's BTF.
    pub records: Vec<conductor_kernel::layout::RecordLayout>,
    path: PathBuf,
}

impl Prepared {
    /// Built against an older WIT than the current one (linked through
    /// the compatibility layer).
    fn wit_version_is_older(&self) -> bool {
        wit::range(&self.wit_version) != wit::range(wit::CURRENT)
    }

    /// Refuse a memory limit below what the component needs to start: it
    /// could never run, and would restart for ever.
    pub fn check_memory_limit(&self, limit_mib: u32) -> Result<(), RuntimeError> {
        if self.initial_memory_bytes > (u64::from(limit_mib) << 20) {
            return Err(RuntimeError::MemoryLimit {
                path: self.path.clone(),
                initial: self.initial_memory_bytes,
                limit_mib,
            });
        }
        Ok(())
    }
}

/// The initial sizes of the memories the core modules of a component
/// define, added up (imported memories are another module's).
fn initial_memory(bytes: &[u8]) -> u64 {
    use wasmtime::wasmparser::{Parser, Payload};
    let mut total: u64 = 0;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(Payload::MemorySection(memories)) = payload else {
            continue;
        };
        for m in memories.into_iter().flatten() {
            let page = 1u64 << m.page_size_log2.unwrap_or(16);
            total = total.saturating_add(m.initial.saturating_mul(page));
        }
    }
    total
}

/// The `conductor.records` custom sections of the component's core
/// modules (what the SDK's `record!` wrote), decoded; `path` names the
/// component in errors.
pub fn record_layouts(
    bytes: &[u8],
    path: &Path,
) -> Result<Vec<conductor_kernel::layout::RecordLayout>, RuntimeError> {
    use conductor_kernel::layout::{SECTION, decode_section};
    use wasmtime::wasmparser::{Parser, Payload};
    let mut out = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(Payload::CustomSection(section)) = payload else {
            continue;
        };
        if section.name() == SECTION {
            let layouts =
                decode_section(section.data()).map_err(|e| RuntimeError::NotAComponent {
                    path: path.to_owned(),
                    cause: e.to_string(),
                })?;
            out.extend(layouts);
        }
    }
    Ok(out)
}

impl Runtime {
    /// `cache_dir`: where compiled components are kept; `None` disables the
    /// cache. Compiles with Cranelift only (see [`Runtime::with_options`]).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Arc<Self>, RuntimeError> {
        Self::with_options(RuntimeOptions {
            cache_dir,
            baseline_above: None,
        })
    }

    pub fn with_options(options: RuntimeOptions) -> Result<Arc<Self>, RuntimeError> {
        let engine = new_engine(false)?;
        let linker = new_linker(&engine)?;
        let baseline = match options.baseline_above {
            None => None,
            // Winch exists for x86_64 and aarch64 only: elsewhere every
            // component is compiled by Cranelift first, as without it.
            Some(above) => match new_engine(true) {
                Ok(engine) => Some(Baseline {
                    linker: new_linker(&engine)?,
                    engine,
                    above,
                    in_flight: Arc::default(),
                    jobs: Mutex::new(None),
                }),
                Err(e) => {
                    tracing::info!(
                        "no baseline compiler on this machine, large components compile with Cranelift first: {e}"
                    );
                    None
                }
            },
        };

        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engines: Vec<Engine> = std::iter::once(engine.clone())
                .chain(baseline.as_ref().map(|b| b.engine.clone()))
                .collect();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("epoch-ticker".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        for engine in &engines {
                            engine.increment_epoch();
                        }
                    }
                })
                .map_err(|e| RuntimeError::Engine(format!("cannot start epoch ticker: {e}")))?;
        }

        Ok(Arc::new(Self {
            cache: Arc::new(cache::CompileCache::new(options.cache_dir)),
            engine,
            linker,
            baseline,
            ticker_stop,
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Read, compile (or fetch from cache) and check a component file of
    /// at most [`files::DEFAULT_MAX_COMPONENT_BYTES`].
    pub fn prepare(&self, path: &Path) -> Result<Prepared, RuntimeError> {
        self.prepare_capped(path, files::DEFAULT_MAX_COMPONENT_BYTES)
    }

    /// [`Runtime::prepare`] of a component file of at most `max_bytes`
    /// (a regular file; its header is checked before the rest is read).
    pub fn prepare_capped(&self, path: &Path, max_bytes: u64) -> Result<Prepared, RuntimeError> {
        self.prepare_limited(path, max_bytes, None)
    }

    /// [`Runtime::prepare_capped`] of a component that must start within
    /// `memory_mib` MiB of linear memory: a component that needs more is
    /// refused before it is compiled (a first compile of a JavaScript or
    /// Python component takes seconds), naming both numbers.
    pub fn prepare_limited(
        &self,
        path: &Path,
        max_bytes: u64,
        memory_mib: Option<u32>,
    ) -> Result<Prepared, RuntimeError> {
        let bytes = files::read_checked(path, max_bytes, "--max-component-bytes", 4, |h| {
            h == b"\0asm"
        })
        .map_err(|e| match e {
            FileError::Io(source) => RuntimeError::Read {
                path: path.to_owned(),
                source,
            },
            FileError::BadHeader => RuntimeError::NotAComponent {
                path: path.to_owned(),
                cause: "it has no wasm header".to_owned(),
            },
            cause => RuntimeError::File {
                path: path.to_owned(),
                cause,
            },
        })?;
        if !wasmtime::wasmparser::Parser::is_component(&bytes) {
            let cause = if wasmtime::wasmparser::Parser::is_core_wasm(&bytes) {
                "it is a core wasm module".to_owned()
            } else {
                "it has no wasm header".to_owned()
            };
            return Err(RuntimeError::NotAComponent {
                path: path.to_owned(),
                cause,
            });
        }
        let started = Instant::now();
        let initial_memory_bytes = initial_memory(&bytes);
        if let Some(limit_mib) = memory_mib
            && initial_memory_bytes > (u64::from(limit_mib) << 20)
        {
            return Err(RuntimeError::MemoryLimit {
                path: path.to_owned(),
                initial: initial_memory_bytes,
                limit_mib,
            });
        }
        let records = record_layouts(&bytes, path)?;
        let digest = cache::digest(&bytes);
        let not_a_component = |e: wasmtime::Error| RuntimeError::NotAComponent {
            path: path.to_owned(),
            cause: format!("{e:#}"),
        };
        let (component, tier, from_cache) = match self.cache.lookup(&self.engine, &digest) {
            Some(c) => (c, Tier::Optimised, true),
            None => match self.compile_baseline(&bytes, &digest, path) {
                Some(c) => (c, Tier::Baseline, false),
                None => (
                    self.cache
                        .compile(&self.engine, &bytes, &digest)
                        .map_err(not_a_component)?,
                    Tier::Optimised,
                    false,
                ),
            },
        };
        let prepared = self.finish(
            component,
            tier,
            Unchecked {
                digest,
                from_cache,
                initial_memory_bytes,
                records,
                path: path.to_owned(),
            },
        )?;
        tracing::debug!(
            component = %path.display(),
            digest = %prepared.digest,
            from_cache,
            tier = %tier.as_str(),
            wit = %prepared.wit_version,
            batch = ?prepared.batch_shape,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "component ready"
        );
        if prepared.wit_version_is_older() {
            tracing::info!(
                component = %path.display(),
                "component built against {}@{}, linked through the compatibility layer; rebuild it with the current conductor-sdk ({}@{})",
                wit::PACKAGE,
                prepared.wit_version,
                wit::PACKAGE,
                wit::CURRENT,
            );
        }
        Ok(prepared)
    }

    /// The baseline compile of a large component whose optimised code is
    /// not cached, with the optimised compile queued behind it; `None` if
    /// the component is small, tiering is off, or Winch refused it (then
    /// Cranelift compiles it as usual).
    fn compile_baseline(&self, bytes: &[u8], digest: &str, path: &Path) -> Option<Component> {
        let baseline = self.baseline.as_ref()?;
        if (bytes.len() as u64) < baseline.above {
            return None;
        }
        let started = Instant::now();
        let component = match Component::new(&baseline.engine, bytes) {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(component = %path.display(), "the baseline compiler refused the component, compiling it optimised first: {e:#}");
                return None;
            }
        };
        tracing::info!(
            component = %path.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compiled by the baseline compiler; the optimised compile runs in the background"
        );
        self.queue_optimised(baseline, bytes, digest);
        Some(component)
    }

    /// Queue the optimised compile of `bytes` on the background thread
    /// (started on first use), once per component.
    fn queue_optimised(&self, baseline: &Baseline, bytes: &[u8], digest: &str) {
        {
            let mut in_flight = baseline.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if !in_flight.insert(digest.to_owned()) {
                return;
            }
        }
        let mut jobs = baseline.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if jobs.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<CompileJob>();
            let (engine, cache, in_flight) = (
                self.engine.clone(),
                self.cache.clone(),
                baseline.in_flight.clone(),
            );
            // One compile at a time: Cranelift already compiles a
            // component's functions in parallel, and each compile of a
            // large component holds hundreds of MiB while it runs. The
            // thread ends when the runtime (the queue's sender) goes.
            let spawned = std::thread::Builder::new()
                .name("optimising-compiler".into())
                .spawn(move || {
                    for (bytes, digest) in rx {
                        let started = Instant::now();
                        match cache.compile(&engine, &bytes, &digest) {
                            Ok(_) => tracing::info!(
                                %digest,
                                elapsed_ms = started.elapsed().as_millis() as u64,
                                "optimised code ready"
                            ),
                            Err(e) => tracing::warn!(%digest, "the optimised compile failed; plugins of this component stay on baseline code: {e:#}"),
                        }
                        in_flight
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&digest);
                    }
                });
            match spawned {
                Ok(_) => *jobs = Some(tx),
                Err(e) => {
                    tracing::warn!(
                        "cannot start the background compiler; plugins stay on baseline code until the host restarts: {e}"
                    );
                    return;
                }
            }
        }
        if let Some(tx) = jobs.as_ref() {
            let _ = tx.send((Arc::from(bytes), digest.to_owned()));
        }
    }

    /// The optimised version of a [`Tier::Baseline`] `prepared` once the
    /// background compile has put it in the cache; `None` before that (or
    /// if `prepared` is optimised already).
    pub fn optimised(&self, prepared: &Prepared) -> Option<Result<Prepared, RuntimeError>> {
        if prepared.tier != Tier::Baseline {
            return None;
        }
        let component = self.cache.lookup(&self.engine, &prepared.digest)?;
        Some(self.finish(
            component,
            Tier::Optimised,
            Unchecked {
                digest: prepared.digest.clone(),
                from_cache: true,
                initial_memory_bytes: prepared.initial_memory_bytes,
                records: prepared.records.clone(),
                path: prepared.path.clone(),
            },
        ))
    }

    /// Check `component` against the world of the version it imports and
    /// link it with the linker of `tier`'s engine.
    fn finish(
        &self,
        component: Component,
        tier: Tier,
        facts: Unchecked,
    ) -> Result<Prepared, RuntimeError> {
        let (engine, linker) = match (tier, &self.baseline) {
            (Tier::Baseline, Some(b)) => (&b.engine, &b.linker),
            _ => (&self.engine, &self.linker),
        };
        let path = &facts.path;
        let (contract, wit_version) = contract_of(engine, &component, path)?;
        let wrong_world = |cause: wasmtime::Error| RuntimeError::WrongWorld {
            path: path.to_owned(),
            version: wit_version.clone(),
            cause: format!("{cause:#}"),
        };
        let pre = linker.instantiate_pre(&component).map_err(wrong_world)?;
        let exports = check_exports(&pre, contract).map_err(wrong_world)?;
        Ok(Prepared {
            pre,
            engine: engine.clone(),
            tier,
            exports,
            wit_version,
            batch_shape: exports.shape,
            digest: facts.digest,
            from_cache: facts.from_cache,
            initial_memory_bytes: facts.initial_memory_bytes,
            records: facts.records,
            path: facts.path,
        })
    }

    /// A new sandboxed instance of `prepared` for the plugin `host`. The
    /// component's start-up code runs here, under the same limits as calls.
    pub fn instantiate(
        &self,
        prepared: &Prepared,
        host: Arc<PluginHost>,
        memory_limit: usize,
        timeout: Duration,
    ) -> Result<Instance, Fault> {
        let wasi = stdio::wasi_ctx(host.name(), host.log_budget(), host.read_only_dirs()).map_err(
            |message| Fault {
                kind: FaultKind::Error,
                message,
            },
        )?;
        let mut store = Store::new(
            &prepared.engine,
            StoreData {
                wasi,
                table: ResourceTable::new(),
                http: wasmtime_wasi_http::WasiHttpCtx::new(),
                http_hooks: crate::host::http::DenyOutgoing,
                limiter: MemoryLimiter::new(memory_limit),
                host,
            },
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(timeout));
        let exports = prepared.exports;
        let instantiated = prepared.pre.instantiate(&mut store).and_then(|instance| {
            type Call = wasmtime::component::TypedFunc<(), (Result<(), String>,)>;
            let call = |store: &mut Store<StoreData>, index| -> wasmtime::Result<Call> {
                instance.get_typed_func(store, index)
            };
            let init = call(&mut store, exports.init)?;
            let tick = call(&mut store, exports.tick)?;
            let collect = call(&mut store, exports.collect)?;
            // Type-checked against `exports.shape` in `prepare`.
            let on_events = instance
                .get_func(&mut store, exports.on_events)
                .ok_or_else(|| wasmtime::format_err!("the component exports no `on-events`"))?;
            Ok((init, tick, collect, on_events))
        });
        match instantiated {
            Ok((init, tick, collect, on_events)) => Ok(Instance {
                store,
                init,
                tick,
                collect,
                on_events,
                shape: exports.shape,
            }),
            Err(e) => Err(classify(&store, e)),
        }
    }
}

/// What [`Runtime::finish`] carries over to a [`Prepared`].
struct Unchecked {
    digest: String,
    from_cache: bool,
    initial_memory_bytes: u64,
    records: Vec<conductor_kernel::layout::RecordLayout>,
    path: PathBuf,
}

/// The engine: Cranelift optimising for speed, or Winch (`baseline`).
fn new_engine(baseline: bool) -> Result<Engine, RuntimeError> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if baseline {
        config.strategy(wasmtime::Strategy::Winch);
    }
    Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
}

/// Every interface a plugin may import, for `engine`'s components.
fn new_linker(engine: &Engine) -> Result<Linker<StoreData>, RuntimeError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
        .map_err(|e| RuntimeError::Engine(e.to_string()))?;
    // What JavaScript components import by default; every outgoing
    // request is denied (host/http.rs, docs/src/languages.md).
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)
        .map_err(|e| RuntimeError::Engine(e.to_string()))?;
    // Every supported version side by side: their names differ in the
    // version, and each component links against the one it imports.
    bindings::Plugin::add_to_linker::<_, wasmtime::component::HasSelf<StoreData>>(
        &mut linker,
        |s| s,
    )
    .map_err(|e| RuntimeError::Engine(e.to_string()))?;
    v0_1::add_to_linker(&mut linker).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
    Ok(linker)
}

/// The contract `component` was built against, by the version in its
/// import names, and that version as written.
fn contract_of(
    engine: &Engine,
    component: &Component,
    path: &Path,
) -> Result<(&'static Contract, String), RuntimeError> {
    let versions: BTreeSet<String> = component
        .component_type()
        .imports(engine)
        .filter_map(|(name, _)| wit::version_in_name(name).map(str::to_owned))
        .collect();
    let ranges: BTreeSet<String> = versions.iter().map(|v| wit::range(v)).collect();
    if ranges.len() > 1 {
        return Err(RuntimeError::MixedVersions {
            path: path.to_owned(),
            found: versions
                .iter()
                .map(|v| format!("@{v}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    // A component importing nothing of the package is checked against the
    // current world (its exports say whether it is a plugin at all).
    let Some(version) = versions.into_iter().next_back() else {
        return Ok((&CONTRACTS[0], wit::CURRENT.to_owned()));
    };
    let range = wit::range(&version);
    match CONTRACTS.iter().find(|c| wit::range(c.version) == range) {
        Some(contract) if !version.is_empty() => Ok((contract, version)),
        _ => Err(RuntimeError::UnsupportedVersion {
            path: path.to_owned(),
            found: if version.is_empty() {
                format!("{} without a version", wit::PACKAGE)
            } else {
                format!("{}@{version}", wit::PACKAGE)
            },
        }),
    }
}

/// Find the world's exports in `pre` and type-check them against
/// `contract`, trying its batch shapes in order.
fn check_exports(pre: &InstancePre<StoreData>, contract: &Contract) -> wasmtime::Result<Exports> {
    let component = pre.component();
    let ty = pre.instance_type();
    let func = |name: &str| match component.get_export(None, name) {
        Some((ComponentItem::ComponentFunc(f), index)) => Ok((f, index)),
        Some(_) => Err(wasmtime::format_err!(
            "its export `{name}` is not a function"
        )),
        None => Err(wasmtime::format_err!("it exports no function `{name}`")),
    };
    let call = |name: &str| {
        let (f, index) = func(name)?;
        f.typecheck::<(), (Result<(), String>,)>(&ty)
            .map_err(|e| wasmtime::format_err!("its export `{name}` has the wrong type: {e:#}"))?;
        Ok::<_, wasmtime::Error>(index)
    };
    let (init, tick, collect) = (call("init")?, call("tick")?, call("collect")?);
    let (on_events_ty, on_events) = func("on-events")?;
    let mut mismatches = Vec::new();
    for &shape in contract.shapes {
        let checked = match shape {
            BatchShape::Lists => {
                on_events_ty.typecheck::<(EventBatch<'static>,), (Result<(), String>,)>(&ty)
            }
            BatchShape::Spans => {
                on_events_ty.typecheck::<(v0_1::SpansBatch<'static>,), (Result<(), String>,)>(&ty)
            }
        };
        match checked {
            Ok(()) => {
                return Ok(Exports {
                    init,
                    tick,
                    collect,
                    on_events,
                    shape,
                });
            }
            Err(e) => mismatches.push(format!("a batch {}: {e:#}", shape.describe())),
        }
    }
    Err(wasmtime::format_err!(
        "its export `on-events` takes none of the batches of {}@{}: not {}",
        wit::PACKAGE,
        wit::range(contract.version),
        mismatches.join("; nor ")
    ))
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn wit_dir(version: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../sdk/wit/v{version}"))
    }

    /// A component of the world `plugin` in the WIT package at `dir`: a
    /// dummy core module (every export traps) encoded as a component, so
    /// exactly what a toolchain would import and export for that WIT.
    fn component_of(dir: &Path, out: &Path) -> PathBuf {
        let mut resolve = wit_parser::Resolve::default();
        let (pkg, _) = resolve.push_dir(dir).unwrap();
        let world = resolve.select_world(&[pkg], Some("plugin")).unwrap();
        let mut module =
            wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )
        .unwrap();
        let bytes = wit_component::ComponentEncoder::default()
            .module(&module)
            .unwrap()
            .validate(true)
            .encode()
            .unwrap();
        let path = out.join(format!(
            "{}.wasm",
            dir.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// `from`'s WIT files with every `@{old}` replaced, in a new folder.
    fn rewritten(from: &Path, out: &Path, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for file in std::fs::read_dir(from).unwrap() {
            let path = file.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(dir.join(path.file_name().unwrap()), edit(text)).unwrap();
        }
        dir
    }

    #[test]
    fn contracts_are_the_supported_versions() {
        let versions: Vec<&str> = CONTRACTS.iter().map(|c| c.version).collect();
        assert_eq!(versions, wit::SUPPORTED);
    }

    #[test]
    fn each_supported_version_links_with_its_batch_shape() {
        let out = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(None).unwrap();
        let main_0_1 =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/testing/legacy-main-0_1/wit");
        for (dir, version, shape) in [
            (wit_dir(wit::CURRENT), wit::CURRENT, BatchShape::Lists),
            (wit_dir("0.1.0"), "0.1.0", BatchShape::Spans),
            // 0.1.0 as main built it before 0.2.0: the two-list batch.
            (main_0_1, "0.1.0", BatchShape::Lists),
        ] {
            let path = component_of(&dir, out.path());
            let prepared = runtime
                .prepare(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            assert_eq!(prepared.wit_version, version, "{}", dir.display());
            assert_eq!(prepared.batch_shape, shape, "{}", dir.display());
        }
    }

    #[test]
    fn a_component_in_use_is_compiled_once_and_shared() {
        let out = tempfile::tempdir().unwrap();
        let path = component_of(&wit_dir(wit::CURRENT), out.path());
        // No cache directory: only the in-memory cache can avoid a compile.
        let runtime = Runtime::new(None).unwrap();
        let first = runtime.prepare(&path).unwrap();
        let second = runtime.prepare(&path).unwrap();
        assert!(!first.from_cache);
        assert!(second.from_cache, "the second load compiled again");
        assert_eq!(first.digest, second.digest);
    }

    #[test]
    fn a_patch_release_of_a_supported_version_links() {
        let out = tempfile::tempdir().unwrap();
        let (major_minor, _) = wit::CURRENT.rsplit_once('.').unwrap();
        let patch = format!("{major_minor}.7");
        let dir = rewritten(&wit_dir(wit::CURRENT), out.path(), "patch", |t| {
            t.replace(&format!("@{}", wit::CURRENT), &format!("@{patch}"))
        });
        let prepared = Runtime::new(None)
            .unwrap()
            .prepare(&component_of(&dir, out.path()))
            .unwrap();
        assert_eq!(prepared.wit_version, patch);
    }

    #[test]
    fn an_unsupported_version_is_refused_naming_the_supported_ranges() {
        let out = tempfile::tempdir().unwrap();
        let dir = rewritten(&wit_dir(wit::CURRENT), out.path(), "v0.99.0", |t| {
            t.replace(&format!("@{}", wit::CURRENT), "@0.99.0")
        });
        let err = Runtime::new(None)
            .unwrap()
            .prepare(&component_of(&dir, out.path()))
            .err()
            .expect("a 0.99 component must be refused");
        assert!(
            matches!(err, RuntimeError::UnsupportedVersion { .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("conductor:plugin@0.99.0"), "{msg}");
        assert!(msg.contains(&wit::supported_ranges()), "{msg}");
        assert!(msg.contains("conductor:plugin@0.1.x"), "{msg}");
    }

    #[test]
    fn a_0_1_batch_of_neither_shape_is_refused_naming_both() {
        let out = tempfile::tempdir().unwrap();
        let dir = rewritten(&wit_dir("0.1.0"), out.path(), "odd", |t| {
            t.replace("spans: list<span>,", "records: list<list<u8>>,")
        });
        let err = Runtime::new(None)
            .unwrap()
            .prepare(&component_of(&dir, out.path()))
            .err()
            .expect("an unknown batch must be refused");
        let msg = err.to_string();
        assert!(matches!(err, RuntimeError::WrongWorld { .. }), "{msg}");
        assert!(msg.contains("conductor:plugin@0.1.0"), "{msg}");
        assert!(msg.contains("`span` records"), "{msg}");
        assert!(msg.contains("`offsets` and `lengths`"), "{msg}");
    }

    #[test]
    fn a_large_component_starts_on_baseline_code_and_its_optimised_code_follows() {
        let out = tempfile::tempdir().unwrap();
        let path = component_of(&wit_dir(wit::CURRENT), out.path());
        let options = RuntimeOptions {
            cache_dir: Some(out.path().join("cache")),
            // Every component counts as large.
            baseline_above: Some(0),
        };
        let runtime = Runtime::with_options(options.clone()).unwrap();
        let first = runtime.prepare(&path).unwrap();
        assert_eq!(first.tier, Tier::Baseline);
        assert!(!first.from_cache);

        // The background compile puts the optimised code in the cache.
        let deadline = Instant::now() + Duration::from_secs(120);
        let optimised = loop {
            if let Some(ready) = runtime.optimised(&first) {
                break ready.unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "no optimised code after two minutes"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(optimised.tier, Tier::Optimised);
        assert_eq!(optimised.digest, first.digest);
        assert_eq!(optimised.wit_version, first.wit_version);
        assert!(runtime.optimised(&optimised).is_none());

        // Both run: the dummy's `init` traps, in code of either compiler.
        for prepared in [&first, &optimised] {
            let mut instance = runtime
                .instantiate(
                    prepared,
                    Arc::new(crate::host::test_host("tiers")),
                    16 << 20,
                    Duration::from_secs(5),
                )
                .unwrap_or_else(|f| panic!("{:?}: {f}", prepared.tier));
            let fault = instance
                .call(crate::Call::Init, Duration::from_secs(5))
                .expect_err("the dummy's init traps");
            assert!(
                matches!(fault.kind, crate::FaultKind::Trap),
                "{:?}: {fault}",
                prepared.tier
            );
        }

        // A later start (a new runtime over the same cache) starts on the
        // optimised code straight away.
        let again = Runtime::with_options(options)
            .unwrap()
            .prepare(&path)
            .unwrap();
        assert_eq!(again.tier, Tier::Optimised);
        assert!(again.from_cache);
    }
}
