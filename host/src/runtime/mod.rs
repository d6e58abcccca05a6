//! The wasm side of the host: one wasmtime [`Engine`], a compile cache, and
//! instances of plugin components with their sandbox limits.
//!
//! Every plugin gets its own [`Store`] (own memory, own resource table) with
//! a memory cap, a wall-clock bound per call (epoch interruption driven by a
//! ticker thread) and a WASI context that grants no files, sockets,
//! environment or arguments; stdout and stderr go to the host's log.

mod cache;
mod host;
mod stdio;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use host::{GrantedMap, PluginHost};

/// Generated bindings for `wit/plugin.wit`.
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit",
        with: {
            "conductor:plugin/maps.bpf-map": super::host::MapResource,
            "conductor:plugin/metrics.counter": super::host::CounterResource,
            "conductor:plugin/metrics.gauge": super::host::GaugeResource,
            "conductor:plugin/metrics.histogram": super::host::HistogramResource,
        },
        imports: { default: trappable },
    });
}

pub use bindings::conductor::plugin::events::Span;

/// The WIT `event-batch`, borrowing its lists: they are lowered into the
/// plugin's memory straight from where the host holds them (for ring
/// buffers, the kernel's ring), which the generated, owning `EventBatch`
/// cannot do without an extra copy.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
pub struct EventBatch<'a> {
    pub source: &'a str,
    pub data: &'a [u8],
    pub spans: &'a [Span],
    pub lost: u64,
}

type OnEvents<'a> = wasmtime::component::TypedFunc<(EventBatch<'a>,), (Result<(), String>,)>;

/// The WIT package version this host implements; components built against
/// any semver-compatible version (0.1.x) link.
pub const WIT_PACKAGE: &str = "conductor:plugin@0.1.0";

/// How often the epoch advances; call deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot read component {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a WebAssembly component ({cause}); build plugins with `cargo build --target wasm32-wasip2`"
    )]
    NotAComponent { path: PathBuf, cause: String },
    #[error(
        "component {path} does not implement the world `plugin` of {WIT_PACKAGE} (this host supports conductor:plugin@0.1.x): {cause}"
    )]
    WrongWorld { path: PathBuf, cause: String },
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
}

/// The engine and everything shared by all plugins.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StoreData>,
    cache: cache::CompileCache,
    ticker_stop: Arc<AtomicBool>,
}

/// A compiled component, checked against the world, ready to instantiate
/// any number of times (a restart instantiates again without compiling).
#[derive(Clone)]
pub struct Prepared {
    pre: bindings::PluginPre<StoreData>,
    /// sha256 of the component bytes.
    pub digest: String,
    /// True if the compiled code came from the cache.
    pub from_cache: bool,
}

impl Runtime {
    /// `cache_dir`: where compiled components are kept; `None` disables the cache.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Arc<Self>, RuntimeError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(e.to_string()))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        bindings::Plugin::add_to_linker::<_, wasmtime::component::HasSelf<StoreData>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| RuntimeError::Engine(e.to_string()))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("epoch-ticker".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| RuntimeError::Engine(format!("cannot start epoch ticker: {e}")))?;
        }

        Ok(Arc::new(Self {
            cache: cache::CompileCache::new(cache_dir),
            engine,
            linker,
            ticker_stop,
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Read, compile (or fetch from cache) and check a component file.
    pub fn prepare(&self, path: &Path) -> Result<Prepared, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::Read {
            path: path.to_owned(),
            source,
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
        let (component, digest, from_cache) =
            self.cache
                .load(&self.engine, &bytes)
                .map_err(|e| RuntimeError::NotAComponent {
                    path: path.to_owned(),
                    cause: format!("{e:#}"),
                })?;
        tracing::debug!(
            component = %path.display(),
            %digest,
            from_cache,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "component ready"
        );
        let pre = self
            .instantiate_pre(&component)
            .map_err(|e| RuntimeError::WrongWorld {
                path: path.to_owned(),
                cause: format!("{e:#}"),
            })?;
        Ok(Prepared {
            pre,
            digest,
            from_cache,
        })
    }

    fn instantiate_pre(
        &self,
        component: &Component,
    ) -> wasmtime::Result<bindings::PluginPre<StoreData>> {
        let pre = self.linker.instantiate_pre(component)?;
        bindings::PluginPre::new(pre)
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
        let wasi = stdio::wasi_ctx(host.name());
        let mut store = Store::new(
            &self.engine,
            StoreData {
                wasi,
                table: ResourceTable::new(),
                limiter: MemoryLimiter::new(memory_limit),
                host,
            },
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(timeout));
        let instantiated = prepared
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .and_then(|instance| {
                let plugin = bindings::Plugin::new(&mut store, &instance)?;
                // `Plugin::new` checked that the export exists; check its
                // type against the borrowing `EventBatch` once, here.
                let on_events = instance
                    .get_func(&mut store, "on-events")
                    .ok_or_else(|| wasmtime::format_err!("the component exports no `on-events`"))?;
                on_events.typed::<(EventBatch<'static>,), (Result<(), String>,)>(&store)?;
                Ok((plugin, on_events))
            });
        match instantiated {
            Ok((plugin, on_events)) => Ok(Instance {
                store,
                plugin,
                on_events,
            }),
            Err(e) => Err(classify(&store, e)),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Per-store state: WASI, the resource table, limits and the plugin's grants.
pub struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    host: Arc<PluginHost>,
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory and remembers whether the cap was what stopped a plugin.
struct MemoryLimiter {
    limit: usize,
    current: usize,
    hit: bool,
}

impl MemoryLimiter {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            current: 0,
            hit: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Components may have several memories; account the growth, not the size.
        let total = self.current - current.min(self.current) + desired;
        if total > self.limit {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "plugin exceeded its memory limit of {} MiB (wanted {} bytes)",
                self.limit >> 20,
                total
            ));
        }
        self.current = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Why a call into a plugin failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The guest trapped (panic, unreachable, out-of-bounds access, ...).
    Trap,
    /// The call ran past `limits.callTimeoutMs`.
    Timeout,
    /// The guest tried to grow memory past `limits.memoryMib`.
    Memory,
    /// The guest returned an error.
    Error,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::Timeout => "timeout",
            Self::Memory => "memory",
            Self::Error => "error",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct Fault {
    pub kind: FaultKind,
    pub message: String,
}

/// Which export to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Init,
    Tick,
    Collect,
}

impl Call {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::Tick => "tick",
            Self::Collect => "collect",
        }
    }
}

/// A running plugin instance.
pub struct Instance {
    store: Store<StoreData>,
    plugin: bindings::Plugin,
    /// The `on-events` export, whose type `instantiate` checked.
    on_events: wasmtime::component::Func,
}

impl Instance {
    /// Bytes of linear memory the instance holds.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limiter.current
    }

    pub fn call(&mut self, call: Call, timeout: Duration) -> Result<(), Fault> {
        self.arm(timeout);
        let result = match call {
            Call::Init => self.plugin.call_init(&mut self.store),
            Call::Tick => self.plugin.call_tick(&mut self.store),
            Call::Collect => self.plugin.call_collect(&mut self.store),
        };
        self.finish(result)
    }

    pub fn on_events(&mut self, batch: EventBatch<'_>, timeout: Duration) -> Result<(), Fault> {
        self.arm(timeout);
        // SAFETY: `instantiate` type-checked this function against
        // `OnEvents` (the lifetime does not change the component type).
        let func: OnEvents<'_> =
            unsafe { wasmtime::component::TypedFunc::new_unchecked(self.on_events) };
        let result = func.call(&mut self.store, (batch,)).map(|(r,)| r);
        self.finish(result)
    }

    fn arm(&mut self, timeout: Duration) {
        self.store.set_epoch_deadline(deadline_ticks(timeout));
    }

    fn finish(&mut self, result: wasmtime::Result<Result<(), String>>) -> Result<(), Fault> {
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(Fault {
                kind: FaultKind::Error,
                message,
            }),
            Err(e) => Err(classify(&self.store, e)),
        }
    }
}

fn deadline_ticks(timeout: Duration) -> u64 {
    // One extra tick: the ticker may advance right after the deadline is set.
    timeout.as_micros().div_ceil(EPOCH_TICK.as_micros()) as u64 + 1
}

/// Why the guest stopped: the memory cap, the epoch deadline, or a trap.
fn classify(store: &Store<StoreData>, e: wasmtime::Error) -> Fault {
    let kind = if store.data().limiter.hit {
        FaultKind::Memory
    } else if matches!(
        e.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    ) {
        FaultKind::Timeout
    } else {
        FaultKind::Trap
    };
    Fault {
        kind,
        message: format!("{e:#}"),
    }
}
